"""``qwen3-rag index``: read, chunk and embed files into the collection, which then mirrors the folders given.

Files are embedded together and stored many per upsert (up to WRITE_CHUNKS chunks, at least every
WRITE_SECONDS); a file counts as done only once it is stored, so an interrupted run keeps every file it stored and
the next run picks up where it stopped. A file is rewritten only when its text (or the chunking) changed, and its
old chunks are deleted only after the new ones are stored. A file with the same text as one already stored
(renamed, moved, copied) reuses its vectors. Files that are gone from a folder given lose their chunks
(``--no-prune`` keeps them)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from qwen3_rag.cli import lock, store
from qwen3_rag.cli.chunking import (
    MARKDOWN_SUFFIXES,
    Chunk,
    check_chunking,
    chunk_text,
    chunking_version,
    embedder_tokenizer,
)
from qwen3_rag.cli.console import Console, display_path, printable
from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.files import FoundFiles, find_files
from qwen3_rag.cli.fingerprint import Fingerprint, load_embedder
from qwen3_rag.cli.loaders import DOCUMENT_SUFFIXES, Document, SkippedFile, read_document
from qwen3_rag.cli.options import Resolved

WRITE_CHUNKS = 4096
"""Most chunks stored per upsert (many small files in one call: a Chroma write costs tens of milliseconds and more
whatever its size)."""
WRITE_SECONDS = 10.0
"""Embedded chunks are stored at least this often, so an interrupted run with a slow model loses little work."""
EMBED_CHUNKS = 128
"""Chunks per embedding call (files pooled, longest texts together): the progress bar moves per call."""


def run_index(opts: Resolved, console: Console) -> int:
    args = opts.args
    check_chunking(args.chunk_size, args.chunk_overlap, max_length=args.max_length)
    if args.ray is not None:
        check_ray_options(opts)
    db = opts.value("db", store.DEFAULT_DB)
    store.check_collection_name(opts.value("collection", store.DEFAULT_COLLECTION))
    db_path = store.check_db_path(db, create=True)  # None: a server, which needs no lock of ours
    found = find_files(args.paths)
    if not found.files and not store.exists(db):
        report_skipped(console, found.skipped)
        raise UsageError(nothing_found(args.paths))
    with lock.index_run(db_path, console):
        access = lock.AccessLock(db_path)
        try:
            with store.server_errors(db):
                return _index(opts, console, found, db, access)
        finally:
            access.close()


def _index(opts: Resolved, console: Console, found: FoundFiles, db: str, access: lock.AccessLock) -> int:
    from tqdm.auto import tqdm

    args = opts.args
    name = opts.value("collection", store.DEFAULT_COLLECTION)
    where = store.index_label(db, name)
    db_path = store.check_db_path(db)
    # A new database is created only once the model has loaded (and accepted the settings asked for), and removed
    # again if the run stores nothing in it.
    new_db = db_path is not None and not (db_path / "chroma.sqlite3").is_file()
    loaded = load_embedder(opts.embedding_request(), None, where) if new_db else None
    with access.writing():
        client = store.open_client(db, create=True)
    collection: Any = None
    try:
        existing = store.existing_collection(client, name, db)
        if existing is None and not found.files:  # nothing to store and nothing to prune
            report_skipped(console, found.skipped)
            raise UsageError(nothing_found(args.paths))
        recorded = store.recorded_fingerprint(existing, where) if existing is not None else None
        if loaded is not None and recorded is None:
            embedder, fingerprint = loaded
        else:
            embedder, fingerprint = load_embedder(opts.embedding_request(), recorded, where)
        if existing is None:
            collection = NewCollection(
                client, name, lambda: store.create_collection(client, name, fingerprint, embedder, where)
            )
        else:
            collection = existing
        held = store.held_chunks(existing) if existing is not None else store.Held()

        report = IndexReport(skipped=list(found.skipped))
        tokenizer = embedder_tokenizer(embedder)  # chunks are counted in the embedder's own tokens
        chunker = partial(chunk_text, tokenizer=tokenizer, chunk_size=args.chunk_size, overlap=args.chunk_overlap)
        chunking = chunking_version(tokenizer, chunk_size=args.chunk_size, overlap=args.chunk_overlap)
        with tqdm(
            total=len(found.files), desc="Reading", unit="file", delay=2, disable=args.quiet, file=console.err
        ) as bar:
            planned = plan(
                found.files,
                held,
                chunker=chunker,
                version=partial(file_version, chunking=chunking),
                report=report,
                progress=bar.update,
            )
        removed = vanished(held, found, report, prune=not args.no_prune)
        total = sum(len(p.missing) for p in planned)
        console.status(
            f"{len(found.files)} files: {len(planned)} to index ({total} chunks), {len(report.unchanged)} unchanged, "
            f"{len(report.skipped)} skipped, {len(removed)} to remove; "
            f"{fingerprint.model}, {fingerprint.dimensions} dimensions"
        )
        if args.ray is None:
            embed, group = partial(embedder.embed_documents, dimensions=fingerprint.dimensions), {}
        else:  # one job for every missing chunk: a Ray session per group of files would cost its start-up each time
            embed = ray_embed(
                fingerprint, address=args.ray or None, num_actors=args.ray_actors, num_gpus_per_actor=args.ray_gpus,
                batch_size=args.batch_size, max_length=args.max_length, dtype=opts.dtype(),
            )  # fmt: skip
            group = {"write_chunks": max(total, 1), "embed_chunks": max(total, 1)}
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
                    guard=access.writing,
                    **group,
                )
            prune(collection, removed, max_batch=client.get_max_batch_size(), guard=access.writing)
        except KeyboardInterrupt:
            console.warn(
                f"interrupted: {len(report.indexed)} of {len(planned)} files were written and are kept; "
                "run the same command again to index the rest"
            )
            return 130
        count = collection.count()
    finally:
        store.close_client(client)
        if new_db and (collection is None or (isinstance(collection, NewCollection) and not collection.created)):
            store.remove_new_database(db_path)
    report_skipped(console, report.skipped, held=held)
    for path, note in report.notes:
        console.warn(f"{display_path(path)}: {note}")
    for source, ids in removed.items():
        why = "it holds no text now" if source in report.emptied else "no longer in the folder"
        console.status(f"removed {display_path(source)} ({len(ids)} chunks): {why}")
    replaced = f", {report.replaced} of them replacing an older version" if report.replaced else ""
    reused = f"; {report.chunks_reused} vectors reused from identical files" if report.chunks_reused else ""
    console.status(
        f"Indexed {len(report.indexed)} files ({report.chunks_written} new chunks{replaced}{reused}); "
        f"{len(report.unchanged)} unchanged; {len(report.skipped)} skipped; {len(removed)} removed. "
        f"{where[0].upper()}{where[1:]} holds {count} chunks."
    )
    if not report.indexed and not report.unchanged and not removed:
        raise UsageError("nothing was indexed: every file was skipped" if report.skipped else nothing_found(args.paths))
    return 0


def check_ray_options(opts: Resolved) -> None:
    """``--ray`` embeds on Ray actors: the options that choose where embedding runs must agree with that (one line,
    before anything loads). ``--device`` is honoured when it says what the actors do -- ``cpu`` with
    ``--ray-gpus 0``, ``cuda`` with GPUs per actor (each actor uses the GPU Ray gives it) -- and refused otherwise;
    ``--embedding-url`` (a vLLM server does the embedding) cannot be combined with it."""
    args = opts.args
    url = opts.setting("embedding_url")
    if url.given:
        raise UsageError(
            f"{url.origin} and --ray both say where to embed: a vLLM server, or a Ray actor pool -- drop one"
        )
    dtype = opts.setting("dtype")
    if dtype.given and str(dtype.value).lower() == "int8" and args.ray_gpus > 0:
        raise UsageError(
            f"{dtype.origin} int8 is a CPU mode, and --ray-gpus {args.ray_gpus:g} puts the actors on GPUs: "
            "drop one of them"
        )
    device = opts.setting("device")
    if not device.given:
        return
    kind = str(device.value).split(":")[0].lower()
    if kind == "cpu" and args.ray_gpus == 0:
        return
    if kind == "cuda" and args.ray_gpus > 0:
        if ":" in str(device.value):
            raise UsageError(
                f"{device.origin} {device.value}: with --ray each actor uses the GPU that Ray assigns it; "
                "say --device cuda (or leave it out)"
            )
        return
    where = f"on {args.ray_gpus:g} GPU(s) each (--ray-gpus)" if args.ray_gpus else "on the CPU (--ray-gpus 0)"
    raise UsageError(
        f"{device.origin} {device.value} does not match --ray, whose actors embed {where}: "
        + ("pass --ray-gpus 1 to embed on GPUs" if kind == "cuda" else "drop it, or set --ray-gpus to match")
    )


def nothing_found(paths: list[str]) -> str:
    suffixes = " ".join(sorted(DOCUMENT_SUFFIXES))
    where = ", ".join(printable(p) for p in paths)
    return f"no files to index in {where} (looked for {suffixes} and source code; see `qwen3-rag index --help`)"


def report_skipped(console: Console, skipped: list[tuple[Path, str]], *, held: store.Held | None = None) -> None:
    for path, reason in skipped:
        kept = held.count(source_key(path)) if held is not None else 0
        note = f" (its {kept} chunks from an earlier run are kept)" if kept else ""
        console.warn(f"skipped {display_path(path)}: {reason}{note}")


# ------------------------------------------------------------------------------------------------- planning


@dataclass
class PlannedFile:
    path: Path
    source: str
    title: str
    version: str
    chunks: list[Chunk]
    metadatas: list[dict[str, Any]]
    ids: list[str]
    missing: list[int]
    """Chunk numbers the collection lacks."""
    stale: list[str]
    """Ids of this file's chunks from another version: deleted once the new ones are stored."""
    reuse: dict[int, str] = field(default_factory=dict)
    """Chunk number -> id of a stored chunk with the same text and chunking (another path): its vector is copied."""


