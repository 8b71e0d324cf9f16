"""Run every benchmark, each in its own process, and rewrite benchmarks/RESULTS.md with the command, machine,
versions, date and tables.

    python benchmarks/run_all.py [--quick] [--only rerank rerank-28 embed efficiency linear memory precision index] [--sweep]
                                 [--no-run]

Runs the issue's sizes (1 x 100 rerank, 1,000-document corpus, 25/50/100 x 4k-token memory runs) plus the
rerank at the real depth of 28 layers on 30 documents: about 1.5 hours on 2 idle cores. ``--quick`` shrinks
every input (a smoke run of minutes; not the reported ratios). ``--sweep`` adds the side experiments on
qwen3-rag's own settings. ``--no-run`` only rewrites RESULTS.md from the JSON results already in
benchmarks/.cache/results (each section keeps the command, date and load of its own run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import common


class Entry:
    def __init__(self, title: str, script: str, full: list[str], quick: list[str] | None, layers: bool = True):
        self.title, self.script, self.full, self.quick, self.layers = title, script, full, quick, layers


ENTRIES = {
    "rerank": Entry(
        "Reranking", "bench_rerank.py", ["--docs", "100", "--repeats", "3"], ["--docs", "30", "--repeats", "2"]
    ),
    "rerank-28": Entry(
        "Reranking at the real depth (28 layers)", "bench_rerank.py",
        ["--layers", "28", "--docs", "30", "--repeats", "2"], None, layers=False,
    ),
    "embed": Entry(
        "Corpus embedding and single-query latency", "bench_embed.py",
        ["--docs", "1000", "--queries", "32", "--repeats", "3"],
        ["--docs", "200", "--queries", "8", "--repeats", "2", "--query-layers", "1"],
    ),
    "efficiency": Entry(
        "Hardware efficiency", "bench_efficiency.py", ["--docs", "16", "--doc-tokens", "1024", "--repeats", "3"],
        ["--docs", "8", "--doc-tokens", "512", "--repeats", "2"],
    ),
    "linear": Entry(
        "CPU linear layer: nn.Linear vs packed oneDNN", "bench_linear.py", ["--repeats", "5"], ["--repeats", "2"],
        layers=False,
    ),
    "memory": Entry(
        "Memory", "bench_memory.py", ["--docs", "25", "50", "100", "--doc-tokens", "4096"],
        ["--docs", "8", "16", "32", "--doc-tokens", "2048"],
    ),
    "precision": Entry(
        "CPU precision: float32, bfloat16, int8 vs ONNX Runtime and llama.cpp", "bench_precision.py",
        ["--docs", "64", "--queries", "16", "--rerank-docs", "12", "--repeats", "3"],
        ["--docs", "16", "--queries", "4", "--rerank-docs", "6", "--repeats", "1", "--no-memory"],
    ),
    "index": Entry(
        "Indexing: qwen3-rag index vs a plain script", "bench_index.py",
        ["--files", "2000", "--repeats", "3"], ["--files", "300", "--repeats", "1"], layers=False,
    ),
    "rerank-sweep": Entry(
        "Side experiment: qwen3-rag reranker settings", "bench_rerank.py",
        ["--sweep-only", "--docs", "100", "--repeats", "3"], ["--sweep-only", "--docs", "30", "--repeats", "1"],
    ),
    "embed-sweep": Entry(
        "Side experiment: qwen3-rag embedder settings", "bench_embed.py",
        ["--sweep-only", "--docs", "1000", "--repeats", "2"], ["--sweep-only", "--docs", "200", "--repeats", "1"],
    ),
}  # fmt: skip
DEFAULT = ["rerank", "rerank-28", "embed", "efficiency", "linear", "memory", "precision", "index"]
SWEEPS = ["rerank-sweep", "embed-sweep"]

HEADER = """# Benchmark results

Written by `{command}` on {date}{elapsed}, qwen3-rag at git {git}.
{quick}
Machine: {machine}; Python {python}.

| package | version |
| --- | --- |
{versions}

