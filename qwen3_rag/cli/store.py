"""The CLI's Chroma database: opening it, and the collection of chunk vectors stamped with the fingerprint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.fingerprint import Fingerprint, FingerprintMismatch
from qwen3_rag.embedder import Qwen3Embedder

DEFAULT_DB = "./qwen3-rag-db"
DEFAULT_COLLECTION = "qwen3_rag"


def index_label(db: str, collection: str) -> str:
    """How messages name an index."""
    return f"the index at {db} (collection {collection!r})"


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
