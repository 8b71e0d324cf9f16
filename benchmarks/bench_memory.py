"""Memory: peak resident memory of reranking N long documents, each configuration in a fresh process, to show
that it is bounded by the padded-token budget (max_batch_tokens), not by the number of documents.

    python benchmarks/bench_memory.py [--layers 1] [--docs 10 20 40] [--doc-tokens 4096] [--budgets 32768]

Each configuration runs ``Qwen3Reranker.score(query, docs)`` in a new Python process and reports its resident
memory after loading (RSS), the peak during scoring (VmHWM after resetting it through
``/proc/self/clear_refs``; a 5 ms RSS sampler where that is not allowed) and the growth over the loaded
state. ``--budgets`` adds runs with other ``max_batch_tokens`` values (enough documents for two batches): the
growth follows the budget. One decoder layer is the default: activations are freed layer by layer, so the
peak per layer is the same at any depth while the time is not.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import common

MIB = 2**20


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class _Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)


def child(args) -> None:
    """One configuration: load, reset the peak, score, report JSON on stdout's last line."""
    import torch

    from qwen3_rag import Qwen3Reranker

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    ck = common.checkpoints(args.layers)
    rr = Qwen3Reranker(ck.reranker, device="cpu", max_batch_tokens=args.budget, show_progress=False)
    query = common.queries(1)[0]
    docs = common.long_documents(args.docs[0], args.doc_tokens)
    lengths = [len(ids) for ids in rr.tokenize(query, docs)]
    rr.score(query, docs[:1])  # allocator and kernels warm, as in a server
    loaded = _status_kib("VmRSS") * 1024
    hwm = _reset_peak() and _status_kib("VmHWM") is not None
    sampler = None
    if not hwm:
        sampler = _Sampler()
        sampler.start()
    start = time.perf_counter()
    rr.score(query, docs)
    seconds = time.perf_counter() - start
    if hwm:
        peak = _status_kib("VmHWM") * 1024
    else:
        sampler.stop.set()
        sampler.join()
        peak = sampler.peak
    print(
        json.dumps(
            {
                "docs": len(docs),
                "tokens": sum(lengths),
                "max_pair_tokens": max(lengths),
                "budget": args.budget,
                "loaded_rss": loaded,
                "peak_rss": peak,
                "seconds": seconds,
                "method": "VmHWM" if hwm else "sampled",
                "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


def run_config(args, docs: int, budget: int | None) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--layers",
        str(args.layers),
        "--docs",
        str(docs),
        "--doc-tokens",
        str(args.doc_tokens),
    ]
    if budget is not None:
        cmd += ["--budget", str(budget)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print(
        f"  {docs} documents, budget {budget or 'default'}: fresh process ... (load {os.getloadavg()[0]:.2f})",
        flush=True,
    )
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"    peak {result['peak_rss'] / MIB:,.0f} MiB, loaded {result['loaded_rss'] / MIB:,.0f} MiB, "
        f"{result['seconds']:.1f} s",
        flush=True,
    )
    return result


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.set_defaults(layers=1)
    parser.add_argument(
        "--docs",
        type=int,
        nargs="+",
        default=[10, 20, 40],
        help="document counts (default 10 20 40; the issue: 25 50 100)",
    )
    parser.add_argument("--doc-tokens", type=int, default=4096, help="tokens per document (default 4096)")
    parser.add_argument(
        "--budgets",
        type=int,
        nargs="*",
        default=[32768],
        help="extra max_batch_tokens values, each run with enough documents for two batches (default 32768)",
    )
    parser.add_argument("--budget", type=int, default=None, help=argparse_hidden())
    parser.add_argument("--child", action="store_true", help=argparse_hidden())
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from qwen3_rag._batching import DEFAULT_BATCH_TOKENS

    common.checkpoints(args.layers)  # build once, outside the measured processes
    threads = common.set_threads(args.threads)
    print(f"memory: {args.layers} layers, {args.doc_tokens}-token documents, {threads} threads")
    # a budget run needs enough documents to fill two of its batches
    configs = [(n, None) for n in args.docs] + [
        (max(min(args.docs), math.ceil(2 * b / args.doc_tokens)), b) for b in args.budgets
    ]
    results = [run_config(args, n, b) for n, b in configs]
    default_budget = DEFAULT_BATCH_TOKENS["cpu"]
    rows = [
        [
            r["docs"],
            f"{r['tokens']:,}",
            f"{r['budget'] or default_budget:,}" + ("" if r["budget"] else " (default)"),
            f"{r['loaded_rss'] / MIB:,.0f}",
            f"{r['peak_rss'] / MIB:,.0f}",
            f"{(r['peak_rss'] - r['loaded_rss']) / MIB:,.0f}",
            f"{r['seconds']:.1f}",
        ]
        for r in results
    ]
    # the bound applies once the documents fill the budget: compare the runs with at least two full batches
    by_docs = [r for r in results if r["budget"] is None and r["tokens"] >= 2 * default_budget] or [
        r for r in results if r["budget"] is None
    ]
    growth = [(r["peak_rss"] - r["loaded_rss"]) for r in by_docs]
    bounded = max(growth) <= 1.25 * min(growth) + 64 * MIB
    md = "\n\n".join(
        [
            f"Reranking 1 query x N documents of ~{args.doc_tokens} tokens, each configuration in a fresh process, "
            f"{args.layers} of 28 layers, fp32, {threads} threads; peak measured as {results[0]['method']}.",
            common.table(
                [
                    "documents",
                    "pair tokens",
                    "max_batch_tokens",
                    "RSS loaded (MiB)",
                    "peak RSS (MiB)",
                    "growth over loaded (MiB)",
                    "seconds",
                ],
                rows,
            ),
            common.table(
                ["target", "measured", "verdict"],
                [
                    [
                        "peak memory bounded by the token budget, not the document count",
                        f"growth {min(growth) / MIB:,.0f}-{max(growth) / MIB:,.0f} MiB for "
                        f"{min(r['docs'] for r in by_docs)}-{max(r['docs'] for r in by_docs)} documents",
                        common.verdict(bounded),
                    ]
                ],
            ),
        ]
    )
    common.save_results(
        "memory",
        {
            "layers": args.layers,
            "threads": threads,
            "doc_tokens": args.doc_tokens,
            "runs": results,
            "bounded": bounded,
            "markdown": md,
        },
        args.out,
    )


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
