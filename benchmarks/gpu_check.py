"""The benchmarks on a GPU in bf16, as one short prepared script for a session that is lent one.

    python benchmarks/gpu_check.py [--layers 28] [--docs 1000] [--rerank-docs 100] [--repeats 3] [--out DIR]

Reports: the device, the attention kernel each peer's model runs (``config._attn_implementation``, and
whether flash-attn is installed), corpus-embedding tokens/s and single-query latency for qwen3-rag vs.
sentence-transformers vs. the card's recipe, reranking 1 x 100 for qwen3-rag vs. the recipe vs. CrossEncoder,
agreement of every peer with the recipe in the same dtype, and peak GPU memory (``max_memory_allocated``)
of reranking 100 documents of 4k tokens. Runs anywhere torch sees a device; ``--device cpu --dtype float32
--layers 1 --docs 40 --rerank-docs 10 --long-docs 4`` is the smoke test used to prepare it without a GPU.
Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out`` (default $OUT, else benchmarks/.cache/results).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import bench_embed
import bench_rerank
import common
import numpy as np
import torch


def attention_kernels(peers: dict[str, object]) -> dict[str, str]:
    def impl(model) -> str:
        return str(getattr(model.config, "_attn_implementation", "?"))

    out = {}
    for name, peer in peers.items():
        if name == "qwen3-rag":
            out[name] = impl(peer._loaded.model)
        elif name == "recipe" or (hasattr(peer, "model") and hasattr(peer.model, "config")):
            out[name] = impl(peer.model)
        else:  # SentenceTransformer
            out[name] = impl(peer[0].auto_model)
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=28, help="decoder layers (default 28: the real depth)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--docs", type=int, default=1000, help="corpus documents (default 1000)")
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--rerank-docs", type=int, default=100)
    parser.add_argument("--long-docs", type=int, default=100, help="4k-token documents for peak memory")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or common.RESULTS_DIR))
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    cuda = args.device.startswith("cuda")
    started = time.time()
    info = common.machine()
    report: dict[str, object] = {
        "command": common.command_line(),
        "machine": info,
        "layers": args.layers,
        "dtype": args.dtype,
        "device": args.device,
    }
    if cuda:
        report["gpu"] = torch.cuda.get_device_name()
        report["cuda"] = torch.version.cuda
    report["flash_attn_installed"] = importlib.util.find_spec("flash_attn") is not None
    print(json.dumps({k: report[k] for k in report if k != "machine"}, indent=1), flush=True)
    ck = common.checkpoints(args.layers)
    md = [
        f"# GPU check\n\n`{report['command']}` on {report.get('gpu', args.device)}, {args.dtype}, "
        f"{args.layers} layers, {info['date']}; flash-attn installed: {report['flash_attn_installed']}."
    ]

    # ---- corpus embedding and single-query latency
    peers = bench_embed.load_peers(str(ck.embedding), 32, device=args.device, dtype=dtype, frameworks=False)
    report["attention_embedding"] = attention_kernels(peers)
    docs = common.documents(args.docs)
    qs = common.queries(args.queries)
    tokens = sum(len(ids) for ids in peers["qwen3-rag"].tokenize(docs))
    calls = bench_embed.corpus_calls(peers, docs)
    agree = bench_embed.agreement({n: np.asarray(c(), dtype=np.float32) for n, c in calls.items()})
    times = common.interleaved(calls, repeats=args.repeats, warm={})
    rows = [
        [
            n,
            f"{tokens / common.median(t):,.0f}",
            common.fmt_ratio(common.median(t) / common.median(times["qwen3-rag"])),
            report["attention_embedding"][n],
            f"{agree[n]['min_cosine']:.5f}",
        ]
        for n, t in times.items()
    ]
    md += [
        f"Corpus: {args.docs} documents, {tokens:,} tokens.",
        common.table(["peer", "tokens/s", "qwen3-rag speed-up", "attention", "min cosine vs recipe"], rows),
    ]
    qcalls = bench_embed.query_calls(peers, qs)
    qtimes = common.interleaved(qcalls, repeats=args.repeats)
    rows = [
        [
            n,
            f"{1000 * common.median(t) / len(qs):.2f}",
            common.fmt_ratio(common.median(t) / common.median(qtimes["qwen3-rag"])),
        ]
        for n, t in qtimes.items()
    ]
    md += ["Single-query latency:", common.table(["peer", "ms per query", "qwen3-rag speed-up"], rows)]
    report["embed"] = {"tokens": tokens, "times": times, "agreement": agree, "query_times": qtimes}
    del peers, calls, qcalls
    if cuda:
        torch.cuda.empty_cache()

    # ---- reranking 1 x N
    peers = bench_rerank.load_peers(str(ck.reranker), 8, device=args.device, dtype=dtype)
    report["attention_reranker"] = attention_kernels(peers)
    query = common.queries(1)[0]
    rdocs = common.documents(args.rerank_docs)
    calls = bench_rerank.peer_calls(peers, query, rdocs)
    scores = {n: np.asarray(c(), dtype=np.float64) for n, c in calls.items()}
    diff = {n: float(np.abs(s - scores["recipe"]).max()) for n, s in scores.items()}
    times = common.interleaved(calls, repeats=args.repeats, warm={})
    rows = [
        [
            n,
            f"{common.median(t):.3f}",
            common.fmt_ratio(common.median(t) / common.median(times["qwen3-rag"])),
            report["attention_reranker"][n],
            common.fmt_diff(diff[n]),
        ]
        for n, t in times.items()
    ]
    md += [
        f"Rerank 1 x {len(rdocs)}:",
        common.table(["peer", "median s", "qwen3-rag speed-up", "attention", "max abs diff vs recipe"], rows),
    ]
    report["rerank"] = {"times": times, "max_abs_diff_vs_recipe": diff}

    # ---- peak memory of reranking long documents (qwen3-rag only: the recipe's full logits do not fit)
    rr = peers["qwen3-rag"]
    del peers, calls
    long_docs = common.long_documents(args.long_docs, 4096)
    rr.score(query, long_docs[:1])
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    sync(args.device)
    t0 = time.perf_counter()
    rr.score(query, long_docs)
    sync(args.device)
    seconds = time.perf_counter() - t0
    memory = {"docs": len(long_docs), "seconds": seconds}
    if cuda:
        memory |= {"weights_gib": base / 2**30, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    md += [
        f"Rerank 1 x {len(long_docs)} documents of 4k tokens: {seconds:.1f} s"
        + (f", peak GPU memory {memory['peak_gib']:.2f} GiB ({memory['weights_gib']:.2f} GiB before)" if cuda else "")
    ]
    report["memory"] = memory
    report["seconds"] = time.time() - started

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    (args.out / "gpu_check.md").write_text("\n\n".join(md) + "\n", encoding="utf-8")
    print("\n\n".join(md))
    print(f"\n{time.time() - started:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
