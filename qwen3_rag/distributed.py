"""Embed a corpus at scale with Ray Data: one ``Qwen3Embedder`` per actor, output in plain parquet.

Install with ``pip install "qwen3-rag[ray]"``. The job reads a Ray ``Dataset``, parquet or JSONL files, a
folder of ``.txt``/``.md`` documents or a list of dicts; embeds it on a pool of actors
(``ray.data.ActorPoolStrategy``), each holding one model on CPU or on ``num_gpus_per_actor`` GPUs; and writes
parquet files with the columns ``id`` (string), ``text`` (string, optional) and ``vector``
(``list<float32>``), which pyarrow alone reads, without Ray. Each actor receives ``rows_per_call`` rows at a
time and hands them to ``Qwen3Embedder.embed_documents``, which sorts them by token length and cuts them into
forward passes of at most ``batch_size`` inputs and ``max_batch_tokens`` padded tokens.

The job is resumable: ids already in ``output_dir`` are filtered out before anything is embedded, and every
run adds new files next to the old ones (nothing is overwritten). A manifest in the folder records the
model, ``dimensions``, ``instruction`` and ``max_length``; resuming with other settings is refused, so one
folder never mixes incompatible vectors.

Example::

    from qwen3_rag.distributed import embed_corpus, iter_embeddings

    result = embed_corpus("docs/", "vectors/", model="Qwen/Qwen3-Embedding-0.6B", num_actors=4, num_gpus_per_actor=1)
    for batch in iter_embeddings("vectors/"):  # no Ray needed here
        ...  # batch.ids, batch.texts, batch.vectors (float32, shape (n, d))

``iter_embedded`` runs the same actor pool but streams the vectors back to the calling process instead of
writing files (what ``qwen3-rag index --ray`` uses to fill its Chroma collection); ``write_to_chroma`` upserts
an output folder into a Chroma collection.

Command line: ``python -m qwen3_rag.distributed SOURCE... --output DIR --model MODEL [--num-actors N] ...``.

Ray's processes listen on every network interface, even when asked not to: run a local Ray inside a private
network namespace, and a cluster on a private network (see ``docs/ray.md``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Union

import numpy as np

from qwen3_rag._validation import check_dimensions, check_instruction, check_positive
from qwen3_rag.prompts import DEFAULT_EMBEDDING_MODEL

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

logger = logging.getLogger("qwen3_rag")

__all__ = [
    "DOCUMENT_SUFFIXES",
    "MANIFEST_NAME",
    "CorpusEmbeddingResult",
    "EmbeddingBatch",
    "embed_corpus",
    "embed_corpus_to_chroma",
    "iter_embedded",
    "iter_embeddings",
    "main",
    "write_to_chroma",
]

DOCUMENT_SUFFIXES: tuple[str, ...] = (".txt", ".md")
"""File endings read from a folder of documents (each file is one text, its id the path relative to the folder)."""

MANIFEST_NAME = "_qwen3_rag_embeddings.json"
"""The settings file kept in ``output_dir``; the leading underscore hides it from parquet readers."""

_MANIFEST_FORMAT = 1
_INSTALL_HINT = 'the Ray corpus job needs Ray Data and pyarrow: pip install "qwen3-rag[ray]"'
_TABLE_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


@dataclass(frozen=True)
class CorpusEmbeddingResult:
    """What one ``embed_corpus`` run did."""

    output_dir: Path
    """The folder of parquet files (old and new)."""
    new_files: tuple[Path, ...]
    """The parquet files this run wrote (none when everything was already embedded)."""
    embedded: int
    """Rows this run embedded and wrote."""
    existing: int
    """Rows already in ``output_dir`` before this run; source rows with these ids were skipped."""
    dimension: int | None
    """Length of the vectors in the folder (``None`` while it is empty)."""
    seconds: float
    """Wall time of the call: actor start-up and model loading included, and Ray's start when the call started it."""
    skipped: tuple[tuple[str, str], ...] = ()
    """Documents of a folder that were not embedded, with the reason (``("notes/x.txt", "not UTF-8 text (byte
    12)")``): binary, undecodable or empty files, as the ``qwen3-rag`` CLI skips them. They are read again by
    the next run."""

    @property
    def total(self) -> int:
        """Rows in ``output_dir`` after this run."""
        return self.existing + self.embedded


class EmbeddingBatch(NamedTuple):
    """Rows of the job's output, as ``iter_embeddings`` yields them."""

    ids: list[str]
    texts: list[str] | None
    """``None`` when the job ran with ``store_text=False``."""
    vectors: np.ndarray
    """float32, shape (len(ids), dimension), unit length."""
    metadatas: list[dict[str, Any]] | None
    """The ``metadata_columns`` of each row, ``None`` when the job kept none."""


# ------------------------------------------------------------------------------------------------- the job


Source = Union["ray.data.Dataset", str, os.PathLike, Sequence[str | os.PathLike], Sequence[Mapping[str, Any]]]
"""What the job reads: a Ray Dataset, file or folder path(s), or rows (dicts) built in this process."""


