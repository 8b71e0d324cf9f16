"""``qwen3-rag search``: retrieve the nearest chunks by cosine similarity, rerank them, print them."""

from __future__ import annotations

import json
import logging
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from qwen3_rag._validation import one_line
from qwen3_rag.cli import lock, store
from qwen3_rag.cli.console import Console, display_path
from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.fingerprint import Fingerprint, load_embedder
from qwen3_rag.cli.options import EmbeddingRequest, Resolved
from qwen3_rag.embedder import Qwen3Embedder


@dataclass
class Hit:
    id: str
    source: str
    title: str
    chunk: int
    text: str
    similarity: float
    rerank_score: float | None = None
    position: dict[str, int] = field(default_factory=dict)
    """Where the chunk lies in its file: ``start``/``end`` (character offsets of the extracted text) and
    ``page``/``page_end`` (PDF, 1-based) or ``line``/``line_end`` (text and code, 1-based); what is known."""

    @property
    def score(self) -> float:
        return self.similarity if self.rerank_score is None else self.rerank_score

    @property
    def page(self) -> int | None:
        return self.position.get("page")

    @property
    def location(self) -> str:
        """``report.pdf p. 3``, ``report.pdf pp. 3-4``, ``src/app.py:10-42``, or the file alone."""
        path = display_path(self.source)
        first, last = self.position.get("page"), self.position.get("page_end")
        if first is not None:
            return f"{path} p. {first}" if last in (None, first) else f"{path} pp. {first}-{last}"
        first, last = self.position.get("line"), self.position.get("line_end")
        if first is not None:
            return f"{path}:{first}" if last in (None, first) else f"{path}:{first}-{last}"
        return path

    @property
    def label(self) -> str:
        """``report.pdf p. 3, chunk 5``: how warnings and ``ask``'s passages and sources name a hit."""
        return f"{self.location}, chunk {self.chunk}"

    @classmethod
    def from_record(cls, id_: str, text: str, metadata: dict[str, Any] | None, similarity: float) -> Hit:
        """A hit from a stored chunk: its id, text and metadata as the collection holds them."""
        metadata = metadata or {}
        return cls(
            id=id_,
            source=metadata.get("source", "?"),
            title=metadata.get("title", ""),
            chunk=int(metadata.get("chunk", 0)),
            text=text,
            similarity=similarity,
            position={k: int(metadata[k]) for k in _POSITION_KEYS if isinstance(metadata.get(k), int)},
        )


_POSITION_KEYS = ("start", "end", "page", "page_end", "line", "line_end")


def search(collection: Any, embedder: Qwen3Embedder, fingerprint: Fingerprint, query: str, *, top_k: int) -> list[Hit]:
    """The ``top_k`` nearest chunks by cosine similarity, best first."""
    return nearest(collection, embedder.embed_queries([query], dimensions=fingerprint.dimensions)[0], top_k=top_k)


def nearest(collection: Any, vector: Any, *, top_k: int) -> list[Hit]:
    """The ``top_k`` chunks nearest to the query ``vector``, best first."""
    count = collection.count()
    if count == 0:
        raise UsageError("the index is empty: run `qwen3-rag index PATH` first")
    result = collection.query(
        query_embeddings=[vector], n_results=min(top_k, count), include=["documents", "metadatas", "distances"]
    )
    return [
        Hit.from_record(id_, text, meta, 1.0 - float(distance))
        for id_, text, meta, distance in zip(
            result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0], strict=False
        )
    ]


def rerank(reranker: Any, query: str, hits: list[Hit], *, top_n: int) -> list[Hit]:
    """The ``top_n`` hits by reranker score (P(yes)), best first; ties keep the retrieval order.

    A question that leaves the reranker no room for a passage within --max-length is a UsageError (the reranker's
    message, which says how many tokens it takes)."""
    if not hits:
        return []
    try:
        with _naming_truncated(hits):
            results = reranker.rerank(query, [h.text for h in hits], top_n=top_n)
    except ValueError as exc:  # the core's input checks: here only "the instruction and query take N tokens"
        raise UsageError(
            f"the question is too long to rerank: {one_line(exc).replace('max_length', '--max-length')}, "
            "or pass --no-rerank"
        ) from None
    out = []
    for result in results:
        hit = hits[result.index]
        hit.rerank_score = float(result.score)
        out.append(hit)
    return out


@contextmanager
def _naming_truncated(hits: list[Hit]) -> Iterator[None]:
    """While reranking ``hits``: the core's truncation warning names the chunks it cut (``report.pdf p. 3, chunk
    5``) instead of their positions in the list."""

    thread = threading.get_ident()

    def name(record: logging.LogRecord) -> bool:
        indices = getattr(record, "truncated", None)
        if indices and record.thread == thread:
            named = "; ".join(hits[i].label for i in indices[:10] if i < len(hits))
            more = f" and {len(indices) - 10} more" if len(indices) > 10 else ""
            record.msg, record.args = f"{record.getMessage()} -- cut: {named}{more}", None
        return True

    logger = logging.getLogger("qwen3_rag")
    logger.addFilter(name)
    try:
        yield
    finally:
        logger.removeFilter(name)


