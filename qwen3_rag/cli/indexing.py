"""``qwen3-rag index``: read, chunk and embed files into the collection, one file's chunks at a time.

Writes are per file, so an interrupted run keeps every file it finished and the next run picks up where it
stopped; a file is rewritten only when its text (or the chunking) changed, and its old chunks are deleted
only after the new ones are stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from qwen3_rag.cli import store
from qwen3_rag.cli.chunking import (
    MARKDOWN_SUFFIXES,
    check_chunking,
    chunk_text,
    chunking_version,
    embedder_tokenizer,
)
from qwen3_rag.cli.console import Console, display_path
from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.fingerprint import Fingerprint, load_embedder
from qwen3_rag.cli.loaders import SkippedFile, find_files, read_text, title_of
from qwen3_rag.cli.options import Resolved

_GROUP_CHUNKS = 64
"""Chunks embedded per model call; their files are written one by one right after."""


def run_index(opts: Resolved, console: Console) -> int:
    from tqdm.auto import tqdm

    args = opts.args
    check_chunking(args.chunk_size, args.chunk_overlap, max_length=args.max_length)
    files = find_files(args.paths)
    db = opts.value("db", store.DEFAULT_DB)
    name = opts.value("collection", store.DEFAULT_COLLECTION)
    where = store.index_label(db, name)
    client = store.open_client(db, create=True)
    collection = store.existing_collection(client, name, db)
    recorded = store.recorded_fingerprint(collection, where) if collection is not None else None
    embedder, fingerprint = load_embedder(opts.embedding_request(), recorded, where)
    if collection is None:
        collection = store.create_collection(client, name, fingerprint, embedder)

    report = IndexReport()
    planned = plan(
        collection, files, embedder_tokenizer(embedder), chunk_size=args.chunk_size, overlap=args.chunk_overlap,
        report=report,
    )  # fmt: skip
    total = sum(len(p.missing) for p in planned)
    console.status(
        f"{len(files)} files: {len(planned)} to index ({total} chunks), {len(report.unchanged)} unchanged, "
        f"{len(report.skipped)} skipped; {fingerprint.model}, {fingerprint.dimensions} dimensions"
    )
    if args.ray is None:
        embed, group = partial(embedder.embed_documents, dimensions=fingerprint.dimensions), {}
    else:  # one job for every missing chunk: a Ray session per group of files would cost its start-up each time
        embed = ray_embed(
            fingerprint, address=args.ray or None, num_actors=args.ray_actors, num_gpus_per_actor=args.ray_gpus,
            batch_size=args.batch_size, max_length=args.max_length, dtype=opts.dtype(),
        )  # fmt: skip
        group = {"group_chunks": max(total, 1)}
    try:
        with tqdm(
            total=total, desc="Embedding", unit="chunk", disable=args.quiet or not total, file=console.err
        ) as bar:
            write(
                collection,
                embed,
                planned,
                report=report,
                progress=bar.update,
                max_batch=client.get_max_batch_size(),
                **group,
            )
    except KeyboardInterrupt:
        console.warn(
            f"interrupted: {len(report.indexed)} of {len(planned)} files were written and are kept; "
            "run the same command again to index the rest"
        )
        return 130
    for path, reason in report.skipped:
        console.warn(f"skipped {display_path(path)}: {reason}")
    replaced = f", {report.replaced} of them replacing an older version" if report.replaced else ""
    console.status(
        f"Indexed {len(report.indexed)} files ({report.chunks_written} new chunks{replaced}); "
        f"{len(report.unchanged)} unchanged; {len(report.skipped)} skipped. "
        f"{where[0].upper()}{where[1:]} holds {collection.count()} chunks."
    )
    if not report.indexed and not report.unchanged:
        raise UsageError("nothing was indexed: every file was skipped")
    return 0


# ------------------------------------------------------------------------------------------------- planning


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
    collection: Any, files: list[Path], tokenizer: Any, *, chunk_size: int, overlap: int, report: IndexReport
) -> list[PlannedFile]:
    """Read and chunk every file (in tokens of ``tokenizer``, the embedder's), and compare it with what the
    collection already holds."""
    chunking = chunking_version(tokenizer, chunk_size=chunk_size, overlap=overlap)
    planned = []
    for path in files:
        try:
            text = read_text(path)
        except SkippedFile as exc:
            report.skipped.append((path, str(exc)))
            continue
        source = source_key(path)
        version = file_version(text, chunking=chunking)
        markdown = path.suffix.lower() in MARKDOWN_SUFFIXES
        try:
            chunks = chunk_text(text, tokenizer, chunk_size=chunk_size, overlap=overlap, markdown=markdown)
        except UsageError as exc:  # text the tokenizer cannot read (a lone surrogate): this file only
            report.skipped.append((path, str(exc)))
            continue
        texts = [c.text for c in chunks]
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


# -------------------------------------------------------------------------------------------------- hashes


def file_version(text: str, *, chunking: str) -> str:
    """A hash of the text and of what else its chunks depend on (``chunking_version``: settings, tokenizer,
    splitter): a new value means new chunks."""
    digest = hashlib.sha256(f"{chunking}\n".encode())
    digest.update(text.encode("utf-8"))
    return digest.hexdigest()


def source_key(path: Path) -> str:
    """How a file is identified in the index: its absolute path, with forward slashes."""
    return path.resolve().as_posix()


def chunk_id(source: str, version: str, index: int) -> str:
    """``{hash of the path}-{hash of the file version}-{chunk index}``: stable across runs."""
    return f"{hashlib.sha256(source.encode()).hexdigest()[:16]}-{version[:16]}-{index}"
