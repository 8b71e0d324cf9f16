"""Qwen3-Embedding as a chromadb embedding function: documents as they are, queries with the instruction.

Needs the optional ``chromadb`` dependency: ``pip install "qwen3-rag[chroma]"``.

Setup:
    .. code-block:: python

        import chromadb
        from qwen3_rag.chroma import Qwen3EmbeddingFunction

        client = chromadb.PersistentClient(path="./db")
        collection = client.get_or_create_collection(
            "docs", embedding_function=Qwen3EmbeddingFunction("Qwen/Qwen3-Embedding-0.6B"),
            configuration={"hnsw": {"space": "cosine"}},
        )
        collection.add(ids=["a", "b"], documents=["Beijing is the capital of China.", "Gravity pulls."])
        collection.query(query_texts=["What is the capital of China?"], n_results=1)

``collection.add`` embeds through ``__call__`` (no instruction, as the model card says for documents);
``collection.query(query_texts=...)`` goes through chromadb's ``embed_query`` hook, which adds
``Instruct: {instruction}\\nQuery:``. The model loads on first use, so opening a collection is cheap. The
function works the same with a ``chromadb.HttpClient`` (a Chroma server, Chroma Cloud): its configuration is
stored with the collection on the server and ``get_collection`` rebuilds it in any process that imported this
module.

:func:`open_chroma_client` is the one place a database location becomes a client, for the ``qwen3-rag`` command
line and the Ray corpus job alike: a folder (an embedded ``PersistentClient``) or a server URL
(``http://HOST:PORT``, ``https://HOST[:PORT]``: a ``HttpClient``, configured by chromadb's own environment
variables -- see its docstring).
"""

from __future__ import annotations

import ipaddress
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

try:
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
    from chromadb.utils.embedding_functions import register_embedding_function
except ImportError as exc:  # pragma: no cover - exercised by a test that hides chromadb
    msg = 'qwen3_rag.chroma needs chromadb, an optional dependency: pip install "qwen3-rag[chroma]"'
    raise ImportError(msg) from exc

from qwen3_rag._validation import check_dimensions, check_instruction, check_positive
from qwen3_rag.embedder import Qwen3Embedder
from qwen3_rag.prompts import DEFAULT_EMBEDDING_MODEL, DEFAULT_INSTRUCTION

__all__ = [
    "CHROMA_HAS_QUERY_HOOK",
    "ChromaOpenError",
    "Qwen3EmbeddingFunction",
    "check_collection_name",
    "is_server_url",
    "open_chroma_client",
]

CHROMA_HAS_QUERY_HOOK: bool = hasattr(EmbeddingFunction, "embed_query")
"""Whether the installed chromadb embeds ``query_texts`` through ``embed_query`` (chromadb >= 1.0)."""

_DEFAULT = object()