@dataclass
class IndexReport:
    indexed: list[tuple[Path, int]] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[tuple[Path, str]] = field(default_factory=list)
    unreadable: set[str] = field(default_factory=set)
    """Sources of files that exist but could not be read this time: their chunks are kept."""
    emptied: set[str] = field(default_factory=set)
    """Sources of files that were read and hold no text now: their chunks are removed."""
    replaced: int = 0
    chunks_written: int = 0
    chunks_reused: int = 0


def plan(
    files: list[Path],
    held: store.Held,
    *,
    chunker: Callable[..., list[Chunk]],
    version: Callable[[str], str],
    report: IndexReport,
    progress: Callable[[int], None] = lambda n: None,
) -> list[PlannedFile]:
    """Read and chunk every file (``chunker(text, markdown=...)``: the token-counted :func:`chunk_text` with the
    index's tokenizer and settings), and compare it with what the collection holds (``held``)."""
    planned = []
    for path in files:
        source = source_key(path)
        try:
            document = read_document(path)
        except SkippedFile as exc:
            report.skipped.append((path, str(exc)))
            (report.emptied if exc.stale else report.unreadable).add(source)
            progress(1)
            continue
        try:
            item = plan_file(path, source, document, held, chunker=chunker, version=version(document.text))
        except UsageError as exc:  # text the tokenizer cannot read (a lone surrogate): this file only
            report.skipped.append((path, str(exc)))
            report.unreadable.add(source)
            progress(1)
            continue
        if item is None:
            report.unchanged.append(path)
        else:  # notes about what is indexed now (an unchanged file's were given when it was)
            planned.append(item)
            if source != path.as_posix():
                report.notes.append((path, f"the name is not valid UTF-8: indexed as {source!r}"))
            report.notes.extend((path, note) for note in document.notes)
        progress(1)
    return planned


