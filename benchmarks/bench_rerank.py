"""Reranking 1 query x N documents: qwen3-rag vs. the card's transformers recipe vs. sentence-transformers
CrossEncoder on the same causal-LM checkpoint, interleaved in one process; scores compared with the recipe.

    python benchmarks/bench_rerank.py [--layers 2] [--docs 100] [--repeats 3] [--sweep | --sweep-only]

``--sweep`` adds a side experiment: qwen3-rag with other batch sizes, token budgets and without the shared
prefix, timed interleaved with the defaults (no peers).
"""

from __future__ import annotations

import warnings

import common
import numpy as np
import recipes

TARGET_VS_RECIPE = 3.0
TARGET_VS_CROSS_ENCODER = 1.3
TARGET_MAX_DIFF = 1e-5


def load_peers(path: str, recipe_batch_size: int, device: str = "cpu", dtype=None) -> dict[str, object]:
    from sentence_transformers import CrossEncoder

    from qwen3_rag import Qwen3Reranker

    return {
        "qwen3-rag": Qwen3Reranker(path, device=device, dtype=dtype, show_progress=False),
        "recipe": recipes.RerankerRecipe(path, batch_size=recipe_batch_size, device=device, dtype=dtype),
        "cross-encoder": CrossEncoder(
            path,
            device=device,
            model_kwargs={"dtype": dtype} if dtype is not None else None,
            processor_kwargs={"chat_template": common.cross_encoder_chat_template()},
        ),
    }


def peer_calls(peers: dict[str, object], query: str, docs: list[str]) -> dict[str, object]:
    """One zero-argument call per peer that scores every document through the peer's public API."""
    pairs = [(query, d) for d in docs]
    return {
        "qwen3-rag": lambda: peers["qwen3-rag"].score(query, docs),
        "recipe": lambda: peers["recipe"].score(query, docs),
        # CrossEncoder applies its default Sigmoid to logit(yes) - logit(no): P(yes), as the card's softmax
        "cross-encoder": lambda: peers["cross-encoder"].predict(pairs, show_progress_bar=False).tolist(),
    }


def prompt_check(peers: dict[str, object], query: str, docs: list[str]) -> dict[str, bool]:
    """Whether each peer feeds the model exactly the recipe's token ids."""
    expected = peers["recipe"].pair_ids(query, docs)
    ce = peers["cross-encoder"]
    features = ce.preprocess([(query, d) for d in docs])
    ce_ids = [
        row[mask.bool()].tolist() for row, mask in zip(features["input_ids"], features["attention_mask"], strict=True)
    ]
    return {
        "qwen3-rag": peers["qwen3-rag"].tokenize(query, docs) == expected,
        "cross-encoder": ce_ids == expected,
    }