@register_embedding_function
class Qwen3EmbeddingFunction(EmbeddingFunction[Documents]):
    """A chromadb ``EmbeddingFunction`` backed by a local Qwen3-Embedding model.

    Args:
        model: Hub id (``Qwen/Qwen3-Embedding-0.6B``, ``-4B``, ``-8B``) or a local folder.
        dimensions: Matryoshka size (32..hidden size); ``None`` keeps the full vector.
        instruction: the task for queries; ``None`` or ``""`` embeds queries without one.
        device: ``None`` picks cuda > mps > cpu. Not saved in the collection's configuration.
        dtype: ``None`` picks bfloat16 on CUDA and on CPUs with native bf16, float32 elsewhere; ``"int8"`` is the
            CPU int8 mode (refused on GPUs). Not saved either.
        max_length: tokens per input, ``<|endoftext|>`` included.
        batch_size: inputs per forward pass.
        embedder: an existing :class:`~qwen3_rag.Qwen3Embedder` to use instead of loading ``model``. Its
            model, ``dimensions``, ``instruction`` and ``max_length`` are the function's (and are what the
            collection stores), unless ``dimensions`` or ``instruction`` are passed here too; a different
            ``max_length`` cannot be honoured and is refused.

    Vectors are unit length, so ``cosine``, ``ip`` and ``l2`` rank identically; ``cosine`` is the default space.
    The configuration chromadb persists with the collection (``get_config``) holds the model, dimensions,
    instruction and max_length, so ``client.get_collection(name)`` rebuilds this function by itself once
    ``qwen3_rag.chroma`` is imported.
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_EMBEDDING_MODEL,
        *,
        dimensions: int | None = _DEFAULT,
        instruction: str | None = _DEFAULT,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int = _DEFAULT,
        batch_size: int = 32,
        embedder: Qwen3Embedder | None = None,
    ) -> None:
        if embedder is not None and not isinstance(embedder, Qwen3Embedder):
            raise TypeError(f"embedder must be a Qwen3Embedder, got {type(embedder).__name__}")
        if embedder is not None:  # the stored config must describe the vectors this embedder makes
            dimensions = embedder.dimensions if dimensions is _DEFAULT else dimensions
            instruction = embedder.instruction if instruction is _DEFAULT else instruction
            if max_length is not _DEFAULT and max_length != embedder.max_length:
                msg = (
                    f"max_length={max_length!r} differs from the embedder's max_length={embedder.max_length}, which "
                    "is what cuts the texts: leave max_length out, or build the embedder with it"
                )
                raise ValueError(msg)
            max_length = embedder.max_length
        self.dimensions = check_dimensions(None if dimensions is _DEFAULT else dimensions)
        self.instruction = check_instruction(DEFAULT_INSTRUCTION if instruction is _DEFAULT else instruction) or None
        self.max_length = check_positive(8192 if max_length is _DEFAULT else max_length, "max_length")
        self.model = embedder.model_name if embedder is not None else os.fspath(model)
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self._embedder = embedder
        if not CHROMA_HAS_QUERY_HOOK:  # pragma: no cover - chromadb < 1.0
            warnings.warn(
                "this chromadb has no query-embedding hook: collection.query(query_texts=...) would embed queries "
                "as documents, without the instruction. Pass query_embeddings=ef.embed_query([...]) instead.",
                stacklevel=2,
            )

    @property
    def embedder(self) -> Qwen3Embedder:
        """The :class:`~qwen3_rag.Qwen3Embedder`, loaded on first use (shared with any other user of the model)."""
        if self._embedder is None:
            self._embedder = Qwen3Embedder(
                self.model,
                device=self.device,
                dtype=self.dtype,
                dimensions=self.dimensions,
                instruction=self.instruction,
                max_length=self.max_length,
                batch_size=self.batch_size,
            )
        return self._embedder

    # -- the protocol ---------------------------------------------------------------------------------

    def __call__(self, input: Documents) -> Embeddings:
        """Document vectors: no instruction (the model card's recipe for the indexed side)."""
        texts = _as_texts(input)
        if not texts:
            return []
        return list(self.embedder.embed_documents(texts, dimensions=self.dimensions))

    def embed_query(self, input: Documents) -> Embeddings:
        """Query vectors: ``Instruct: {instruction}\\nQuery:{text}``. chromadb calls this for ``query_texts``."""
        texts = _as_texts(input)
        if not texts:
            return []
        return list(self.embedder.embed_queries(texts, instruction=self.instruction, dimensions=self.dimensions))

    @staticmethod
    def name() -> str:
        return "qwen3_rag"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dimensions": self.dimensions,
            "instruction": self.instruction,
            "max_length": self.max_length,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> Qwen3EmbeddingFunction:
        Qwen3EmbeddingFunction.validate_config(config)
        return Qwen3EmbeddingFunction(
            config["model"],
            dimensions=config.get("dimensions"),
            instruction=config.get("instruction"),
            max_length=config.get("max_length", 8192),
        )

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        if not isinstance(config, dict) or not isinstance(config.get("model"), str) or not config["model"]:
            raise ValueError(f"a qwen3_rag embedding function config needs a 'model' string, got {config!r}")

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        """Vectors of another dimension or instruction cannot share a collection; a moved model folder can."""
        for key in ("dimensions", "instruction"):
            if key in new_config and new_config[key] != old_config.get(key):
                msg = (
                    f"changing {key} from {old_config.get(key)!r} to {new_config[key]!r} would mix incompatible "
                    "vectors in one collection: create a new collection instead"
                )
                raise ValueError(msg)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, dimensions={self.dimensions}, "
            f"instruction={self.instruction!r})"
        )


def _as_texts(input: Sequence[str] | str) -> list[str]:
    if isinstance(input, str):  # chromadb passes lists; a bare string is one text, not its characters
        return [input]
    texts = list(input)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"Qwen3EmbeddingFunction embeds text only; input[{i}] is a {type(text).__name__}")
    return texts


# ------------------------------------------------------------------------------------------- the database

SERVER_SCHEMES = ("http", "https")
"""``--db`` values with these schemes name a Chroma server; anything else is a folder."""
READ_ONLY_COPY_LIMIT = 1 << 30
"""Bytes: a read-only database folder up to this size is read from a private temporary copy (chromadb writes to
``chroma.sqlite3`` even to read it); a larger one is refused with a message that says what to do."""
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]")
_read_only_copies: dict[str, Path] = {}


class ChromaOpenError(RuntimeError):
    """The database cannot be opened: a server that cannot be reached or refuses, a folder that is damaged, is
    not a Chroma database, or cannot be written. The message names the database and says what to do."""