def embed_corpus(
    source: Source,
    output_dir: str | os.PathLike,
    *,
    model: str | os.PathLike = DEFAULT_EMBEDDING_MODEL,
    dimensions: int | None = None,
    instruction: str | None = None,
    max_length: int = 8192,
    dtype: str | None = None,
    num_actors: int = 1,
    num_gpus_per_actor: float = 0,
    num_cpus_per_actor: float = 1,
    rows_per_call: int = 512,
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    id_column: str = "id",
    text_column: str = "text",
    metadata_columns: Sequence[str] = (),
    store_text: bool = True,
    resume: bool = True,
    address: str | None = None,
    ray_init_kwargs: dict[str, Any] | None = None,
) -> CorpusEmbeddingResult:
    """Embed every row of ``source`` whose id is not yet in ``output_dir``, on a pool of Ray actors.

    Args:
        source: a ``ray.data.Dataset``; parquet or JSONL file(s) (``.parquet``, ``.jsonl``, ``.json`` with one
            object per line) or a folder holding only such files; a folder of documents (``.txt``/``.md``,
            searched recursively, id = the path relative to the folder, e.g. ``guides/install.md``); or a list
            of dicts (rows built here, e.g. chunks). Tables need ``id_column`` and ``text_column``; ids must be
            unique, and are checked: a duplicate among the rows to embed is a ValueError before anything is
            embedded (a table's rows are read once, checked, then embedded). Documents are embedded whole (no
            chunking here: chunk first and pass the chunks as rows or a table); they are UTF-8 text (or
            UTF-16/UTF-32 with a byte-order mark), and a binary, undecodable or empty file is skipped and
            reported (``CorpusEmbeddingResult.skipped``, and a warning), as the ``qwen3-rag`` CLI does. Paths
            must be readable from every node.
        output_dir: folder of parquet files; created if missing. On a cluster: a path every node sees.
        model: Hub id or local folder, loaded once per actor (a cluster: on every node).
        dimensions: Matryoshka size (32..hidden size); ``None`` keeps the full vector.
        instruction: ``None`` for documents (the card: no instruction); an instruction for symmetric tasks.
        max_length: tokens per text, ``<|endoftext|>`` included; longer texts are cut.
        dtype: ``None``: bfloat16 on GPU, float32 on CPU.
        num_actors: actors in the pool; each loads one model.
        num_gpus_per_actor: GPUs reserved per actor (0: CPU; 0.5: two actors share a GPU).
        num_cpus_per_actor: CPUs reserved per actor; a CPU actor runs this many torch threads.
        rows_per_call: rows handed to an actor per call, sorted by token length inside it; also the most
            rows per output file and the unit of work lost if a run is interrupted.
        batch_size: inputs per forward pass (the core's ``batch_size``).
        max_batch_tokens: padded tokens per forward pass; ``None``: the core's default for the device.
        id_column, text_column: the source's columns; written as ``id`` (cast to string) and ``text``.
        metadata_columns: source columns copied to the output as they are (e.g. for Chroma metadata).
        store_text: write the ``text`` column; ``False`` keeps only ids as the reference to the source.
        resume: skip ids already in ``output_dir``; ``False`` refuses a folder that already holds output.
        address: Ray cluster to use (``"auto"``, ``"ray://head:10001"``); ``None`` connects to
            ``RAY_ADDRESS`` if set, else starts a local Ray. An already initialised Ray is used as it is.
        ray_init_kwargs: extra ``ray.init`` arguments (``runtime_env``, ``num_cpus``, ``_temp_dir``, ...).

    Returns:
        A ``CorpusEmbeddingResult`` with the rows embedded by this run and the files it wrote.
    """
    started = time.perf_counter()
    job = _Job.checked(
        model=model, dimensions=dimensions, instruction=instruction, max_length=max_length, dtype=dtype,
        num_actors=num_actors, num_gpus_per_actor=num_gpus_per_actor, num_cpus_per_actor=num_cpus_per_actor,
        rows_per_call=rows_per_call, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
        id_column=id_column, text_column=text_column, metadata_columns=metadata_columns, store_text=store_text,
    )  # fmt: skip
    ray = _import_ray()
    output = Path(output_dir)
    plan = _plan_source(ray, source, job)
    done_ids = _prepare_output(output, job.settings(), resume=resume)
    before = set(_parquet_files(output))
    if plan.kind == "documents" and len(done_ids):
        done = set(done_ids.to_pylist())
        plan = replace(plan, names=tuple(n for n in plan.names if n not in done))

    if not plan.empty:  # a folder with nothing new does not start Ray
        with _RaySession(ray, address, ray_init_kwargs):
            embedded = job.embed(ray, _source_dataset(ray, plan, done_ids, rows_per_call=job.rows_per_call))
            if embedded is not None:
                output.mkdir(parents=True, exist_ok=True)
                embedded.write_parquet(str(output))

    pq = _import_parquet()
    new_files = tuple(sorted(set(_parquet_files(output)) - before))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in new_files)
    skipped: tuple[tuple[str, str], ...] = ()
    if plan.kind == "documents" and not plan.empty:
        written = {i for f in new_files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}
        skipped = _skipped_documents(plan, written)
    seconds = time.perf_counter() - started
    result = CorpusEmbeddingResult(output, new_files, rows, len(done_ids), _output_dimension(output), seconds, skipped)
    logger.info("embedded %d rows (%d already there) into %s in %.1f s", rows, len(done_ids), output, seconds)
    return result


