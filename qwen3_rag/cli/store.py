"""The CLI's Chroma database: opening it, the collection of chunk vectors stamped with the fingerprint, and what
the collection already holds."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.fingerprint import Fingerprint, FingerprintMismatch
from qwen3_rag.embedder import Qwen3Embedder

DEFAULT_DB = "./qwen3-rag-db"
DEFAULT_COLLECTION = "qwen3_rag"
_SCAN_PAGE = 10_000
"""Chunk records read per request when listing what a collection holds."""


def index_label(db: str, collection: str) -> str:
    """How messages name an index."""
    return f"the index at {db} (collection {collection!r})"


def check_db_path(db: str | os.PathLike) -> Path:
    """``db`` as a folder path; a file in its place is a UsageError."""
    path = Path(db).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--db {os.fspath(db)} is a file, not a database folder")
    return path


def exists(db: str | os.PathLike) -> bool:
    return (check_db_path(db) / "chroma.sqlite3").is_file()


def require_db(db: str | os.PathLike) -> Path:
    """The folder of an existing database, or a UsageError that says how to make one."""
    if not exists(db):
        hint = (
            "run `qwen3-rag index PATH" + ("" if os.fspath(db) == DEFAULT_DB else f" --db {os.fspath(db)}") + "` first"
        )
        raise UsageError(f"no index at {os.fspath(db)}: {hint}")
    return check_db_path(db)


def open_client(db: str | os.PathLike, *, create: bool) -> Any:
    """A persistent Chroma client at ``db`` with telemetry off; without ``create`` a missing database is an error.

    The one place a client is made. ``qwen3_rag.chroma`` is imported first, so the collection's stored embedding
    function is rebuilt instead of chromadb warning that it "could not reconstruct" it.
    """
    path = check_db_path(db) if create else require_db(db)
    chromadb = import_chromadb()
    from chromadb.config import Settings

    import qwen3_rag.chroma  # noqa: F401 - registers Qwen3EmbeddingFunction with chromadb

    return chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))


@contextmanager
def connected(db: str | os.PathLike, *, create: bool) -> Iterator[Any]:
    """:func:`open_client` for the body, then closed: a process keeps no stale view of a database that another
    process writes to next (chromadb caches one per path and process)."""
    client = open_client(db, create=create)
    try:
        yield client
    finally:
        close_client(client)


def close_client(client: Any) -> None:
    """Release the client's database (chromadb >= 1.4 has ``close``; older ones keep it until the process ends)."""
    close = getattr(client, "close", None)
    if close is not None:
        close()


def import_chromadb() -> Any:
    try:
        import chromadb
    except ImportError as exc:
        raise UsageError('the qwen3-rag CLI stores its index in Chroma: pip install "qwen3-rag[chroma]"') from exc
    return chromadb


def _names(client: Any) -> list[str]:
    return [c if isinstance(c, str) else c.name for c in client.list_collections()]


def existing_collection(client: Any, name: str, db: str | os.PathLike) -> Any | None:
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