def is_server_url(db: str | os.PathLike) -> bool:
    """Whether ``db`` names a Chroma server (``http://...``, ``https://...``) rather than a folder."""
    return isinstance(db, str) and urlsplit(db.strip()).scheme.lower() in SERVER_SCHEMES and "://" in db


def check_collection_name(name: str) -> str:
    """``name`` if Chroma accepts it as a collection name, else a ValueError with Chroma's rule (checked here, so
    that a bad name is refused before anything loads or is written)."""
    if not isinstance(name, str):
        raise TypeError(f"a collection name must be a str, got {type(name).__name__}")
    problem = None
    if not _NAME.fullmatch(name):
        problem = "3-512 characters from [a-zA-Z0-9._-], starting and ending with a letter or digit"
    elif ".." in name:
        problem = "no two consecutive periods"
    else:
        try:
            ipaddress.ip_address(name)
            problem = "a name that is not an IP address"
        except ValueError:
            pass
    if problem is not None:
        raise ValueError(f"Chroma refuses the collection name {name!r}: it needs {problem}")
    return name


def open_chroma_client(
    db: str | os.PathLike,
    *,
    create: bool = True,
    read_only_copy: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """A chromadb client for ``db``: a folder (``PersistentClient``, telemetry off) or a server URL.

    A URL -- ``http://HOST:PORT`` or ``https://HOST[:PORT]``, optionally with a path prefix for a server behind a
    proxy -- gives a ``HttpClient`` configured the way chromadb's own clients and chroma-mcp are, from the
    environment (``environ``, default ``os.environ``):

    - ``CHROMA_TENANT``, ``CHROMA_DATABASE``: the tenant and database (chromadb's defaults otherwise; with an API
      key and no tenant, the key's own tenant and database, as ``chromadb.CloudClient`` does);
    - ``CHROMA_API_KEY``: sent as the ``X-Chroma-Token`` header (Chroma Cloud, or a server with token auth);
    - everything chromadb's ``Settings`` reads from the environment, e.g. ``CHROMA_CLIENT_AUTH_PROVIDER`` and
      ``CHROMA_CLIENT_AUTH_CREDENTIALS`` (basic or token auth), ``CHROMA_AUTH_TOKEN_TRANSPORT_HEADER``,
      ``CHROMA_SERVER_HEADERS`` (a JSON object of extra headers, for an authenticating proxy) and
      ``CHROMA_SERVER_SSL_VERIFY``.

    Credentials never go in the URL (it is printed in messages). The server is contacted here: an unreachable or
    refusing server is a :class:`ChromaOpenError` that names the URL.

    A folder: without ``create`` a folder that holds no ``chroma.sqlite3`` is an error. A damaged database is a
    :class:`ChromaOpenError`; so is a read-only one, unless ``read_only_copy``, which reads a private temporary
    copy of it (removed when the process ends; up to :data:`READ_ONLY_COPY_LIMIT` bytes) -- for callers that only
    read.
    """
    import chromadb
    from chromadb.config import Settings

    environ = os.environ if environ is None else environ
    if is_server_url(db):
        return _http_client(str(db).strip(), environ)
    path = Path(db).expanduser()
    sqlite = path / "chroma.sqlite3"
    if not create and not sqlite.is_file():
        raise ChromaOpenError(f"no Chroma database at {os.fspath(db)} (no chroma.sqlite3 there)")
    opened = path
    if sqlite.is_file() and not (os.access(path, os.W_OK) and os.access(sqlite, os.W_OK)):
        if not read_only_copy:
            raise ChromaOpenError(
                f"the database folder {os.fspath(db)} is read-only, and Chroma writes to chroma.sqlite3 even to "
                "read it: copy the folder somewhere writable and use the copy"
            )
        opened = _read_only_copy(path, os.fspath(db))
    try:
        client = chromadb.PersistentClient(path=str(opened), settings=Settings(anonymized_telemetry=False))
        client.list_collections(limit=1)
    except Exception as exc:
        detail = _detail(exc)
        if "readonly" in detail or "read-only" in detail.lower():
            raise ChromaOpenError(
                f"the database folder {os.fspath(db)} is read-only ({detail}): copy it somewhere writable and use "
                "the copy"
            ) from None
        raise ChromaOpenError(
            f"{os.fspath(db)} is not a readable Chroma database ({detail}): is it damaged or truncated? Restore it "
            "from a backup, or index into a new database"
        ) from None
    return client


def _http_client(url: str, environ: Mapping[str, str]) -> Any:
    import chromadb
    from chromadb.config import DEFAULT_DATABASE, DEFAULT_TENANT, Settings

    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ChromaOpenError(
            f"put the Chroma server's credentials in CHROMA_API_KEY (or CHROMA_CLIENT_AUTH_CREDENTIALS), not in the "
            f"URL: {parts.scheme}://{parts.hostname}..."
        )
    if not parts.hostname or parts.query or parts.fragment:
        raise ChromaOpenError(f"{url} is not a Chroma server URL: use http://HOST:PORT or https://HOST[:PORT]")
    try:
        port = parts.port
    except ValueError:
        raise ChromaOpenError(f"{url} is not a Chroma server URL: the port must be a number 1-65535") from None
    ssl = parts.scheme.lower() == "https"
    host = f"{parts.scheme.lower()}://{parts.netloc}{parts.path.rstrip('/')}"
    if port is None:  # chromadb would add its own default (8000); a URL without a port means the scheme's
        host = f"{parts.scheme.lower()}://{parts.netloc}:{443 if ssl else 80}{parts.path.rstrip('/')}"
    settings = Settings(anonymized_telemetry=False)
    settings.chroma_server_host = None  # the URL decides, whatever CHROMA_SERVER_HOST / _HTTP_PORT say
    settings.chroma_server_http_port = None
    api_key = environ.get("CHROMA_API_KEY", "").strip()
    if api_key:  # as chromadb.CloudClient and chroma-mcp send it
        settings.chroma_client_auth_provider = "chromadb.auth.token_authn.TokenAuthClientProvider"
        settings.chroma_client_auth_credentials = api_key
        settings.chroma_auth_token_transport_header = settings.chroma_auth_token_transport_header or "X-Chroma-Token"
        settings.chroma_overwrite_singleton_tenant_database_access_from_auth = True
    tenant = environ.get("CHROMA_TENANT", "").strip() or DEFAULT_TENANT
    database = environ.get("CHROMA_DATABASE", "").strip() or DEFAULT_DATABASE
    try:
        return chromadb.HttpClient(
            host=host, ssl=ssl, headers=settings.chroma_server_headers, settings=settings, tenant=tenant,
            database=database,
        )  # fmt: skip
    except Exception as exc:
        raise _server_error(url, exc, tenant, database) from None


def close_chroma_client(client: Any) -> None:
    """Release the client's database (chromadb >= 1.4 has ``close``; older ones keep it until the process ends)."""
    close = getattr(client, "close", None)
    if close is not None:
        close()


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says a Chroma server could not be reached: an httpx transport error, or the ValueError
    chromadb raises when it cannot connect."""
    import httpx

    return isinstance(exc, httpx.TransportError) or (
        isinstance(exc, ValueError) and "Could not connect to a Chroma server" in str(exc)
    )


def _server_error(url: str, exc: Exception, tenant: str, database: str) -> ChromaOpenError:
    detail = _detail(exc)
    if is_unreachable(exc):
        return ChromaOpenError(f"cannot reach the Chroma server at {url}: is it running (`chroma run --port ...`)?")
    if type(exc).__name__ == "NotFoundError":
        return ChromaOpenError(
            f"the Chroma server at {url} has no tenant {tenant!r} or database {database!r} ({detail}): set "
            "CHROMA_TENANT and CHROMA_DATABASE"
        )
    return ChromaOpenError(f"the Chroma server at {url} refused the connection: {detail}")


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "<html" in text.lower():  # a web server's error page, not Chroma's JSON
        text = "an HTML page, not Chroma's API: " + " ".join(re.sub(r"<[^>]*>", " ", text).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _read_only_copy(path: Path, shown: str) -> Path:
    """A private, writable copy of the read-only database folder ``path`` (made once per process)."""
    import atexit
    import shutil
    import tempfile

    key = str(path.resolve())
    if key in _read_only_copies and _read_only_copies[key].is_dir():
        return _read_only_copies[key]
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if size > READ_ONLY_COPY_LIMIT:
        raise ChromaOpenError(
            f"the database folder {shown} is read-only, and Chroma writes to chroma.sqlite3 even to read it; at "
            f"{size / 2**30:.1f} GiB it is too large to copy for each run: copy it somewhere writable and use the copy"
        )
    temp = Path(tempfile.mkdtemp(prefix="qwen3-rag-ro-"))
    copy = temp / "db"
    try:
        shutil.copytree(path, copy, ignore=shutil.ignore_patterns("*.lock"))
        for item in [copy, *copy.rglob("*")]:
            item.chmod(item.stat().st_mode | 0o200)
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise ChromaOpenError(f"the database folder {shown} is read-only and cannot be copied ({exc})") from None
    atexit.register(shutil.rmtree, temp, ignore_errors=True)
    _read_only_copies[key] = copy
    return copy