def run_sweep(path: str, query: str, docs: list[str], repeats: int) -> tuple[str, dict[str, float]]:
    from qwen3_rag import Qwen3Reranker

    variants = {
        "default (batch_size=16, budget default)": {},
        "reuse_prefix=False": {"reuse_prefix": False},
        "batch_size=8": {"batch_size": 8},
        "batch_size=32": {"batch_size": 32},
        "batch_size=64, max_batch_tokens=16384": {"batch_size": 64, "max_batch_tokens": 16384},
        "batch_size=64, max_batch_tokens=8192": {"batch_size": 64, "max_batch_tokens": 8192},
        "batch_size=64, max_batch_tokens=4096": {"batch_size": 64, "max_batch_tokens": 4096},
    }
    models = {name: Qwen3Reranker(path, device="cpu", show_progress=False, **kw) for name, kw in variants.items()}
    print(f"sweep: {len(models)} qwen3-rag settings, {repeats} interleaved rounds")
    warm = {n: (lambda m=m: m.score(query, docs[:4])) for n, m in models.items()}
    times = common.interleaved({n: (lambda m=m: m.score(query, docs)) for n, m in models.items()}, repeats=repeats,
                               warm=warm)  # fmt: skip
    base = "default (batch_size=16, budget default)"
    rows = [
        [name, f"{common.median(t):.3f}", common.spread(t), common.fmt_speedup(common.speedup(times, base, name))]
        for name, t in times.items()
    ]
    md = common.table(["qwen3-rag setting", "median s", "±", "speed vs default (median, min)"], rows)
    return md, {name: common.median(t) for name, t in times.items()}


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100, help="documents per query (default 100)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds (default 3)")
    parser.add_argument(
        "--recipe-batch-size",
        type=int,
        default=8,
        help="pairs per forward pass of the recipe (its full-vocabulary logits take "
        "batch x length x 151,669 x 4 bytes; default 8)",
    )
    parser.add_argument("--sweep", action="store_true", help="also time other qwen3-rag settings")
    parser.add_argument("--sweep-only", action="store_true", help="only the qwen3-rag settings (results: rerank-sweep)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*max_length. is ignored when .padding.*")
    threads = common.set_threads(args.threads)
    ck = common.checkpoints(args.layers)
    query = common.queries(1)[0]
    docs = common.documents(args.docs)
    if args.sweep_only:
        md, sweep = run_sweep(str(ck.reranker), query, docs, args.repeats)
        common.save_sweep("rerank-sweep", f"1 query x {len(docs)} documents", md, sweep, layers=ck.layers,
                          threads=threads, docs=len(docs), repeats=args.repeats, out=args.out)  # fmt: skip
        return
    peers = load_peers(str(ck.reranker), args.recipe_batch_size)
    lengths = [len(ids) for ids in peers["qwen3-rag"].tokenize(query, docs)]
    print(f"rerank: 1 query x {len(docs)} documents, {ck.layers} layers, {threads} threads")
    print(f"pairs: {common.describe_lengths(lengths)}")

    calls = peer_calls(peers, query, docs)
    scores = {name: np.asarray(call(), dtype=np.float64) for name, call in calls.items()}  # also the warm-up
    same_ids = prompt_check(peers, query, docs)
    times = common.interleaved(calls, repeats=args.repeats, warm={})

    med = {name: common.median(t) for name, t in times.items()}
    speed = {name: common.speedup(times, name) for name in calls}
    diff = {name: float(np.abs(s - scores["recipe"]).max()) for name, s in scores.items()}
    order = {name: np.argsort(-s, kind="stable") for name, s in scores.items()}
    ids_note = {True: "yes", False: "**no**", None: "(reference)"}
    rows = [
        [name, f"{med[name]:.3f}", common.spread(times[name]), f"{len(docs) / med[name]:.1f}",
         common.fmt_speedup(speed[name]), common.fmt_diff(diff[name]),
         "yes" if (order[name] == order["recipe"]).all() else "no", ids_note[same_ids.get(name)]]
        for name in calls
    ]  # fmt: skip
    vs_recipe, vs_ce = speed["recipe"][0], speed["cross-encoder"][0]
    targets = [
        [f"qwen3-rag >= {TARGET_VS_RECIPE}x recipe", common.fmt_speedup(speed["recipe"]),
         common.verdict(vs_recipe >= TARGET_VS_RECIPE)],
        [f"qwen3-rag >= {TARGET_VS_CROSS_ENCODER}x CrossEncoder", common.fmt_speedup(speed["cross-encoder"]),
         common.verdict(vs_ce >= TARGET_VS_CROSS_ENCODER)],
        [f"qwen3-rag scores within {TARGET_MAX_DIFF:.0e} of the recipe", common.fmt_diff(diff["qwen3-rag"]),
         common.verdict(diff["qwen3-rag"] <= TARGET_MAX_DIFF)],
    ]  # fmt: skip
    header = ["peer", "median s", "±", "docs/s", "qwen3-rag speed-up", "max abs diff vs recipe", "same ranking",
              "same token ids as recipe"]  # fmt: skip
    md = "\n\n".join([
        f"1 query x {len(docs)} documents ({common.describe_lengths(lengths)}; pair = card prompt + document), "
        f"{ck.layers} of 28 layers, fp32, {threads} threads, {args.repeats} interleaved rounds. "
        f"Recipe in input order, batches of {args.recipe_batch_size}; CrossEncoder.predict defaults "
        "(batch 32, length-sorted, logits at the last position only); qwen3-rag defaults.",
        common.table(header, rows),
        common.table(["target", "measured (median, min)", "verdict"], targets),
    ])  # fmt: skip
    result = {
        "layers": ck.layers, "threads": threads, "docs": len(docs), "repeats": args.repeats, "times": times,
        "median_s": med, "max_abs_diff_vs_recipe": diff, "same_ids_as_recipe": same_ids,
        "speedup_median_min": speed,
    }  # fmt: skip
    if args.sweep:
        del peers
        sweep_md, sweep = run_sweep(str(ck.reranker), query, docs, args.repeats)
        md += "\n\nSide experiment, qwen3-rag settings (interleaved, same inputs):\n\n" + sweep_md
        result["sweep_median_s"] = sweep
    result["markdown"] = md
    common.save_results("rerank", result, args.out)


if __name__ == "__main__":
    main()