def iter_embedded(
    source: Source,
    *,
    model: str | os.PathLike = DEFAULT_EMBEDDING_MODEL,
    dimensions: int | None = None,
    instruction: str | None = None,
    max_length: int = 8192,
    dtype: str | None = None,
    num_actors: int = 1,
    num_gpus_per_actor: float = 0,
    num_cpus_per_actor: float = 1,
    rows_per_call: int = 512,
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    id_column: str = "id",
    text_column: str = "text",
    metadata_columns: Sequence[str] = (),
    store_text: bool = True,
    address: str | None = None,
    ray_init_kwargs: dict[str, Any] | None = None,
) -> Iterator[EmbeddingBatch]:
    """Embed ``source`` on the actor pool like ``embed_corpus``, streaming the rows back to this process.

    No output folder (so no shared storage is needed on a cluster) and no resuming: the caller keeps track
    of what it wrote -- e.g. the CLI, whose Chroma collection already records which chunks are indexed. Batches
    arrive in no particular order, up to ``rows_per_call`` rows each. Ray stays initialised until the
    iteration ends (or the generator is closed). Arguments as in ``embed_corpus``; documents of a folder that
    are skipped (binary, undecodable, empty) are named in a warning of the ``qwen3_rag`` logger at the end.
    """
    job = _Job.checked(
        model=model, dimensions=dimensions, instruction=instruction, max_length=max_length, dtype=dtype,
        num_actors=num_actors, num_gpus_per_actor=num_gpus_per_actor, num_cpus_per_actor=num_cpus_per_actor,
        rows_per_call=rows_per_call, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
        id_column=id_column, text_column=text_column, metadata_columns=metadata_columns, store_text=store_text,
    )  # fmt: skip
    ray = _import_ray()
    plan = _plan_source(ray, source, job)
    if plan.empty:
        return
    seen: set[str] = set()
    with _RaySession(ray, address, ray_init_kwargs):
        embedded = job.embed(ray, _source_dataset(ray, plan, None, rows_per_call=job.rows_per_call))
        if embedded is not None:
            for table in embedded.iter_batches(batch_size=None, batch_format="pyarrow"):
                for record_batch in table.to_batches():
                    batch = _embedding_batch(record_batch)
                    if plan.kind == "documents":
                        seen.update(batch.ids)
                    yield batch
    if plan.kind == "documents":
        _skipped_documents(plan, seen)


@dataclass(frozen=True)
class _Job:
    """The checked settings of one job, and the actor-pool stage built from them."""

    model: str
    dimensions: int | None
    instruction: str | None
    max_length: int
    dtype: str | None
    num_actors: int
    num_gpus_per_actor: float
    num_cpus_per_actor: float
    rows_per_call: int
    batch_size: int
    max_batch_tokens: int | None
    id_column: str
    text_column: str
    metadata_columns: tuple[str, ...]
    store_text: bool

    @classmethod
    def checked(cls, **kwargs: Any) -> _Job:
        for name in ("max_length", "num_actors", "rows_per_call", "batch_size"):
            check_positive(kwargs[name], name)
        check_positive(kwargs["max_batch_tokens"], "max_batch_tokens", allow_none=True)
        _check_resources(kwargs["num_gpus_per_actor"], kwargs["num_cpus_per_actor"])
        for name in ("id_column", "text_column"):
            if not isinstance(kwargs[name], str):
                raise TypeError(f"{name} must be a column name (str), got {type(kwargs[name]).__name__}")
        return cls(**{
            **kwargs,
            "model": os.fspath(kwargs["model"]),
            "dimensions": check_dimensions(kwargs["dimensions"]),
            "instruction": check_instruction(kwargs["instruction"]) or None,
            "metadata_columns": _check_metadata_columns(kwargs["metadata_columns"]),
        })  # fmt: skip

    def settings(self) -> dict[str, Any]:
        """What makes vectors comparable: recorded in, and checked against, the output folder's manifest."""
        return {"model": self.model, "dimensions": self.dimensions, "instruction": self.instruction,
                "max_length": self.max_length}  # fmt: skip

    def embed(self, ray: Any, dataset: ray.data.Dataset) -> ray.data.Dataset | None:
        """``dataset`` through the actor pool; ``None`` when it turned out to be empty."""
        spare_cpus = ray.cluster_resources().get("CPU", 0) - self.num_actors * self.num_cpus_per_actor
        if spare_cpus < 1:
            # The actors would hold every CPU from the start and the reading tasks would wait for them
            # forever (2 actors x 1 CPU on a 2-CPU machine): read the rows to embed first, then start the actors.
            logger.info("%.3g CPUs left beside the actors: reading the corpus before embedding it", spare_cpus)
            dataset = dataset.materialize()
            if dataset.count() == 0:
                return None
        device = "cpu" if self.num_gpus_per_actor == 0 else None  # None: the GPU that Ray assigned to the actor
        embedder_kwargs = {"device": device, "dtype": self.dtype, "dimensions": self.dimensions,
                           "max_length": self.max_length, "batch_size": self.batch_size,
                           "max_batch_tokens": self.max_batch_tokens, "show_progress": False}  # fmt: skip
        actor_kwargs = {"model": self.model, "embedder_kwargs": embedder_kwargs, "instruction": self.instruction,
                        "store_text": self.store_text, "num_threads": max(1, int(self.num_cpus_per_actor))}  # fmt: skip
        return dataset.map_batches(
            _EmbedActor,
            fn_constructor_kwargs=actor_kwargs,
            compute=ray.data.ActorPoolStrategy(size=self.num_actors),
            batch_size=self.rows_per_call,
            batch_format="pyarrow",
            num_cpus=self.num_cpus_per_actor,
            num_gpus=self.num_gpus_per_actor,
        )