def plan_file(
    path: Path,
    source: str,
    document: Document,
    held: store.Held,
    *,
    chunker: Callable[..., list[Chunk]],
    version: str,
) -> PlannedFile | None:
    """What to write for one file, or None when the collection already holds exactly its chunks."""
    chunks = chunker(document.text, markdown=path.suffix.lower() in MARKDOWN_SUFFIXES)
    ids = [chunk_id(source, version, c.index) for c in chunks]
    have = set(held.ids.get(source, ()))
    wanted = set(ids)
    missing = [i for i, id_ in enumerate(ids) if id_ not in have]
    stale = [id_ for id_ in held.ids.get(source, ()) if id_ not in wanted]
    if not missing and not stale:
        return None
    copies = held.copies.get(version, {})
    metadatas = [
        {
            "source": source,
            "title": document.title,
            "chunk": c.index,
            "chunks": len(chunks),
            "file_version": version,
            **document.position(c.start, c.end),
        }
        for c in chunks
    ]
    reuse = {i: copies[i] for i in missing if i in copies}
    return PlannedFile(path, source, document.title, version, chunks, metadatas, ids, missing, stale, reuse)


def vanished(held: store.Held, found: FoundFiles, report: IndexReport, *, prune: bool = True) -> dict[str, list[str]]:
    """The chunks to remove, source -> ids: those of files that hold no text now, and (``prune``) those of files
    that were under a folder given and are no longer there as regular files. A file that exists but could not be
    read keeps its chunks; files indexed from elsewhere are not touched."""
    removed = {source: held.ids[source] for source in sorted(report.emptied) if source in held.ids}
    prefixes = tuple(key if key.endswith("/") else key + "/" for key in map(source_key, found.folders))
    if not prune or not prefixes:
        return removed
    present = {source_key(path) for path in found.files}
    for source, ids in held.ids.items():
        if source.startswith(prefixes) and source not in present and source not in report.unreadable:
            removed[source] = ids
    return removed


