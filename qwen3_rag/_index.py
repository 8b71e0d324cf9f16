"""The CLI's index: a persistent Chroma collection of chunk vectors, stamped with the embedding fingerprint.

Writes are per file, so an interrupted run keeps every file it finished and the next run picks up where it
stopped; a file is rewritten only when its text (or the chunking) changed, and its old chunks are deleted
only after the new ones are stored.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen3_rag._corpus import (
    SkippedFile,
    UsageError,
    chunk_file,
    chunk_id,
    file_version,
    read_text,
    source_key,
    title_of,
)
from qwen3_rag.embedder import Qwen3Embedder
from qwen3_rag.prompts import DEFAULT_EMBEDDING_MODEL, DEFAULT_INSTRUCTION

DEFAULT_DB = "./qwen3-rag-db"
DEFAULT_COLLECTION = "qwen3_rag"

_META = "qwen3_rag:"
_FORMAT = 1
_PROBE_TEXT = "qwen3-rag fingerprint probe: the quick brown fox jumps over the lazy dog."
_PROBE_SIZE = 16
_PROBE_AGREEMENT = 0.95
_GROUP_CHUNKS = 64
"""Chunks embedded per model call; their files are written one by one right after."""


class FingerprintMismatch(UsageError):
    """The collection holds vectors of another model, dimension or instruction than the one asked for."""


# ---------------------------------------------------------------------------------------------- fingerprint


@dataclass(frozen=True)
class Fingerprint:
    """What makes two vectors comparable: the model, the output dimension, the query instruction, unit length.

    ``probe`` holds the first components of one fixed text's vector, which recognises the same weights under
    another name (a Hub id indexed online, a local copy of it searched offline).
    """

    model: str
    dimensions: int
    instruction: str
    normalized: bool = True
    probe: tuple[float, ...] = ()

    def to_metadata(self) -> dict[str, Any]:
        return {
            f"{_META}format": _FORMAT,
            f"{_META}embedding_model": self.model,
            f"{_META}dimensions": self.dimensions,
            f"{_META}instruction": self.instruction,
            f"{_META}normalized": self.normalized,
            f"{_META}probe": json.dumps(list(self.probe)),
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None) -> Fingerprint | None:
        metadata = metadata or {}
        if f"{_META}embedding_model" not in metadata:
            return None
        return cls(
            model=metadata[f"{_META}embedding_model"],
            dimensions=int(metadata[f"{_META}dimensions"]),
            instruction=metadata.get(f"{_META}instruction", ""),
            normalized=bool(metadata.get(f"{_META}normalized", True)),
            probe=tuple(json.loads(metadata.get(f"{_META}probe", "[]"))),
        )

    def describe(self) -> str:
        instruction = repr(self.instruction) if self.instruction else "none"
        norm = "unit-length" if self.normalized else "unnormalised"
        return f"model {self.model!r}, {self.dimensions} dimensions, instruction {instruction}, {norm} vectors"


@dataclass(frozen=True)
class Setting:
    """A value the user asked for, and where it came from (a flag or an environment variable), or nothing."""

    value: Any = None
    origin: str = ""

    @property
    def given(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class EmbeddingRequest:
    model: Setting = Setting()
    dimensions: Setting = Setting()
    instruction: Setting = Setting()
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 32
    max_length: int = 8192
    base_url: str | None = None
    api_key: str | None = None


def _probe(embedder: Qwen3Embedder, dimensions: int) -> tuple[float, ...]:
    vector = embedder.embed_documents([_PROBE_TEXT], dimensions=dimensions)[0][:_PROBE_SIZE]
    return tuple(round(float(x), 5) for x in vector)


def _agree(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    if not a or len(a) != len(b):
        return False
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    return norm > 0 and dot / norm >= _PROBE_AGREEMENT


def _mismatch(what: str, recorded: Fingerprint, asked: Any, origin: str, where: str) -> FingerprintMismatch:
    return FingerprintMismatch(
        f"{where} was built with {recorded.describe()}; {origin} asks for {what} {asked!r}. Vectors made "
        f"differently cannot be compared: drop {origin} to use the index's own settings, or index into a new "
        "--db or --collection."
    )


def load_embedder(
    request: EmbeddingRequest, recorded: Fingerprint | None, where: str
) -> tuple[Qwen3Embedder, Fingerprint]:
    """The embedder to use with a collection, and the fingerprint its vectors have.

    Settings the user did not give come from the collection (or the defaults, for a new one); settings the user
    gave must agree with the collection's, or a FingerprintMismatch says which one differs and how to fix it.
    """
    if recorded is not None:
        if request.dimensions.given and request.dimensions.value != recorded.dimensions:
            raise _mismatch("dimensions", recorded, request.dimensions.value, request.dimensions.origin, where)
        if request.instruction.given and (request.instruction.value or "") != recorded.instruction:
            raise _mismatch("instruction", recorded, request.instruction.value, request.instruction.origin, where)
        if not recorded.normalized:
            raise FingerprintMismatch(f"{where} holds unnormalised vectors; qwen3-rag only writes unit-length ones")
    model = request.model.value if request.model.given else recorded.model if recorded else DEFAULT_EMBEDDING_MODEL
    dimensions = request.dimensions.value if request.dimensions.given else recorded.dimensions if recorded else None
    if request.instruction.given:
        instruction = request.instruction.value or ""
    else:
        instruction = recorded.instruction if recorded else DEFAULT_INSTRUCTION
    try:
        embedder = Qwen3Embedder(
            model,
            device=request.device,
            dtype=request.dtype,
            instruction=instruction or None,
            batch_size=request.batch_size,
            max_length=request.max_length,
            show_progress=False,
            base_url=request.base_url,
            api_key=request.api_key,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if dimensions is not None and not 32 <= dimensions <= embedder.hidden_size:
        if recorded is not None and not request.dimensions.given:
            raise _mismatch("model", recorded, model, request.model.origin or "the model", where)
        origin = request.dimensions.origin or "--dimensions"
        raise UsageError(
            f"{origin} must be between 32 and {embedder.hidden_size} (the hidden size of {model}), got {dimensions}"
        )
    dimensions = dimensions or embedder.hidden_size
    if recorded is not None:
        if model != recorded.model and not _agree(_probe(embedder, dimensions), recorded.probe):
            raise _mismatch("embedding model", recorded, model, request.model.origin or "the model", where)
        return embedder, recorded
    return embedder, Fingerprint(model, dimensions, instruction, True, _probe(embedder, dimensions))


# -------------------------------------------------------------------------------------------------- opening


def open_client(db: str | os.PathLike, *, create: bool) -> Any:
    """A persistent Chroma client at ``db`` with telemetry off; without ``create`` a missing database is an error."""
    path = Path(db).expanduser()
    if not create and not (path / "chroma.sqlite3").is_file():
        hint = (
            "run `qwen3-rag index PATH" + ("" if os.fspath(db) == DEFAULT_DB else f" --db {os.fspath(db)}") + "` first"
        )
        raise UsageError(f"no index at {os.fspath(db)}: {hint}")
    if path.exists() and not path.is_dir():
        raise UsageError(f"--db {os.fspath(db)} is a file, not a database folder")
    chromadb = import_chromadb()
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))


def import_chromadb() -> Any:
    try:
        import chromadb
    except ImportError as exc:
        raise UsageError('the qwen3-rag CLI stores its index in Chroma: pip install "qwen3-rag[chroma]"') from exc
    return chromadb


def existing_collection(client: Any, name: str, db: str | os.PathLike) -> Any | None:
    names = [c if isinstance(c, str) else c.name for c in client.list_collections()]
    if name not in names:
        return None
    return client.get_collection(name)


def require_collection(client: Any, name: str, db: str | os.PathLike) -> Any:
    collection = existing_collection(client, name, db)
    if collection is None:
        names = [c if isinstance(c, str) else c.name for c in client.list_collections()]
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


def create_collection(client: Any, name: str, fingerprint: Fingerprint, embedder: Qwen3Embedder) -> Any:
    from qwen3_rag.chroma import Qwen3EmbeddingFunction

    function = Qwen3EmbeddingFunction(
        fingerprint.model,
        dimensions=fingerprint.dimensions,
        instruction=fingerprint.instruction or None,
        embedder=embedder,
    )
    return client.create_collection(
        name,
        metadata=fingerprint.to_metadata(),
        configuration={"hnsw": {"space": "cosine"}},
        embedding_function=function,
    )


# ------------------------------------------------------------------------------------------------- indexing


@dataclass
class PlannedFile:
    path: Path
    source: str
    title: str
    version: str
    texts: list[str]
    ids: list[str]
    missing: list[int]
    stale: list[str]


@dataclass
class IndexReport:
    indexed: list[tuple[Path, int]] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    replaced: int = 0
    chunks_written: int = 0


def plan(
    collection: Any, files: list[Path], *, chunk_size: int, overlap: int, report: IndexReport
) -> list[PlannedFile]:
    """Read and chunk every file, and compare it with what the collection already holds."""
    planned = []
    for path in files:
        try:
            text = read_text(path)
        except SkippedFile as exc:
            report.skipped.append((path, str(exc)))
            continue
        source = source_key(path)
        version = file_version(text, chunk_size=chunk_size, overlap=overlap)
        texts = [c.text for c in chunk_file(text, chunk_size=chunk_size, overlap=overlap)]
        ids = [chunk_id(source, version, i) for i in range(len(texts))]
        held = collection.get(where={"source": source}, include=[])["ids"]
        wanted, have = set(ids), set(held)
        missing = [i for i, id_ in enumerate(ids) if id_ not in have]
        stale = [id_ for id_ in held if id_ not in wanted]
        if not missing and not stale:
            report.unchanged.append(path)
            continue
        planned.append(PlannedFile(path, source, title_of(text, path), version, texts, ids, missing, stale))
    return planned


def _groups(planned: list[PlannedFile], group_chunks: int) -> Iterator[list[PlannedFile]]:
    group: list[PlannedFile] = []
    size = 0
    for item in planned:
        if group and size + len(item.missing) > group_chunks:
            yield group
            group, size = [], 0
        group.append(item)
        size += len(item.missing)
    if group:
        yield group


def write(
    collection: Any,
    embed: Callable[[list[str]], Any],
    planned: list[PlannedFile],
    *,
    report: IndexReport,
    progress: Callable[[int], None] = lambda n: None,
    max_batch: int = 5000,
    group_chunks: int = _GROUP_CHUNKS,
) -> IndexReport:
    """Embed the missing chunks (``embed``: texts -> one vector each, in order) a group of files at a time, then
    store them file by file."""
    for group in _groups(planned, group_chunks):
        texts = [item.texts[i] for item in group for i in item.missing]
        vectors = embed(texts) if texts else []
        offset = 0
        for item in group:
            rows = vectors[offset : offset + len(item.missing)]
            offset += len(item.missing)
            write_file(collection, item, rows, max_batch=max_batch)
            report.indexed.append((item.path, len(item.ids)))
            report.chunks_written += len(item.missing)
            report.replaced += bool(item.stale)
            progress(len(item.missing))
    return report


def write_file(collection: Any, item: PlannedFile, vectors: Any, *, max_batch: int) -> None:
    """Store one file's new chunks, then delete its old version's: a crash in between leaves both, never neither."""
    for start in range(0, len(item.missing), max_batch):
        rows = item.missing[start : start + max_batch]
        collection.upsert(
            ids=[item.ids[i] for i in rows],
            embeddings=[vectors[start + k] for k in range(len(rows))],
            documents=[item.texts[i] for i in rows],
            metadatas=[
                {
                    "source": item.source,
                    "title": item.title,
                    "chunk": i,
                    "chunks": len(item.ids),
                    "file_version": item.version,
                }
                for i in rows
            ],
        )
    for start in range(0, len(item.stale), max_batch):
        collection.delete(ids=item.stale[start : start + max_batch])


# -------------------------------------------------------------------------------------------------- search


@dataclass
class Hit:
    id: str
    source: str
    title: str
    chunk: int
    text: str
    similarity: float
    rerank_score: float | None = None

    @property
    def score(self) -> float:
        return self.similarity if self.rerank_score is None else self.rerank_score


def search(collection: Any, embedder: Qwen3Embedder, fingerprint: Fingerprint, query: str, *, top_k: int) -> list[Hit]:
    """The ``top_k`` nearest chunks by cosine similarity, best first."""
    count = collection.count()
    if count == 0:
        raise UsageError("the index is empty: run `qwen3-rag index PATH` first")
    vector = embedder.embed_queries([query], dimensions=fingerprint.dimensions)[0]
    result = collection.query(
        query_embeddings=[vector], n_results=min(top_k, count), include=["documents", "metadatas", "distances"]
    )
    hits = []
    for id_, text, meta, distance in zip(
        result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0], strict=False
    ):
        hits.append(
            Hit(
                id=id_,
                source=meta.get("source", "?"),
                title=meta.get("title", ""),
                chunk=int(meta.get("chunk", 0)),
                text=text,
                similarity=1.0 - float(distance),
            )
        )
    return hits


def rerank(reranker: Any, query: str, hits: list[Hit], *, top_n: int) -> list[Hit]:
    """The ``top_n`` hits by reranker score (P(yes)), best first; ties keep the retrieval order."""
    if not hits:
        return []
    results = reranker.rerank(query, [h.text for h in hits], top_n=top_n)
    out = []
    for result in results:
        hit = hits[result.index]
        hit.rerank_score = float(result.score)
        out.append(hit)
    return out


def ray_embed(
    fingerprint: Fingerprint, *, address: str | None, num_actors: int, num_gpus_per_actor: float, **kwargs: Any
) -> Callable[[list[str]], Any]:
    """``embed`` for :func:`write` on a Ray actor pool (``qwen3_rag.distributed``), with the index's model,
    dimensions and no instruction (documents), like the in-process path."""
    from qwen3_rag.distributed import iter_embedded

    def embed(texts: list[str]) -> Any:
        rows = [{"id": str(i), "text": text} for i, text in enumerate(texts)]
        vectors: list[Any] = [None] * len(texts)
        for batch in iter_embedded(
            rows, model=fingerprint.model, dimensions=fingerprint.dimensions, num_actors=num_actors,
            num_gpus_per_actor=num_gpus_per_actor, store_text=False, address=address, **kwargs,
        ):  # fmt: skip
            for id_, vector in zip(batch.ids, batch.vectors, strict=True):
                vectors[int(id_)] = vector
        return vectors

    return embed