def iter_embeddings(output_dir: str | os.PathLike, *, batch_rows: int = 1000) -> Iterator[EmbeddingBatch]:
    """The rows of a job's output folder in batches of at most ``batch_rows``; needs pyarrow only, not Ray."""
    batch_rows = check_positive(batch_rows, "batch_rows")
    pq = _import_parquet()
    for path in _parquet_files(Path(output_dir)):
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            yield _embedding_batch(record_batch)


def _embedding_batch(record_batch: pa.RecordBatch) -> EmbeddingBatch:
    names = record_batch.schema.names
    extra = [n for n in names if n not in ("id", "text", "vector")]
    metadatas = None
    if extra:
        columns = {n: record_batch.column(n).to_pylist() for n in extra}
        metadatas = [{n: columns[n][i] for n in extra} for i in range(record_batch.num_rows)]
    return EmbeddingBatch(
        ids=record_batch.column("id").to_pylist(),
        texts=record_batch.column("text").to_pylist() if "text" in names else None,
        vectors=_vectors(record_batch.column("vector")),
        metadatas=metadatas,
    )


def write_to_chroma(
    output_dir: str | os.PathLike,
    collection: Any,
    *,
    db: str | os.PathLike | None = None,
    batch_rows: int = 1000,
) -> int:
    """Upsert every row of a job's output folder into a Chroma collection; returns the number of rows.

    ``collection`` is a ``chromadb`` collection (anything with ``upsert(ids=, embeddings=, documents=,
    metadatas=)``, from a ``PersistentClient`` or a ``HttpClient`` alike), or the name of one in ``db``: a
    database folder or a Chroma server URL (``http://HOST:PORT``, ``https://HOST[:PORT]``), opened by
    :func:`qwen3_rag.chroma.open_chroma_client` exactly as ``qwen3-rag --db`` opens it (tenant, database and
    credentials from ``CHROMA_TENANT``, ``CHROMA_DATABASE``, ``CHROMA_API_KEY``, ...). A named collection that
    does not exist yet is created with the cosine space and a ``Qwen3EmbeddingFunction`` of the folder's model,
    ``dimensions`` and ``max_length`` (from its manifest), so that ``query_texts`` later embed queries to match.
    Upserting is idempotent, so rerunning after a resumed job is safe. The collection's embedding function is
    not called for these rows, but it must be the same model (and ``dimensions``) for the queries later.
    """
    batch_rows = check_positive(batch_rows, "batch_rows")
    if isinstance(collection, str):
        if db is None:
            raise TypeError("write_to_chroma(..., collection=NAME) needs db= (a folder or a Chroma server URL)")
        from qwen3_rag.chroma import close_chroma_client

        client, collection = _named_collection(Path(output_dir), collection, db)
        try:
            return _upsert_output(output_dir, collection, batch_rows)
        finally:
            close_chroma_client(client)
    if db is not None:
        raise TypeError("db= names where a collection NAME lives; pass either a collection or a name with db=")
    return _upsert_output(output_dir, collection, batch_rows)


def _upsert_output(output_dir: str | os.PathLike, collection: Any, batch_rows: int) -> int:
    written = 0
    for batch in iter_embeddings(output_dir, batch_rows=batch_rows):
        kwargs: dict[str, Any] = {"ids": batch.ids, "embeddings": batch.vectors}
        if batch.texts is not None:
            kwargs["documents"] = batch.texts
        if batch.metadatas is not None:
            kwargs["metadatas"] = batch.metadatas
        collection.upsert(**kwargs)
        written += len(batch.ids)
    return written


def _named_collection(output: Path, name: str, db: str | os.PathLike) -> tuple[Any, Any]:
    """(client, collection) for ``name`` in ``db``, created with the output folder's embedding settings."""
    from qwen3_rag.chroma import Qwen3EmbeddingFunction, check_collection_name, close_chroma_client, open_chroma_client

    check_collection_name(name)
    manifest_path = output / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{output} holds no {MANIFEST_NAME}: not an output folder of embed_corpus")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    kwargs: dict[str, Any] = {"dimensions": manifest.get("dimensions"), "max_length": manifest.get("max_length", 8192)}
    if manifest.get("instruction"):  # a symmetric task: queries carry the documents' instruction
        kwargs["instruction"] = manifest["instruction"]
    function = Qwen3EmbeddingFunction(manifest["model"], **kwargs)
    client = open_chroma_client(db)
    try:
        collection = client.get_or_create_collection(
            name, embedding_function=function, configuration={"hnsw": {"space": "cosine"}}
        )
    except BaseException:
        close_chroma_client(client)
        raise
    return client, collection