# -------------------------------------------------------------------------------------------------- writing


class NewCollection:
    """The collection a first run writes to, created only when its first chunks are stored (under the write lock,
    like every write): a run that fails or is interrupted before then -- a model that cannot embed, a Ctrl-C --
    leaves no empty collection behind; if the first write itself fails, the collection it created is removed."""

    def __init__(self, client: Any, name: str, create: Callable[[], tuple[Any, bool]]) -> None:
        self._client, self._name, self._create = client, name, create
        self._collection: Any = None

    @property
    def created(self) -> bool:
        """Whether this run created the collection (and stored chunks in it)."""
        return self._collection is not None

    def upsert(self, **kwargs: Any) -> None:
        if self._collection is not None:
            self._collection.upsert(**kwargs)
            return
        collection, ours = self._create()
        try:
            collection.upsert(**kwargs)
        except BaseException:
            if ours:  # never another run's (on a server, a concurrent first run may have created it)
                with contextlib.suppress(Exception):  # e.g. a server that went away: the first error is the one to see
                    self._client.delete_collection(self._name)
            raise
        self._collection = collection

    def delete(self, ids: list[str]) -> None:
        if self._collection is not None:
            self._collection.delete(ids=ids)

    def get(self, **kwargs: Any) -> Any:
        if self._collection is None:  # nothing stored yet: nothing to reuse
            return {"ids": [], "embeddings": [], "metadatas": [], "documents": []}
        return self._collection.get(**kwargs)

    def count(self) -> int:
        return 0 if self._collection is None else self._collection.count()


def _groups(planned: list[PlannedFile], group_chunks: int) -> Iterator[list[PlannedFile]]:
    """Consecutive files, as many per group as fit in ``group_chunks`` missing chunks (a larger file alone)."""
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


def _nothing() -> Any:
    from contextlib import nullcontext

    return nullcontext()


def write(
    collection: Any,
    embed: Callable[[list[str]], Any],
    planned: list[PlannedFile],
    *,
    report: IndexReport,
    progress: Callable[[int], None] = lambda n: None,
    max_batch: int = 5000,
    write_chunks: int | None = None,
    write_seconds: float | None = None,
    embed_chunks: int | None = None,
    guard: Callable[[], Any] = _nothing,
    clock: Callable[[], float] = time.monotonic,
) -> IndexReport:
    """Embed the missing chunks (``embed``: texts -> one vector each, in order) and store them, many files per
    upsert, holding ``guard()`` (the database's write lock) only while storing.

    Files are embedded together, ``embed_chunks`` chunks per call (EMBED_CHUNKS; the progress bar moves per
    call, so a single large file shows progress too). Embedded files are stored once they hold ``write_chunks``
    chunks (WRITE_CHUNKS) or once ``write_seconds`` (WRITE_SECONDS) have passed since the last store: a fast
    model writes few large upserts, a slow one still stores its work every few seconds. A file counts as done
    (``report.indexed``) only once it is stored.
    """
    write_chunks = write_chunks or WRITE_CHUNKS
    write_seconds = WRITE_SECONDS if write_seconds is None else write_seconds
    embed_chunks = embed_chunks or EMBED_CHUNKS
    waiting: list[PlannedFile] = []  # not embedded yet
    embedded: list[PlannedFile] = []  # embedded, not stored yet
    vectors: dict[str, Any] = {}
    last_store = clock()

    def embed_waiting() -> None:
        new, reused = group_vectors(collection, embed, waiting, progress=progress, embed_slice=embed_chunks)
        vectors.update(new)
        report.chunks_reused += reused
        embedded.extend(waiting)
        waiting.clear()

    def store() -> None:
        for group in _groups(embedded, write_chunks):
            with guard():
                write_group(collection, group, vectors, max_batch=max_batch)
            for item in group:
                report.indexed.append((item.path, len(item.ids)))
                report.chunks_written += len(item.missing)
                report.replaced += bool(item.stale)
                for i in item.missing:
                    vectors.pop(item.ids[i], None)
        embedded.clear()

    for item in planned:
        waiting.append(item)
        if sum(len(w.missing) for w in waiting) >= embed_chunks:
            embed_waiting()
        if embedded and (
            sum(len(e.missing) for e in embedded) >= write_chunks or clock() - last_store >= write_seconds
        ):
            store()
            last_store = clock()
    if waiting:
        embed_waiting()
    store()
    return report


