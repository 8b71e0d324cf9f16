"""The CLI's Chroma database -- a folder (embedded) or a Chroma server (``--db http://HOST:PORT``): opening it,
the collection of chunk vectors stamped with the fingerprint, and what the collection already holds."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen3_rag._validation import one_line
from qwen3_rag.cli.console import printable
from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.fingerprint import Fingerprint, FingerprintMismatch
from qwen3_rag.embedder import Qwen3Embedder

DEFAULT_DB = "./qwen3-rag-db"
DEFAULT_COLLECTION = "qwen3_rag"
_SCAN_PAGE = 10_000
"""Chunk records read per request when listing what a collection holds."""
LOCK_PREFIX = "qwen3-rag-"
"""The CLI's own files in a database folder (its locks) start with this."""


def index_label(db: str, collection: str) -> str:
    """How messages name an index."""
    return f"the index at {db} (collection {collection!r})"


def is_server(db: str | os.PathLike) -> bool:
    """Whether ``--db`` names a Chroma server (``http://HOST:PORT``, ``https://HOST[:PORT]``) rather than a folder."""
    import_chromadb()
    from qwen3_rag.chroma import is_server_url

    return is_server_url(db)


def check_collection_name(name: str) -> str:
    """``name``, or a UsageError when Chroma would refuse it (checked before anything loads or is written)."""
    import_chromadb()
    from qwen3_rag.chroma import check_collection_name as check

    try:
        return check(name)
    except ValueError as exc:
        raise UsageError(f"--collection: {exc}") from None


def check_db_path(db: str | os.PathLike, *, create: bool = False) -> Path | None:
    """``db`` as a folder path, or None for a server URL. A file in its place, or above it, is a UsageError; so is
    (with ``create``, for writing) an existing folder that holds other files but no Chroma database."""
    if is_server(db):
        return None
    path = Path(db).expanduser()
    shown = printable(os.fspath(db))
    if path.exists() and not path.is_dir():
        raise UsageError(f"--db {shown} is a file, not a database folder")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"--db {shown} cannot be a database folder: {printable(parent)} is a file")
            break
    if create and path.is_dir() and not (path / "chroma.sqlite3").exists():
        try:
            others = [entry.name for entry in path.iterdir() if not entry.name.startswith(LOCK_PREFIX)]
        except OSError as exc:
            raise UsageError(f"cannot read the database folder {shown} ({exc.strerror or exc})") from None
        if others:
            raise UsageError(
                f"--db {shown} is a folder that holds other files ({', '.join(map(printable, sorted(others)[:3]))}"
                f"{', ...' if len(others) > 3 else ''}) but no Chroma database: choose a new or empty folder"
            )
    return path


def exists(db: str | os.PathLike) -> bool:
    """Whether ``db`` holds a database (a server is taken to: it is asked when opened)."""
    path = check_db_path(db)
    return path is None or (path / "chroma.sqlite3").is_file()


def require_db(db: str | os.PathLike) -> Path | None:
    """The folder of an existing database (None for a server), or a UsageError that says how to make one."""
    if not exists(db):
        hint = (
            "run `qwen3-rag index PATH" + ("" if os.fspath(db) == DEFAULT_DB else f" --db {os.fspath(db)}") + "` first"
        )
        raise UsageError(f"no index at {os.fspath(db)}: {hint}")
    return check_db_path(db)


def open_client(db: str | os.PathLike, *, create: bool) -> Any:
    """A Chroma client for ``db`` (telemetry off): a folder's embedded database, or a server; without ``create`` a
    missing database is an error, and a read-only folder is read from a private copy (Chroma cannot read it in
    place). Everything that cannot be opened -- a server that cannot be reached or refuses, a damaged database --
    is one UsageError that names it.

    The one place the CLI makes a client (through :func:`qwen3_rag.chroma.open_chroma_client`, which the Ray job
    uses too). ``qwen3_rag.chroma`` is imported first, so the collection's stored embedding function is rebuilt
    instead of chromadb warning that it "could not reconstruct" it.
    """
    path = check_db_path(db, create=create) if create else require_db(db)
    import_chromadb()
    from qwen3_rag.chroma import ChromaOpenError, open_chroma_client

    try:
        return open_chroma_client(db if path is None else os.fspath(db), create=create, read_only_copy=not create)
    except ChromaOpenError as exc:
        raise UsageError(str(exc)) from None


@contextmanager
def connected(db: str | os.PathLike, *, create: bool) -> Iterator[Any]:
    """:func:`open_client` for the body, then closed: a process keeps no stale view of a database that another
    process writes to next (chromadb caches one per path and process)."""
    client = open_client(db, create=create)
    try:
        with server_errors(db):
            yield client
    finally:
        close_client(client)


