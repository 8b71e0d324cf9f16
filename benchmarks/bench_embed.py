"""Corpus embedding and single-query latency: qwen3-rag vs. sentence-transformers, the card's recipe,
LlamaIndex HuggingFaceEmbedding and langchain-huggingface HuggingFaceEmbeddings, interleaved in one process
on the same checkpoint and inputs; vectors compared with the recipe; padding fraction of each peer's batches.

    python benchmarks/bench_embed.py [--layers 1] [--docs 300] [--repeats 3] [--queries 32] [--query-layers 8]
                                     [--sweep | --sweep-only]

``--sweep`` adds a side experiment: qwen3-rag with other batch sizes and token budgets (no peers).
"""

from __future__ import annotations

from collections.abc import Sequence

import common
import numpy as np
import recipes

TARGET_VS_ST = 1.0
TARGET_VS_RECIPE = 1.5
TARGET_VS_LLAMA_INDEX = 1.5
TARGET_QUERY_VS_ST = 1.5
TARGET_PADDING = 0.05


def load_peers(path: str, recipe_batch_size: int, device: str = "cpu", dtype=None, frameworks: bool = True):
    """Every peer on ``path``; ``frameworks=False`` leaves out the LlamaIndex and LangChain adapters."""
    from sentence_transformers import SentenceTransformer

    from qwen3_rag import Qwen3Embedder

    model_kwargs = {"dtype": dtype} if dtype is not None else None
    peers = {
        "qwen3-rag": Qwen3Embedder(
            path, device=device, dtype=dtype, instruction=common.INSTRUCTION, show_progress=False
        ),
        "sentence-transformers": SentenceTransformer(path, device=device, model_kwargs=model_kwargs),
        "recipe": recipes.EmbeddingRecipe(path, batch_size=recipe_batch_size, device=device, dtype=dtype),
    }
    if frameworks:
        from langchain_huggingface import HuggingFaceEmbeddings
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding

        # The adapter replaces the model's saved prompts with its own (empty unless given): pass the card's.
        peers["llama-index"] = HuggingFaceEmbedding(
            model_name=path,
            device=device,
            query_instruction=common.QUERY_PROMPT,
            **({"model_kwargs": model_kwargs} if model_kwargs else {}),
        )
        # embed_query uses encode_kwargs (no prompt) unless query_encode_kwargs names the query prompt.
        peers["langchain-huggingface"] = HuggingFaceEmbeddings(
            model_name=path,
            model_kwargs={"device": device, **({"model_kwargs": model_kwargs} if model_kwargs else {})},
            query_encode_kwargs={"prompt_name": "query"},
        )
    return peers


def corpus_calls(peers: dict[str, object], docs: list[str]) -> dict[str, object]:
    calls = {
        "qwen3-rag": lambda: peers["qwen3-rag"].embed_documents(docs),
        "sentence-transformers": lambda: peers["sentence-transformers"].encode_document(docs),
        "recipe": lambda: peers["recipe"].embed(docs).numpy(),
        "llama-index": lambda: np.asarray(peers["llama-index"].get_text_embedding_batch(docs)),
        "langchain-huggingface": lambda: np.asarray(peers["langchain-huggingface"].embed_documents(docs)),
    }
    return {name: call for name, call in calls.items() if name in peers}


def query_calls(peers: dict[str, object], qs: list[str]) -> dict[str, object]:
    """One query at a time (a search request), ``len(qs)`` of them per call."""
    calls = {
        "qwen3-rag": lambda: np.stack([peers["qwen3-rag"].embed_queries([q])[0] for q in qs]),
        "sentence-transformers": lambda: np.stack([peers["sentence-transformers"].encode_query(q) for q in qs]),
        "recipe": lambda: np.stack([peers["recipe"].embed_queries([q], common.INSTRUCTION)[0].numpy() for q in qs]),
        "llama-index": lambda: np.asarray([peers["llama-index"].get_query_embedding(q) for q in qs]),
        "langchain-huggingface": lambda: np.asarray([peers["langchain-huggingface"].embed_query(q) for q in qs]),
    }
    return {name: call for name, call in calls.items() if name in peers}