def group_vectors(
    collection: Any,
    embed: Callable[[list[str]], Any],
    group: list[PlannedFile],
    *,
    progress: Callable[[int], None],
    embed_slice: int,
) -> tuple[dict[str, Any], int]:
    """A vector for every missing chunk of ``group``, by chunk id: copied from an identical stored chunk where
    there is one, else embedded -- longest texts together, ``embed_slice`` at a time, reporting progress."""
    vectors: dict[str, Any] = {}
    donors = {item.ids[i]: donor for item in group for i, donor in item.reuse.items()}
    if donors:
        stored = collection.get(ids=sorted(set(donors.values())), include=["embeddings"])
        by_id = dict(zip(stored["ids"], stored["embeddings"], strict=True))
        vectors = {id_: by_id[donor] for id_, donor in donors.items() if donor in by_id}
        progress(len(vectors))
    todo = [(item.ids[i], item.chunks[i].text) for item in group for i in item.missing if item.ids[i] not in vectors]
    reused = len(vectors)
    todo.sort(key=lambda pair: len(pair[1]), reverse=True)
    for start in range(0, len(todo), embed_slice):
        part = todo[start : start + embed_slice]
        for (id_, _), vector in zip(part, embed([text for _, text in part]), strict=True):
            vectors[id_] = vector
        progress(len(part))
    return vectors, reused


def write_group(collection: Any, group: list[PlannedFile], vectors: dict[str, Any], *, max_batch: int) -> None:
    """Store a group's new chunks, then delete its files' old versions: a crash in between leaves both, never
    neither, and the next run completes it."""
    rows = [(item, i) for item in group for i in item.missing]
    for start in range(0, len(rows), max_batch):
        part = rows[start : start + max_batch]
        collection.upsert(
            ids=[item.ids[i] for item, i in part],
            embeddings=[vectors[item.ids[i]] for item, i in part],
            documents=[item.chunks[i].text for item, i in part],
            metadatas=[item.metadatas[i] for item, i in part],
        )
    stale = [id_ for item in group for id_ in item.stale]
    for start in range(0, len(stale), max_batch):
        collection.delete(ids=stale[start : start + max_batch])


def prune(
    collection: Any,
    removed: dict[str, list[str]],
    *,
    max_batch: int,
    guard: Callable[[], Any] = _nothing,
) -> None:
    """Delete the chunks of files that are gone (after the writes: a renamed file's vectors were copied first)."""
    ids = [id_ for chunk_ids in removed.values() for id_ in chunk_ids]
    with guard():
        for start in range(0, len(ids), max_batch):
            collection.delete(ids=ids[start : start + max_batch])


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
    """How a file is identified in the index: its absolute path (as found: :func:`find_files` resolves symbolic
    links), with forward slashes, as valid UTF-8 (bytes of a name that are not UTF-8 written as ``\\xNN``)."""
    return printable(Path(os.path.abspath(path)).as_posix())


def chunk_id(source: str, version: str, index: int) -> str:
    """``{hash of the path}-{hash of the file version}-{chunk index}``: stable across runs."""
    return f"{hashlib.sha256(source.encode()).hexdigest()[:16]}-{version[:16]}-{index}"