def check_question_length(embedder: Qwen3Embedder, question: str, instruction: str, max_length: int) -> None:
    """A question longer than --max-length is refused, not cut: searching for the start of what was asked would
    answer another question (a document is cut at its end, as the card does; a question is what the user wants)."""
    tokens = embedder.count_tokens([question], instruction=instruction or None)[0] + 1  # + <|endoftext|>
    if tokens > max_length:
        raise UsageError(
            f"the question takes {tokens} tokens with its instruction, more than --max-length {max_length}: "
            "shorten it, or raise --max-length (up to 32768)"
        )


@contextmanager
def reading_index(opts: Resolved, console: Console | None = None) -> Iterator[Any]:
    """The collection named by --db and --collection, read under the shared lock (never while an index run writes)
    through a fresh client (never a stale view of another process's writes); both are let go on leaving."""
    db = opts.value("db", store.DEFAULT_DB)
    name = opts.value("collection", store.DEFAULT_COLLECTION)
    access = lock.AccessLock(store.require_db(db))
    try:
        with access.reading(console), store.connected(db, create=False) as client:
            yield store.require_collection(client, name, db)
    finally:
        access.close()


def index_embedder(
    opts: Resolved, console: Console | None = None, request: EmbeddingRequest | None = None
) -> tuple[Qwen3Embedder, Fingerprint]:
    """An embedder whose vectors match the index's (``request``: the embedding options asked for, by default those
    given on the command line), and the index's fingerprint. The model loads outside the lock."""
    where = store.index_label(opts.value("db", store.DEFAULT_DB), opts.value("collection", store.DEFAULT_COLLECTION))
    with reading_index(opts, console) as collection:
        recorded = store.recorded_fingerprint(collection, where)
    return load_embedder(opts.embedding_request() if request is None else request, recorded, where)


def load_reranker(opts: Resolved, instruction: str) -> Any:
    """The reranker of --reranker-model (or --reranker-url) with ``instruction`` ('' for the reranker's default)."""
    from qwen3_rag.prompts import DEFAULT_RERANKER_MODEL
    from qwen3_rag.reranker import Qwen3Reranker

    try:
        return Qwen3Reranker(
            opts.value("reranker_model", DEFAULT_RERANKER_MODEL),
            device=opts.device(),
            dtype=opts.dtype(),
            instruction=instruction or None,
            batch_size=max(1, opts.args.batch_size // 2),
            max_length=opts.args.max_length,
            show_progress=False,
            base_url=opts.value("reranker_url"),
            api_key=opts.value("api_key"),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def retrieve(opts: Resolved, console: Console) -> tuple[list[Any], Any]:
    args = opts.args
    if not args.query.strip():
        raise UsageError("the question is empty")
    if args.rerank and args.top_n > args.top_k:
        raise UsageError(f"--top-n ({args.top_n}) cannot exceed --top-k ({args.top_k}): rerank more candidates")
    embedder, fingerprint = index_embedder(opts, console)
    check_question_length(embedder, args.query, fingerprint.instruction, args.max_length)
    vector = embedder.embed_queries([args.query], dimensions=fingerprint.dimensions)[0]
    del embedder
    with reading_index(opts, console) as collection:  # read again: the index may have changed meanwhile
        hits = nearest(collection, vector, top_k=args.top_k if args.rerank else args.top_n)
    if not args.rerank:
        return hits[: args.top_n], fingerprint
    return rerank(load_reranker(opts, fingerprint.instruction), args.query, hits, top_n=args.top_n), fingerprint


def hit_json(rank: int, hit: Any) -> dict[str, Any]:
    return {
        "rank": rank,
        "source": display_path(hit.source),
        "title": hit.title,
        "chunk": hit.chunk,
        "page": hit.page,
        "position": hit.position,
        "score": round(hit.score, 6),
        "similarity": round(hit.similarity, 6),
        "rerank_score": None if hit.rerank_score is None else round(hit.rerank_score, 6),
        "text": hit.text,
        "id": hit.id,
    }


def score_line(hit: Any) -> str:
    if hit.rerank_score is None:
        return f"similarity {hit.similarity:.3f}"
    return f"score {hit.rerank_score:.3f}, similarity {hit.similarity:.3f}"


def run_search(opts: Resolved, console: Console) -> int:
    hits, _ = retrieve(opts, console)
    if opts.args.json:
        payload = {
            "query": opts.args.query,
            "reranked": opts.args.rerank,
            "results": [hit_json(r, h) for r, h in enumerate(hits, 1)],
        }
        print(json.dumps(payload, ensure_ascii=False, indent=2), file=console.out)
        return 0
    for rank, hit in enumerate(hits, 1):
        print(f"[{rank}] {hit.location}  chunk {hit.chunk}  {score_line(hit)}", file=console.out)
        print(textwrap.indent(hit.text.strip(), "    "), file=console.out)
        print(file=console.out)
    return 0
