"""Run every benchmark, each in its own process, and rewrite benchmarks/RESULTS.md with the command, machine,
versions, date and tables.

    python benchmarks/run_all.py [--layers 2] [--quick] [--only rerank embed efficiency memory] [--sweep]

Runs the issue's sizes (1 x 100 rerank, 1,000-document corpus, 25/50/100 x 4k-token memory runs): about
45 minutes on 2 idle cores. ``--quick`` shrinks every input (a smoke run of minutes; not the reported ratios).
``--sweep`` adds the qwen3-rag settings side experiments to the rerank and embed benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import common

BENCHMARKS = {
    "rerank": ("Reranking", "bench_rerank.py"),
    "embed": ("Corpus embedding and single-query latency", "bench_embed.py"),
    "efficiency": ("Hardware efficiency", "bench_efficiency.py"),
    "memory": ("Memory", "bench_memory.py"),
}
FULL = {  # the sizes: what RESULTS.md reports
    "rerank": ["--docs", "100", "--repeats", "3"],
    "embed": ["--docs", "1000", "--queries", "32", "--repeats", "3"],
    "efficiency": ["--docs", "16", "--doc-tokens", "1024", "--repeats", "3"],
    "memory": ["--docs", "25", "50", "100", "--doc-tokens", "4096"],
}
QUICK = {  # a smoke run
    "rerank": ["--docs", "30", "--repeats", "2"],
    "embed": ["--docs", "200", "--queries", "8", "--repeats", "2", "--query-layers", "1"],
    "efficiency": ["--docs", "8", "--doc-tokens", "512", "--repeats", "2"],
    "memory": ["--docs", "8", "16", "32", "--doc-tokens", "2048"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--layers", type=int, default=None, help="decoder layers for every benchmark (default: each one's own)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="small inputs: a smoke run")
    parser.add_argument("--sweep", action="store_true", help="also time other qwen3-rag settings")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--results", default=str(common.BENCH_DIR / "RESULTS.md"), help="markdown file to write")
    args = parser.parse_args()
    command = common.command_line()
    info = common.machine()
    started = time.time()
    sections = []
    for name in args.only:
        title, script = BENCHMARKS[name]
        out = common.RESULTS_DIR / f"{name}.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, str(common.BENCH_DIR / script), "--out", str(out)]
        if args.layers is not None:
            cmd += ["--layers", str(args.layers)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        cmd += (QUICK if args.quick else FULL)[name]
        if args.sweep and name in ("rerank", "embed"):
            cmd.append("--sweep")
        print(f"\n=== {title}: {' '.join(cmd)}", flush=True)
        load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
        t0 = time.time()
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0:
            sections.append(f"## {title}\n\nFAILED (exit {proc.returncode}): `{' '.join(cmd)}`")
            continue
        result = json.loads(out.read_text(encoding="utf-8"))
        load_after = result["machine"]["load_avg"]
        sections.append(
            f"## {title}\n\n`{result['command']}` -- {time.time() - t0:.0f} s, load average (1/5/15 min) "
            f"{load_before} before, {load_after} after.\n\n{result['markdown']}"
        )
    versions = "\n".join(f"| {k} | {v} |" for k, v in info["versions"].items())
    header = f"""# Benchmark results

Written by `{command}` on {info["date"]} ({time.time() - started:.0f} s), qwen3-rag at git {info["git"]}.
{"**Quick run: small inputs, not the reported configuration.**" if args.quick else ""}

Machine: {common.machine_line(info)}; Python {info["python"]}.

| package | version |
| --- | --- |
{versions}

Random-weight checkpoints with Qwen3-0.6B's real width (hidden 1024, 16/8 heads of 128, intermediate 3072,
vocabulary 151,669, real Qwen tokenizer) and fewer layers (each section says how many of the real 28). All
peers of a section run in one process on the same checkpoint and inputs, interleaved round by round; times
are medians, ± is half the min-max range over rounds. Report the ratios, not the absolute times: the machine
is shared, and fewer layers make the per-token costs that do not grow with depth (the recipe's
151,669-row output head, tokenization, Python) weigh more than at 28 layers. See benchmarks/README.md.
"""
    gpu = (
        "## GPU\n\nNot run: no GPU was lent to the session that wrote this file. `benchmarks/gpu_check.sh` is "
        "the prepared script (bf16, attention kernel, tokens/s, peak memory) for a session that has one."
    )
    text = header + "\n" + "\n\n".join([*sections, gpu]) + "\n"
    with open(args.results, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"\nwrote {args.results}")


if __name__ == "__main__":
    main()