@contextmanager
def server_errors(db: str | os.PathLike) -> Iterator[None]:
    """A server that goes away while the body talks to it is one UsageError naming it, not a traceback."""
    if not is_server(db):
        yield
        return
    from qwen3_rag.chroma import is_unreachable

    try:
        yield
    except Exception as exc:
        if not is_unreachable(exc):
            raise
        raise UsageError(
            f"lost the Chroma server at {os.fspath(db)} ({one_line(exc) or type(exc).__name__}): is it still running?"
        ) from None


def remove_new_database(path: Path) -> None:
    """Remove the database a run created in ``path`` and stored nothing in (its client closed): the folder is left
    as it was, but for the CLI's lock files."""
    for name in ("chroma.sqlite3", "chroma.sqlite3-wal", "chroma.sqlite3-shm", "chroma.sqlite3-journal"):
        with contextlib.suppress(FileNotFoundError):
            (path / name).unlink()


def close_client(client: Any) -> None:
    """Release the client's database (:func:`qwen3_rag.chroma.close_chroma_client`)."""
    from qwen3_rag.chroma import close_chroma_client

    close_chroma_client(client)


def import_chromadb() -> Any:
    try:
        import chromadb
    except ImportError as exc:
        raise UsageError('the qwen3-rag CLI stores its index in Chroma: pip install "qwen3-rag[chroma]"') from exc
    return chromadb


def _names(client: Any) -> list[str]:
    return [c if isinstance(c, str) else c.name for c in client.list_collections()]


def existing_collection(client: Any, name: str, db: str | os.PathLike) -> Any | None:
    check_collection_name(name)
    if name not in _names(client):
        return None
    return client.get_collection(name)


def require_collection(client: Any, name: str, db: str | os.PathLike) -> Any:
    collection = existing_collection(client, name, db)
    if collection is None:
        names = _names(client)
        others = f" (it holds: {', '.join(sorted(names))})" if names else ""
        raise UsageError(f"no collection {name!r} in {os.fspath(db)}{others}: run `qwen3-rag index PATH` first")
    return collection


def recorded_fingerprint(collection: Any, where: str) -> Fingerprint:
    fingerprint = Fingerprint.from_metadata(collection.metadata)
    if fingerprint is None:
        raise FingerprintMismatch(
            f"{where} was not written by qwen3-rag (its metadata has no embedding fingerprint): "
            "index into a new --db or --collection"
        )
    return fingerprint


def create_collection(
    client: Any, name: str, fingerprint: Fingerprint, embedder: Qwen3Embedder, where: str | None = None
) -> tuple[Any, bool]:
    """A new collection stamped with ``fingerprint``, and True. If another run created it meanwhile (two runs
    against one server), that one, and False -- when its fingerprint is this run's; otherwise a refusal."""
    from qwen3_rag.chroma import Qwen3EmbeddingFunction

    function = Qwen3EmbeddingFunction(
        fingerprint.model,
        dimensions=fingerprint.dimensions,
        instruction=fingerprint.instruction or None,
        embedder=embedder,
    )
    try:
        created = client.create_collection(
            name,
            metadata=fingerprint.to_metadata(),
            configuration={"hnsw": {"space": "cosine"}},
            embedding_function=function,
        )
        return created, True
    except Exception:
        if name not in _names(client):
            raise
    where = where or f"the collection {name!r}"
    collection = client.get_collection(name)
    recorded = recorded_fingerprint(collection, where)
    if _settings(recorded) != _settings(fingerprint):
        raise FingerprintMismatch(
            f"{where} was just created by another run, with {recorded.describe()}; this run embeds with "
            f"{fingerprint.describe()}. Vectors made differently cannot be compared: index into another --collection"
        )
    return collection, False


def _settings(fingerprint: Fingerprint) -> tuple[Any, ...]:
    return fingerprint.model, fingerprint.dimensions, fingerprint.instruction, fingerprint.normalized


# ------------------------------------------------------------------------------------------- what is held


@dataclass
class Held:
    """The chunks a collection holds, by file: ``ids[source]`` lists a file's chunk ids, ``copies[version]``
    maps chunk number -> id of one stored chunk of each file version (to reuse its vector for an identical file
    elsewhere: a renamed, moved or copied file is not embedded again)."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    copies: dict[str, dict[int, str]] = field(default_factory=dict)

    def count(self, source: str) -> int:
        return len(self.ids.get(source, ()))


def held_chunks(collection: Any) -> Held:
    """Every chunk's id, source and version, read in pages (metadata only: no documents, no vectors)."""
    held = Held()
    offset = 0
    while True:
        page = collection.get(include=["metadatas"], limit=_SCAN_PAGE, offset=offset)
        for id_, meta in zip(page["ids"], page["metadatas"], strict=True):
            meta = meta or {}
            held.ids.setdefault(str(meta.get("source", "")), []).append(id_)
            version = meta.get("file_version")
            if version is not None:
                held.copies.setdefault(str(version), {}).setdefault(int(meta.get("chunk", 0)), id_)
        if len(page["ids"]) < _SCAN_PAGE:
            return held
        offset += _SCAN_PAGE