def embed_corpus_to_chroma(
    source: Source,
    output_dir: str | os.PathLike,
    collection: Any,
    *,
    db: str | os.PathLike | None = None,
    batch_rows: int = 1000,
    **embed_corpus_kwargs: Any,
) -> CorpusEmbeddingResult:
    """``embed_corpus`` then ``write_to_chroma`` of the whole output folder (rows of earlier runs included,
    so a run interrupted between the two steps heals on the next). ``collection``: a chromadb collection, or
    the name of one in ``db`` (a folder or a Chroma server URL; see ``write_to_chroma``). Only this process
    talks to Chroma: the actors write parquet, so a server reachable from here is enough. Keyword arguments go
    to ``embed_corpus``."""
    if isinstance(collection, str):
        from qwen3_rag.chroma import check_collection_name

        check_collection_name(collection)  # before anything is embedded
        if db is None:
            raise TypeError("embed_corpus_to_chroma(..., collection=NAME) needs db= (a folder or a server URL)")
    result = embed_corpus(source, output_dir, **embed_corpus_kwargs)
    write_to_chroma(output_dir, collection, db=db, batch_rows=batch_rows)
    return result


# ------------------------------------------------------------------------------------- inside Ray workers


class _EmbedActor:
    """One model per actor; each call embeds one batch of rows (sorted by token length inside the core)."""

    def __init__(
        self,
        model: str,
        embedder_kwargs: dict[str, Any],
        instruction: str | None,
        store_text: bool,
        num_threads: int,
    ) -> None:
        import torch

        from qwen3_rag.embedder import Qwen3Embedder

        if embedder_kwargs.get("device") == "cpu":
            torch.set_num_threads(num_threads)
        self._embedder = Qwen3Embedder(model, **embedder_kwargs)
        self._instruction = instruction
        self._store_text = store_text

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        texts = batch.column("text").to_pylist()
        if self._instruction:
            vectors = self._embedder.embed(texts, instruction=self._instruction)
        else:
            vectors = self._embedder.embed_documents(texts)
        columns = {"id": batch.column("id")}
        if self._store_text:
            columns["text"] = batch.column("text")
        columns["vector"] = _list_array(vectors)
        columns.update({n: batch.column(n) for n in batch.schema.names if n not in ("id", "text")})
        return pa.table(columns)


def _select_rows(
    batch: pa.Table,
    *,
    id_column: str,
    text_column: str,
    metadata_columns: Sequence[str],
    done_ids: pa.Array | None,
) -> pa.Table:
    """The source's id (as string), text and metadata columns, without rows already embedded."""
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = [c for c in (id_column, text_column, *metadata_columns) if c not in batch.schema.names]
    if missing:
        msg = f"the source has no column(s) {missing}; it has {batch.schema.names} (set id_column/text_column)"
        raise ValueError(msg)
    ids = batch.column(id_column).cast(pa.string())
    texts = batch.column(text_column)
    if ids.null_count:
        raise ValueError(f"column {id_column!r} has {ids.null_count} empty (null) ids; every row needs an id")
    if texts.null_count:
        bad = ids.filter(texts.is_null()).to_pylist()[:5]
        raise ValueError(f"column {text_column!r} is null for ids {bad}; every row needs a text")
    if not pa.types.is_string(texts.type) and not pa.types.is_large_string(texts.type):
        raise ValueError(f"column {text_column!r} must hold strings, got {texts.type}")
    table = pa.table({"id": ids, "text": texts, **{n: batch.column(n) for n in metadata_columns}})
    if done_ids is not None and len(done_ids):
        table = table.filter(pc.invert(pc.is_in(table.column("id"), value_set=done_ids)))
    return table


def _read_documents(batch: pa.Table, *, root: str, problems: bool = False) -> pa.Table:
    """Read the files named by the ``id`` column (paths relative to ``root``) into a ``text`` column, decoded as
    the ``qwen3-rag`` CLI decodes text: a byte-order mark chooses UTF-8, UTF-16 or UTF-32, else the bytes must
    be UTF-8 with no NUL in the first 8 KiB; newlines normalised. A file that is binary, undecodable or empty
    is left out (never decoded with replacement characters); with ``problems``, every file is kept, with the
    reason in a ``problem`` column (null for a readable file) and a null text."""
    from pathlib import Path

    import pyarrow as pa

    from qwen3_rag._text import UndecodableText, decode_text, normalise_newlines

    def decode(data: bytes) -> tuple[str | None, str | None]:
        try:
            text = decode_text(data)
        except UndecodableText as exc:
            return None, str(exc)
        if not text.strip():
            return None, "empty file"
        return normalise_newlines(text), None

    ids = batch.column("id").to_pylist()
    read = []
    for name in ids:
        try:
            read.append(decode((Path(root) / name).read_bytes()))
        except OSError as exc:
            read.append((None, f"unreadable ({exc.strerror or type(exc).__name__})"))
    if problems:
        return pa.table({"id": pa.array(ids, pa.string()), "text": pa.array([t for t, _ in read], pa.string()),
                         "problem": pa.array([p for _, p in read], pa.string())})  # fmt: skip
    kept = [(i, text) for i, (text, _) in zip(ids, read, strict=True) if text is not None]
    return pa.table({"id": pa.array([i for i, _ in kept], pa.string()),
                     "text": pa.array([t for _, t in kept], pa.string())})  # fmt: skip