def padded_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1.0 - sum(lengths) / padded


def padding_by_peer(peers: dict[str, object], docs: list[str], recipe_batch_size: int) -> dict[str, float]:
    """Share of computed tokens that are padding, from each peer's own batching rule."""
    from qwen3_rag._batching import plan_batches, token_budget

    emb = peers["qwen3-rag"]
    lengths = [len(ids) for ids in emb.tokenize(docs)]
    n = len(docs)
    # sentence-transformers sorts by character length (longest first), batch_size 32 (encode's default)
    by_chars = sorted(range(n), key=lambda i: -len(docs[i]))
    llama_batch = peers["llama-index"].embed_batch_size

    def chunks(order: list[int], size: int) -> list[list[int]]:
        return [order[i : i + size] for i in range(0, n, size)]

    return {
        "qwen3-rag": padded_fraction(
            lengths, plan_batches(lengths, emb.batch_size, token_budget(emb.max_batch_tokens, emb.device))
        ),
        "sentence-transformers": padded_fraction(lengths, chunks(by_chars, 32)),
        "recipe": padded_fraction(lengths, chunks(list(range(n)), recipe_batch_size)),
        # LlamaIndex hands sentence-transformers embed_batch_size (10) texts at a time, in input order
        "llama-index": padded_fraction(lengths, chunks(list(range(n)), llama_batch)),
        "langchain-huggingface": padded_fraction(lengths, chunks(by_chars, 32)),
    }


