"""``qwen3-rag search``: retrieve the nearest chunks by cosine similarity, rerank them, print them."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from typing import Any

from qwen3_rag.cli import store
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

    @property
    def score(self) -> float:
        return self.similarity if self.rerank_score is None else self.rerank_score

    @classmethod
    def from_record(cls, id_: str, text: str, metadata: dict[str, Any], similarity: float) -> Hit:
        """A hit from a stored chunk: its id, text and metadata as the collection holds them."""
        return cls(
            id=id_,
            source=metadata.get("source", "?"),
            title=metadata.get("title", ""),
            chunk=int(metadata.get("chunk", 0)),
            text=text,
            similarity=similarity,
        )


def search(collection: Any, embedder: Qwen3Embedder, fingerprint: Fingerprint, query: str, *, top_k: int) -> list[Hit]:
    """The ``top_k`` nearest chunks by cosine similarity, best first."""
    count = collection.count()
    if count == 0:
        raise UsageError("the index is empty: run `qwen3-rag index PATH` first")
    vector = embedder.embed_queries([query], dimensions=fingerprint.dimensions)[0]
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


def open_index(opts: Resolved, request: EmbeddingRequest | None = None) -> tuple[Any, Qwen3Embedder, Fingerprint]:
    """The collection named by --db and --collection, and an embedder whose vectors match it (``request``: the
    embedding options asked for, by default those given on the command line)."""
    db = opts.value("db", store.DEFAULT_DB)
    name = opts.value("collection", store.DEFAULT_COLLECTION)
    where = store.index_label(db, name)
    client = store.open_client(db, create=False)
    collection = store.require_collection(client, name, db)
    recorded = store.recorded_fingerprint(collection, where)
    embedder, fingerprint = load_embedder(opts.embedding_request() if request is None else request, recorded, where)
    return collection, embedder, fingerprint


def load_reranker(opts: Resolved, instruction: str) -> Any:
    """The reranker of --reranker-model (or --reranker-url) with ``instruction`` ('' for the reranker's default)."""
    from qwen3_rag.prompts import DEFAULT_RERANKER_MODEL
    from qwen3_rag.reranker import Qwen3Reranker

    try:
        return Qwen3Reranker(
            opts.value("reranker_model", DEFAULT_RERANKER_MODEL),
            device=opts.value("device"),
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
    collection, embedder, fingerprint = open_index(opts)
    hits = search(collection, embedder, fingerprint, args.query, top_k=args.top_k if args.rerank else args.top_n)
    del embedder
    if not args.rerank:
        return hits[: args.top_n], fingerprint
    reranker = load_reranker(opts, fingerprint.instruction)
    return rerank(reranker, args.query, hits, top_n=args.top_n), fingerprint


def hit_json(rank: int, hit: Any) -> dict[str, Any]:
    return {
        "rank": rank,
        "source": display_path(hit.source),
        "title": hit.title,
        "chunk": hit.chunk,
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
        print(f"[{rank}] {display_path(hit.source)}  chunk {hit.chunk}  {score_line(hit)}", file=console.out)
        print(textwrap.indent(hit.text.strip(), "    "), file=console.out)
        print(file=console.out)
    return 0