def _skipped_documents(plan: _SourcePlan, written: set[str]) -> tuple[tuple[str, str], ...]:
    """The planned documents that were not written, with the reason (read again here), each logged as a warning."""
    import pyarrow as pa

    missing = [n for n in plan.names if n not in written]
    if not missing:
        return ()
    table = _read_documents(pa.table({"id": pa.array(missing, pa.string())}), root=plan.paths[0], problems=True)
    problems = table.column("problem").to_pylist()
    skipped = tuple((name, problem or "not embedded") for name, problem in zip(missing, problems, strict=True))
    for name, reason in skipped:
        logger.warning("skipped %s: %s", Path(plan.paths[0]) / name, reason)
    return skipped


def _by_value(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``fn`` that Ray's cloudpickle ships by value (it cannot be imported by name), so that the
    workers reading and filtering rows never import ``qwen3_rag`` -- and with it torch: seconds of start-up
    and hundreds of MB per worker. ``fn`` may only use builtins and the modules it imports itself."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = f"_by_value.<locals>.{fn.__name__}"
    return copy


def _list_array(vectors: np.ndarray) -> pa.Array:
    """A float32 matrix as a plain ``list<float32>`` column (not Ray's tensor extension type)."""
    import pyarrow as pa

    n, d = vectors.shape
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int64), type=pa.int64())
    return pa.LargeListArray.from_arrays(offsets, flat).cast(pa.list_(pa.float32()))


