"""Ray corpus job (qwen3_rag.distributed): throughput with 1 and 2 actors on this machine, start-up included.

    python benchmarks/ray_scaling.py [--layers 2] [--docs 360] [--repeats 2] [--rows-per-call 48] [--max-load 1.5]

The checkpoint is the benchmarks' random one with Qwen3-Embedding-0.6B's real width and vocabulary and
``--layers`` decoder layers (``common.checkpoints``); the corpus is ``common.documents`` (log-normal lengths,
median ~200 tokens) written to one parquet file, the job's usual input. Measured, all on the same machine:

- in-process ``Qwen3Embedder.embed_documents`` with 1 and 2 torch threads (model already loaded);
- the Ray start (``ray.init`` of a local 2-CPU Ray), once;
- ``embed_corpus`` with 1 actor x 1 CPU, 1 actor x 2 CPUs and 2 actors x 1 CPU: each job's wall time from
  call to return (actor start, model load, reading, embedding, writing parquet), on the corpus and on 4
  documents (the fixed cost of a job), so ``docs / (T_corpus - T_4docs)`` is the steady throughput;
- the CPU time that other processes on the machine used during each measurement (see ``Stopwatch``).

Every configuration runs ``--repeats`` times, interleaved; the table shows the fastest run of each (others'
work can only slow a run down).

Ray's processes listen on every interface even when told not to, so the script re-runs itself inside a
private network and PID namespace (``unshare --net --pid --fork --mount-proc --kill-child``, needs root and
iproute2). It waits until the 1-minute load average is below ``--max-load`` before it starts, and reports the
load it started at. Results go to ``benchmarks/.cache/results/ray_scaling.json`` and print as markdown.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common

UNSHARE = ("unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child")
CONFIGS = (("1 actor x 1 CPU", 1, 1), ("1 actor x 2 CPUs", 1, 2), ("2 actors x 1 CPU", 2, 1))
SMALL = 4


class Stopwatch:
    """Wall time of a block, and the CPU time that processes outside this PID namespace used meanwhile.

    The benchmark runs in its own PID namespace, so ``/proc`` lists only its own processes, while
    ``/proc/stat`` counts the whole machine: the difference is other people's work competing for the same
    cores. Our processes are sampled every 0.2 s (Ray starts and ends actors and workers during a job), so
    a process that ends loses at most its last 0.2 s and other people's CPU is overstated by about as much.
    Near 0: a clean measurement.
    """

    def __enter__(self) -> Stopwatch:
        self._first: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._sample(first=True)
        self._busy, self._t = _machine_busy(), time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t
        busy = _machine_busy() - self._busy
        self._stop.set()
        self._thread.join()
        self._sample()
        ours = sum(last - self._first.get(pid, 0) for pid, last in self._last.items())
        self.foreign = max(0.0, (busy - ours) / os.sysconf("SC_CLK_TCK"))

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def _sample(self, *, first: bool = False) -> None:
        for pid, ticks in _namespace_cpu().items():
            if first:
                self._first[pid] = ticks
            self._last[pid] = ticks


def _machine_busy() -> int:
    with open("/proc/stat", encoding="ascii") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


def _namespace_cpu() -> dict[str, int]:
    """utime + stime of every process in this PID namespace, in clock ticks."""
    ticks = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def parse_args(argv: list[str] | None = None):
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=360, help="documents in the corpus (default 360)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of every configuration (best reported)")
    parser.add_argument("--rows-per-call", type=int, default=48, help="rows per actor call (default 48)")
    parser.add_argument("--max-load", type=float, default=1.5, help="wait for a 1-minute load below this")
    parser.add_argument("--max-wait", type=float, default=1800, help="seconds to wait for that load")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def wait_for_quiet(max_load: float, max_wait: float) -> float:
    deadline = time.monotonic() + max_wait
    while (load := os.getloadavg()[0]) >= max_load:
        if time.monotonic() > deadline:
            sys.exit(f"the 1-minute load average stayed at or above {max_load} for {max_wait:.0f} s (now {load:.2f})")
        print(f"load average {load:.2f} >= {max_load}; waiting", file=sys.stderr, flush=True)
        time.sleep(30)
    return load


def outside(args, argv: list[str]) -> None:
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            sys.exit(f"`{tool}` not found: this benchmark runs Ray in a private network namespace")
    common.checkpoints(args.layers)  # build (or reuse) the checkpoint before measuring anything
    load = wait_for_quiet(args.max_load, args.max_wait)
    script = Path(__file__).resolve()
    inner = shlex.join([sys.executable, str(script), *argv, "--inside"])
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "QWEN3_RAG_START_LOAD": f"{load:.2f}"}
    sys.exit(subprocess.run([*UNSHARE, "sh", "-c", f"ip link set lo up && exec {inner}"], env=env).returncode)


def inside(args) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from qwen3_rag import Qwen3Embedder

    start_load = os.environ.get("QWEN3_RAG_START_LOAD", f"{os.getloadavg()[0]:.2f}")
    checkpoint = common.checkpoints(args.layers).embedding
    texts = common.documents(args.docs)
    work = Path(tempfile.mkdtemp(prefix="qr-bench-", dir="/tmp"))
    for name, n in (("corpus", args.docs), ("small", SMALL)):
        table = pa.table({"id": [f"doc-{i}" for i in range(n)], "text": texts[:n]})
        pq.write_table(table, work / f"{name}.parquet")

    # In process, model loaded once, one warm-up call.
    embedder = Qwen3Embedder(checkpoint, device="cpu", show_progress=False)
    tokens = sum(len(ids) for ids in embedder.tokenize(texts))
    in_process: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    embedder.embed_documents(texts[:SMALL])
    for _ in range(args.repeats):
        for threads in in_process:
            torch.set_num_threads(threads)
            with Stopwatch() as watch:
                embedder.embed_documents(texts)
            in_process[threads].append((watch.seconds, watch.foreign))
    del embedder

    import ray

    from qwen3_rag.distributed import embed_corpus

    temp_dir = tempfile.mkdtemp(prefix="qr-ray-", dir="/tmp")
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=temp_dir,
             object_store_memory=512 * 2**20, log_to_driver=False)  # fmt: skip
    ray_start = time.perf_counter() - t
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False

    jobs: dict[str, dict[str, list[tuple[float, float]]]] = {
        name: {"corpus": [], "small": []} for name, _, _ in CONFIGS
    }
    try:
        for repeat in range(args.repeats):
            for name, actors, cpus in CONFIGS:
                for kind in ("small", "corpus"):
                    out = work / f"out-{repeat}-{actors}-{cpus}-{kind}"
                    with Stopwatch() as watch:
                        result = embed_corpus(work / f"{kind}.parquet", out, model=checkpoint, num_actors=actors,
                                              num_cpus_per_actor=cpus, rows_per_call=args.rows_per_call)  # fmt: skip
                    assert result.embedded == (args.docs if kind == "corpus" else SMALL), result
                    jobs[name][kind].append((result.seconds, watch.foreign))
                    print(f"{name}, {kind}: {result.seconds:.1f} s, other processes {watch.foreign:.1f} CPU-s",
                          file=sys.stderr, flush=True)  # fmt: skip
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    end_load = os.getloadavg()[0]
    shutil.rmtree(work, ignore_errors=True)

    rows = []
    for threads, runs in in_process.items():
        seconds, foreign = min(runs)
        rate = f"{args.docs / seconds:.2f}"
        rows.append([f"in process, {threads} torch thread{'s' * (threads > 1)}", "-", f"{seconds:.1f}", rate, "-",
                     rate, "-", f"{foreign:.1f}"])  # fmt: skip
    base = None
    for name, _, _ in CONFIGS:
        (corpus, foreign), (small, small_foreign) = min(jobs[name]["corpus"]), min(jobs[name]["small"])
        base = base or corpus
        rows.append([f"Ray, {name}", f"{small:.1f}", f"{corpus:.1f}", f"{args.docs / corpus:.2f}",
                     f"{args.docs / (corpus + ray_start):.2f}", f"{args.docs / max(corpus - small, 1e-9):.2f}",
                     f"x{base / corpus:.2f}", f"{small_foreign:.1f} / {foreign:.1f}"])  # fmt: skip
    header = ["setup", f"job on {SMALL} docs (s)", f"job on {args.docs} docs (s)", "docs/s, job",
              "docs/s, job + Ray start", "docs/s, steady", "job speed-up", "other processes' CPU (s)"]  # fmt: skip
    markdown = (
        f"{args.docs} documents, {tokens:,} tokens; checkpoint: real width, {args.layers} layers; rows per call "
        f"{args.rows_per_call}; best of {args.repeats}; load average {start_load} at the start, {end_load:.2f} "
        f"at the end; Ray {ray.__version__}, start {ray_start:.1f} s\n\n" + common.table(header, rows)
    )
    result = {"docs": args.docs, "tokens": tokens, "layers": args.layers, "rows_per_call": args.rows_per_call,
              "repeats": args.repeats, "start_load": start_load, "end_load": round(end_load, 2),
              "ray_version": ray.__version__, "ray_start_s": ray_start,
              "in_process_s_and_foreign_cpu_s": {str(k): v for k, v in in_process.items()},
              "jobs_s_and_foreign_cpu_s": jobs,
              "markdown": markdown}  # fmt: skip
    common.save_results("ray_scaling", result, args.out)


def main() -> None:
    argv = sys.argv[1:]
    args = parse_args(argv)
    if args.inside:
        inside(args)
    else:
        outside(args, argv)


if __name__ == "__main__":
    main()