def agreement(vectors: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    ref = vectors["recipe"].astype(np.float64)
    out = {}
    for name, v in vectors.items():
        v = v.astype(np.float64)
        out[name] = {"max_abs_diff": float(np.abs(v - ref).max()), "min_cosine": float((v * ref).sum(1).min())}
    return out


def run_sweep(path: str, docs: list[str], qs: list[str], repeats: int) -> tuple[str, dict[str, float]]:
    from qwen3_rag import Qwen3Embedder
    from qwen3_rag._batching import plan_batches, token_budget

    variants = {
        "default (batch_size=32, budget default)": {},
        "batch_size=16": {"batch_size": 16},
        "batch_size=8": {"batch_size": 8},
        "batch_size=64": {"batch_size": 64},
        "batch_size=1024, max_batch_tokens=8192": {"batch_size": 1024, "max_batch_tokens": 8192},
        "batch_size=1024, max_batch_tokens=4096": {"batch_size": 1024, "max_batch_tokens": 4096},
        "batch_size=1024, max_batch_tokens=2048": {"batch_size": 1024, "max_batch_tokens": 2048},
        "batch_size=1024, max_batch_tokens=1024": {"batch_size": 1024, "max_batch_tokens": 1024},
        "max_batch_tokens=4096": {"max_batch_tokens": 4096},
        "max_batch_tokens=2048": {"max_batch_tokens": 2048},
    }
    models = {name: Qwen3Embedder(path, device="cpu", show_progress=False, **kw) for name, kw in variants.items()}
    lengths = [len(ids) for ids in next(iter(models.values())).tokenize(docs)]
    print(f"sweep: {len(models)} qwen3-rag settings, {repeats} interleaved rounds")
    warm = {n: (lambda m=m: m.embed_documents(docs[:8])) for n, m in models.items()}
    times = common.interleaved({n: (lambda m=m: m.embed_documents(docs)) for n, m in models.items()}, repeats=repeats,
                               warm=warm)  # fmt: skip
    base = "default (batch_size=32, budget default)"
    rows = []
    for name, t in times.items():
        m = models[name]
        plan = plan_batches(lengths, m.batch_size, token_budget(m.max_batch_tokens, m.device))
        rows.append(
            [
                name,
                f"{common.median(t):.3f}",
                common.spread(t),
                common.fmt_speedup(common.speedup(times, base, name)),
                len(plan),
                f"{100 * padded_fraction(lengths, plan):.1f}%",
            ]
        )
    md = common.table(
        ["qwen3-rag setting", "median s", "±", "speed vs default (median, min)", "batches", "padding"], rows
    )
    return md, {name: common.median(t) for name, t in times.items()}


def corpus_section(peers, docs, doc_lengths, args, ck, threads) -> tuple[list[str], dict]:
    calls = corpus_calls(peers, docs)
    vectors = {name: np.asarray(call(), dtype=np.float32) for name, call in calls.items()}  # also the warm-up
    agree = agreement(vectors)
    padding = padding_by_peer(peers, docs, args.recipe_batch_size)
    times = common.interleaved(calls, repeats=args.repeats, warm={})
    med = {name: common.median(t) for name, t in times.items()}
    speed = {name: common.speedup(times, name) for name in calls}
    rows = [
        [name, f"{med[name]:.2f}", common.spread(times[name]), f"{len(docs) / med[name]:.1f}",
         f"{sum(doc_lengths) / med[name]:,.0f}", common.fmt_speedup(speed[name]), f"{100 * padding[name]:.1f}%",
         common.fmt_diff(agree[name]["max_abs_diff"]), f"{agree[name]['min_cosine']:.6f}"]
        for name in calls
    ]  # fmt: skip
    targets = [
        [f"qwen3-rag >= {TARGET_VS_ST}x sentence-transformers", common.fmt_speedup(speed["sentence-transformers"]),
         common.verdict(speed["sentence-transformers"][0] >= TARGET_VS_ST)],
        [f"qwen3-rag >= {TARGET_VS_RECIPE}x recipe", common.fmt_speedup(speed["recipe"]),
         common.verdict(speed["recipe"][0] >= TARGET_VS_RECIPE)],
        [f"qwen3-rag >= {TARGET_VS_LLAMA_INDEX}x LlamaIndex", common.fmt_speedup(speed["llama-index"]),
         common.verdict(speed["llama-index"][0] >= TARGET_VS_LLAMA_INDEX)],
        [f"qwen3-rag padding < {100 * TARGET_PADDING:.0f}%", f"{100 * padding['qwen3-rag']:.1f}%",
         common.verdict(padding["qwen3-rag"] < TARGET_PADDING)],
    ]  # fmt: skip
    header = ["peer", "median s", "±", "docs/s", "tokens/s", "qwen3-rag speed-up", "padding",
              "max abs diff vs recipe", "min cosine vs recipe"]  # fmt: skip
    sections = [
        f"**Corpus**: {len(docs)} documents ({common.describe_lengths(doc_lengths)}), {ck.layers} of 28 "
        f"layers, fp32, {threads} threads, {args.repeats} interleaved rounds. Recipe in input order, batches "
        f"of {args.recipe_batch_size}; sentence-transformers `encode_document` defaults (batch 32, sorted by "
        "characters); LlamaIndex `get_text_embedding_batch` (chunks of embed_batch_size=10); "
        "langchain-huggingface `embed_documents`; qwen3-rag defaults. langchain-huggingface replaces every newline "
        "with a space before embedding, so its vectors of documents with paragraphs differ from the card's.",
        common.table(header, rows),
        common.table(["target", "measured (median, min)", "verdict"], targets),
    ]
    return sections, {"times": times, "median_s": med, "speedup_median_min": speed, "padding": padding,
                      "agreement": agree}  # fmt: skip


def query_section(peers, qs, query_lengths, args) -> tuple[list[str], dict]:
    qcalls = query_calls(peers, qs)
    qvectors = {name: np.asarray(call(), dtype=np.float32) for name, call in qcalls.items()}  # also the warm-up
    qagree = agreement(qvectors)
    qtimes = common.interleaved(qcalls, repeats=args.repeats, warm={})
    qmed = {name: common.median(t) / len(qs) for name, t in qtimes.items()}
    speed = {name: common.speedup(qtimes, name) for name in qcalls}
    qrows = [
        [name, f"{1000 * qmed[name]:.1f}", common.spread(qtimes[name]), common.fmt_speedup(speed[name]),
         common.fmt_diff(qagree[name]["max_abs_diff"]), f"{qagree[name]['min_cosine']:.6f}"]
        for name in qcalls
    ]  # fmt: skip
    vs_st = speed["sentence-transformers"]
    sections = [
        f"**Single-query latency** ({args.query_layers} of 28 layers, warm model, one query per call, {len(qs)} "
        f"queries of 5-30 words with the card's instruction, {common.describe_lengths(query_lengths)}):",
        common.table(["peer", "ms per query", "±", "qwen3-rag speed-up", "max abs diff vs recipe",
                      "min cosine vs recipe"], qrows),
        common.table(["target", "measured (median, min)", "verdict"],
                     [[f"qwen3-rag embed_queries >= {TARGET_QUERY_VS_ST}x sentence-transformers encode_query",
                       common.fmt_speedup(vs_st), common.verdict(vs_st[0] >= TARGET_QUERY_VS_ST)]]),
    ]  # fmt: skip
    return sections, {"times": qtimes, "median_s_per_query": qmed, "speedup_median_min": speed, "agreement": qagree}


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.set_defaults(layers=1)
    parser.add_argument("--docs", type=int, default=300, help="corpus documents (default 300; the issue's: 1000)")
    parser.add_argument("--queries", type=int, default=32, help="queries per latency round, one at a time (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds (default 3)")
    parser.add_argument("--recipe-batch-size", type=int, default=32, help="recipe batch, input order (default 32)")
    parser.add_argument("--sweep", action="store_true", help="also time other qwen3-rag settings")
    parser.add_argument("--sweep-only", action="store_true", help="only the qwen3-rag settings (results: embed-sweep)")
    parser.add_argument("--skip-corpus", action="store_true", help="only the single-query latency")
    parser.add_argument(
        "--query-layers",
        type=int,
        default=8,
        help="decoder layers for the single-query latency (default 8: one short query is cheap, and with fewer "
        "layers fixed per-call costs hide the per-layer work; 28 is the real depth)",
    )
    args = parser.parse_args()
    threads = common.set_threads(args.threads)
    ck = common.checkpoints(args.layers)
    docs = common.documents(args.docs)
    qs = common.queries(args.queries)
    if args.sweep_only:
        md, sweep = run_sweep(str(ck.embedding), docs, qs, args.repeats)
        common.save_sweep("embed-sweep", f"{len(docs)} documents", md, sweep, layers=ck.layers, threads=threads,
                          docs=len(docs), repeats=args.repeats, out=args.out)  # fmt: skip
        return
    peers = load_peers(str(ck.embedding), args.recipe_batch_size)
    doc_lengths = [len(ids) for ids in peers["qwen3-rag"].tokenize(docs)]
    query_lengths = [len(ids) for ids in peers["qwen3-rag"].tokenize(qs, instruction=common.INSTRUCTION)]
    print(f"embed: {ck.layers} layers, {threads} threads")
    print(f"corpus: {common.describe_lengths(doc_lengths)}")
    print(f"queries (with instruction): {common.describe_lengths(query_lengths)}")
    result: dict[str, object] = {"layers": ck.layers, "threads": threads, "docs": len(docs), "queries": len(qs),
                                 "repeats": args.repeats}  # fmt: skip
    sections: list[str] = []
    if not args.skip_corpus:
        more, result["corpus"] = corpus_section(peers, docs, doc_lengths, args, ck, threads)
        sections += more
    if args.query_layers != ck.layers:
        del peers
        qck = common.checkpoints(args.query_layers, reranker=False)
        peers = load_peers(str(qck.embedding), args.recipe_batch_size)
    more, result["query"] = query_section(peers, qs, query_lengths, args)
    result["query"]["layers"] = args.query_layers
    sections += more
    if args.sweep:
        del peers
        sweep_md, sweep = run_sweep(str(ck.embedding), docs, qs, args.repeats)
        sections += ["Side experiment, qwen3-rag settings on the corpus (interleaved, same inputs):", sweep_md]
        result["sweep_median_s"] = sweep
    result["markdown"] = "\n\n".join(sections)
    common.save_results("embed", result, args.out)


if __name__ == "__main__":
    main()