Random-weight checkpoints with Qwen3-0.6B's real width (hidden 1024, 16/8 heads of 128, intermediate 3072,
vocabulary 151,669, real Qwen tokenizer) and fewer layers (each section says how many of the real 28). All
peers of a section run in one process on the same checkpoint and inputs, interleaved round by round; times
are medians, ± is half the min-max range over rounds, speed-ups are ratios of medians (and of minimums).
Report the ratios, not the absolute times: the machine is shared, and fewer layers make the per-token costs
that do not grow with depth (the recipe's 151,669-row output head, tokenization, Python) weigh more than at
28 layers. See benchmarks/README.md.
"""

GPU = (
    "## GPU\n\nNot run: no GPU was lent to the session that wrote this file. `benchmarks/gpu_check.sh` is the "
    "prepared check (bf16, attention kernel, tokens/s, peak memory, 28 layers) for a session that has one."
)


def wait_for_quiet(max_load: float | None, max_wait: float) -> None:
    """Wait (at most ``max_wait`` seconds) until the 1-minute load average is under ``max_load``."""
    if max_load is None:
        return
    deadline = time.time() + max_wait
    while os.getloadavg()[0] >= max_load and time.time() < deadline:
        print(f"  load {os.getloadavg()[0]:.2f} >= {max_load}: waiting", flush=True)
        time.sleep(30)


def run(name: str, args) -> None:
    entry = ENTRIES[name]
    wait_for_quiet(args.max_load, args.max_wait)
    if entry.quick is None and args.quick:
        print(f"\n=== {entry.title}: skipped in --quick")
        return
    out = common.RESULTS_DIR / f"{name}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(common.BENCH_DIR / entry.script), "--out", str(out)]
    if args.layers is not None and entry.layers:
        cmd += ["--layers", str(args.layers)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += entry.quick if args.quick else entry.full
    print(f"\n=== {entry.title}: {' '.join(cmd)}", flush=True)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    start = time.time()
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        print(f"FAILED (exit {proc.returncode})", flush=True)
        return
    result = json.loads(out.read_text(encoding="utf-8"))
    result["run_all"] = {"seconds": time.time() - start, "load_before": load_before, "quick": args.quick}
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def section(name: str) -> str:
    entry = ENTRIES[name]
    path = common.RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        return f"## {entry.title}\n\nNo result: `{entry.script}` did not run or failed (see its output)."
    result = json.loads(path.read_text(encoding="utf-8"))
    meta = result.get("run_all", {})
    when = f"{result['machine']['date']}"
    if meta:
        when += f", {meta['seconds']:.0f} s, load average (1/5/15 min) {meta['load_before']} before"
        when += f", {result['machine']['load_avg']} after"
    else:
        when += f", load average (1/5/15 min) {result['machine']['load_avg']} at the end"
    return f"## {entry.title}\n\n`{result['command']}` -- {when}.\n\n{result['markdown']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--layers", type=int, default=None, help="decoder layers for every benchmark (default: each one's own)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="small inputs: a smoke run")
    parser.add_argument("--sweep", action="store_true", help="also the side experiments on qwen3-rag's settings")
    parser.add_argument("--only", nargs="+", choices=list(ENTRIES), default=None)
    parser.add_argument("--no-run", action="store_true", help="only rewrite RESULTS.md from stored results")
    parser.add_argument("--max-load", type=float, default=None, help="before each benchmark, wait for a lower load")
    parser.add_argument("--max-wait", type=float, default=1800, help="seconds to wait for --max-load (default 1800)")
    parser.add_argument("--results", default=str(common.BENCH_DIR / "RESULTS.md"), help="markdown file to write")
    args = parser.parse_args()
    names = args.only or DEFAULT + (SWEEPS if args.sweep else [])
    command = common.command_line()
    started = time.time()
    if not args.no_run:
        for name in names:
            run(name, args)
    info = common.machine()
    header = HEADER.format(
        command=command,
        date=info["date"],
        elapsed="" if args.no_run else f" ({time.time() - started:.0f} s)",
        git=info["git"],
        quick="**Quick run: small inputs, not the reported configuration.**\n" if args.quick else "",
        machine=common.machine_line(info),
        python=info["python"],
        versions="\n".join(f"| {k} | {v} |" for k, v in info["versions"].items()),
    )
    present = [n for n in ENTRIES if n in names or (args.no_run and (common.RESULTS_DIR / f"{n}.json").is_file())]
    text = header + "\n" + "\n\n".join([*(section(n) for n in present), GPU]) + "\n"
    with open(args.results, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"\nwrote {args.results}")


if __name__ == "__main__":
    main()