def _vectors(column: pa.Array) -> np.ndarray:
    """A ``list<float32>`` column of equal-length lists as a float32 matrix."""
    n = len(column)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if flat.size % n:
        raise ValueError("the vector column holds lists of different lengths")
    return flat.reshape(n, flat.size // n)


# ------------------------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class _SourcePlan:
    kind: str  # "dataset" | "rows" | "parquet" | "json" | "documents"
    dataset: Any = None
    rows: tuple[Mapping[str, Any], ...] = ()
    paths: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # documents still to embed, relative to paths[0]
    select: tuple[str, str, tuple[str, ...]] = ("id", "text", ())

    @property
    def empty(self) -> bool:
        """Known here, before Ray starts, to hold nothing to embed."""
        return (self.kind == "documents" and not self.names) or (self.kind == "rows" and not self.rows)


def _plan_source(ray: Any, source: Any, job: _Job) -> _SourcePlan:
    """What to read; for a folder of documents, the file names (listed here, on the driver)."""
    select = (job.id_column, job.text_column, job.metadata_columns)
    if isinstance(source, ray.data.Dataset):
        return _SourcePlan("dataset", dataset=source, select=select)
    if isinstance(source, Sequence) and not isinstance(source, str) and all(isinstance(r, Mapping) for r in source[:1]):
        # A list of dicts, or an empty list: nothing to read from files.
        bad = next((i for i, row in enumerate(source) if not isinstance(row, Mapping)), None)
        if bad is not None:
            raise TypeError(f"source[{bad}] must be a dict like the other rows, got {type(source[bad]).__name__}")
        ids = [str(row[job.id_column]) for row in source if row.get(job.id_column) is not None]
        _check_unique(ids, f"column {job.id_column!r} of the rows")
        return _SourcePlan("rows", rows=tuple(source), select=select)
    kind, paths = _classify_source(source)
    if kind != "documents":
        return _SourcePlan(kind, paths=tuple(paths), select=select)
    if select != ("id", "text", ()):
        raise ValueError("a folder of documents has only the columns 'id' (the relative path) and 'text'")
    return _SourcePlan("documents", paths=tuple(paths), names=tuple(_document_names(Path(paths[0]))))


def _source_dataset(ray: Any, plan: _SourcePlan, done_ids: pa.Array | None, *, rows_per_call: int) -> ray.data.Dataset:
    """The rows still to embed, as a Dataset of ``id``, ``text`` and metadata columns in small blocks."""
    id_column, text_column, metadata_columns = plan.select
    blocks = max(1, -(-max(len(plan.names), len(plan.rows)) // rows_per_call))
    if plan.kind == "documents":
        dataset = ray.data.from_items([{"id": n} for n in plan.names], override_num_blocks=blocks)
        read = _by_value(_read_documents)
        dataset = dataset.map_batches(read, fn_kwargs={"root": plan.paths[0]}, batch_format="pyarrow")
        done_ids = None  # already left out of plan.names
    elif plan.kind == "rows":
        dataset = ray.data.from_items(list(plan.rows), override_num_blocks=blocks)
    elif plan.kind == "dataset":
        dataset = plan.dataset
    elif plan.kind == "parquet":
        columns = [id_column, text_column, *metadata_columns]
        dataset = ray.data.read_parquet(list(plan.paths), columns=columns)
    else:
        dataset = ray.data.read_json(list(plan.paths), lines=True)
    select = {"id_column": id_column, "text_column": text_column, "metadata_columns": list(metadata_columns),
              "done_ids": done_ids if done_ids is not None and len(done_ids) else None}  # fmt: skip
    dataset = dataset.map_batches(_by_value(_select_rows), fn_kwargs=select, batch_format="pyarrow")
    # Blocks of at most rows_per_call rows, so that one large file is still spread over every actor.
    dataset = dataset.repartition(target_num_rows_per_block=rows_per_call)
    if plan.kind in ("dataset", "parquet", "json"):
        # Ids are promised unique: read the rows to embed once, check their ids, and embed what was read.
        dataset = dataset.materialize()
        ids = [b.column("id") for b in dataset.select_columns(["id"]).iter_batches(batch_format="pyarrow")]
        _check_unique(ids, f"column {id_column!r} of the source")
    return dataset


def _check_unique(ids: Sequence[Any], where: str) -> None:
    """A ValueError naming the first few ids that occur more than once (``ids``: strings or pyarrow arrays)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not ids:
        return
    if isinstance(ids[0], str):
        array = pa.array(list(ids), pa.string())
    else:
        array = pa.chunked_array(list(ids), pa.string()).combine_chunks()
    if len(pc.unique(array)) == len(array):
        return
    counts = pc.value_counts(array)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    names = repeated.field("values").to_pylist()
    shown = ", ".join(repr(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    msg = (
        f"ids must be unique, but {len(names)} occur more than once in {where}: {shown}. Nothing was embedded: "
        "give every row its own id"
    )
    raise ValueError(msg)


def _classify_source(source: Any) -> tuple[str, list[str]]:
    """("parquet" | "json", files) or ("documents", [folder]) for a path or a list of paths."""
    if isinstance(source, (str, os.PathLike)):
        source = [source]
    try:
        paths = [Path(p) for p in source]
    except TypeError:
        msg = f"source must be a ray.data.Dataset, a path or a list of paths, got {type(source).__name__}"
        raise TypeError(msg) from None
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"source path(s) not found: {missing}")
    if len(paths) == 1 and paths[0].is_dir():
        files = [f for f in paths[0].rglob("*") if f.is_file() and not f.name.startswith((".", "_"))]
        kinds = {_TABLE_SUFFIXES.get(f.suffix.lower()) for f in files}
        if files and len(kinds) == 1 and None not in kinds:
            return kinds.pop(), [str(paths[0])]  # type: ignore[return-value]
        return "documents", [str(paths[0])]
    kinds = {_TABLE_SUFFIXES.get(p.suffix.lower()) if p.is_file() else None for p in paths}
    if len(kinds) != 1 or None in kinds:
        msg = (
            "source must be one folder, or files that are all .parquet or all .jsonl/.json; "
            f"got {[str(p) for p in paths]}"
        )
        raise ValueError(msg)
    return kinds.pop(), [str(p) for p in paths]  # type: ignore[return-value]


def _document_names(root: Path) -> list[str]:
    names = sorted(
        f.relative_to(root).as_posix()
        for f in root.rglob("*")
        if f.is_file() and f.suffix.lower() in DOCUMENT_SUFFIXES and not f.name.startswith(".")
    )
    if not names:
        raise ValueError(f"no {'/'.join(DOCUMENT_SUFFIXES)} documents under {root}")
    return names


# ------------------------------------------------------------------------------------------------- output


def _prepare_output(output: Path, settings: dict[str, Any], *, resume: bool) -> pa.Array:
    """Check or write the manifest; the ids already embedded in ``output``."""
    import pyarrow as pa

    pq = _import_parquet()
    files = _parquet_files(output)
    manifest_path = output / MANIFEST_NAME
    if files and not resume:
        msg = f"{output} already holds {len(files)} parquet file(s); pass resume=True or choose an empty folder"
        raise FileExistsError(msg)
    if manifest_path.is_file():
        recorded = json.loads(manifest_path.read_text(encoding="utf-8"))
        differing = {k: (recorded.get(k), v) for k, v in settings.items() if recorded.get(k) != v}
        if differing and files:
            details = ", ".join(f"{k}: folder has {old!r}, this run {new!r}" for k, (old, new) in differing.items())
            msg = (
                f"{output} holds vectors made with other settings ({details}); vectors of different settings "
                "must not share an index: use another output_dir (or the same settings to resume)"
            )
            raise ValueError(msg)
    output.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps({"format": _MANIFEST_FORMAT, **settings}, indent=2) + "\n", encoding="utf-8")
    chunks = []
    for f in files:
        try:
            chunks.append(pq.read_table(f, columns=["id"]).column("id"))
        except Exception as exc:
            msg = f"cannot read the ids of {f} ({exc}); a run interrupted while writing? delete that file and rerun"
            raise ValueError(msg) from exc
    if not chunks:
        return pa.array([], pa.string())
    return pa.chunked_array(chunks, pa.string()).combine_chunks()


def _parquet_files(output: Path) -> list[Path]:
    if not output.is_dir():
        return []
    return sorted(p for p in output.glob("*.parquet") if p.is_file() and not p.name.startswith((".", "_")))


def _output_dimension(output: Path) -> int | None:
    pq = _import_parquet()
    for f in _parquet_files(output):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=1, columns=["vector"]):
            if batch.num_rows:
                return len(batch.column("vector")[0])
    return None


# ---------------------------------------------------------------------------------------------- plumbing


class _RaySession:
    """Initialise Ray unless it already is; shut down only what this object started."""

    def __init__(self, ray: Any, address: str | None, init_kwargs: dict[str, Any] | None) -> None:
        self._ray, self._address, self._init_kwargs = ray, address, dict(init_kwargs or {})
        self._started = False

    def __enter__(self) -> None:
        if self._ray.is_initialized():
            if self._address is not None or self._init_kwargs:
                logger.warning("Ray is already initialised; address and ray_init_kwargs are ignored")
            return
        kwargs = dict(self._init_kwargs)
        if self._address is None and not os.environ.get("RAY_ADDRESS"):
            kwargs.setdefault("include_dashboard", False)  # a local Ray: no dashboard server
        self._ray.init(address=self._address, **kwargs)
        self._started = True

    def __exit__(self, *exc_info: object) -> None:
        if self._started:
            self._ray.shutdown()


def _import_ray() -> Any:
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
    return ray


def _import_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(f"reading the corpus job's output needs pyarrow: pip install pyarrow ({exc})") from exc
    return pq


def _check_resources(num_gpus_per_actor: Any, num_cpus_per_actor: Any) -> None:
    for name, value in (("num_gpus_per_actor", num_gpus_per_actor), ("num_cpus_per_actor", num_cpus_per_actor)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if num_gpus_per_actor == 0 and num_cpus_per_actor == 0:
        raise ValueError("a CPU actor needs num_cpus_per_actor > 0")


def _check_metadata_columns(columns: Any) -> tuple[str, ...]:
    if isinstance(columns, str):
        raise TypeError(f"metadata_columns must be a list of column names, got a single str; use [{columns!r}]")
    columns = tuple(columns)
    reserved = {"id", "text", "vector"} & set(columns)
    if reserved:
        raise ValueError(f"metadata_columns must not include the output's own columns {sorted(reserved)}")
    return columns


# ------------------------------------------------------------------------------------------ command line


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m qwen3_rag.distributed SOURCE... --output DIR --model MODEL [options]``; prints a JSON summary."""
    parser = argparse.ArgumentParser(
        prog="python -m qwen3_rag.distributed",
        description="Embed a corpus (parquet/JSONL files or a folder of .txt/.md documents) on a Ray actor pool "
        "into parquet files (id, text, vector); resumable.",
    )
    parser.add_argument("source", nargs="+", help="a folder, or parquet / JSONL file(s)")
    parser.add_argument("--output", "-o", required=True, help="output folder of parquet files")
    parser.add_argument("--model", default=DEFAULT_EMBEDDING_MODEL, help="Hub id or local folder")
    parser.add_argument("--dimensions", type=int, default=None, help="Matryoshka size (default: full)")
    parser.add_argument("--instruction", default=None, help="instruction for symmetric tasks (default: none)")
    parser.add_argument("--max-length", type=int, default=8192)
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: per device)")
    parser.add_argument("--num-actors", type=int, default=1)
    parser.add_argument("--num-gpus-per-actor", type=float, default=0)
    parser.add_argument("--num-cpus-per-actor", type=float, default=1)
    parser.add_argument("--rows-per-call", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batch-tokens", type=int, default=None)
    parser.add_argument("--id-column", default="id")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--metadata-column", action="append", default=[], dest="metadata_columns")
    parser.add_argument("--no-text", action="store_true", help="do not store the text (ids are the reference)")
    parser.add_argument("--no-resume", action="store_true", help="refuse an output folder that holds output")
    parser.add_argument("--address", default=None, help='Ray cluster ("auto", "ray://head:10001"); default local')
    args = parser.parse_args(argv)
    source = args.source[0] if len(args.source) == 1 else args.source
    result = embed_corpus(
        source, args.output, model=args.model, dimensions=args.dimensions, instruction=args.instruction,
        max_length=args.max_length, dtype=args.dtype, num_actors=args.num_actors,
        num_gpus_per_actor=args.num_gpus_per_actor, num_cpus_per_actor=args.num_cpus_per_actor,
        rows_per_call=args.rows_per_call, batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
        id_column=args.id_column, text_column=args.text_column, metadata_columns=args.metadata_columns,
        store_text=not args.no_text, resume=not args.no_resume, address=args.address,
    )  # fmt: skip
    summary = asdict(result)
    summary.update(output_dir=str(result.output_dir), new_files=[str(f) for f in result.new_files])
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
