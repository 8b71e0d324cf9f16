"""Runs the Ray corpus job end to end for tests/scaleout/test_distributed.py, in ONE local Ray session.

Start it inside a private network namespace -- Ray's processes listen on every interface:

    unshare --net --pid --fork --mount-proc --kill-child \
        sh -c 'ip link set lo up && exec python tests/scaleout/ray_job_script.py --work DIR --model PATH'

``DIR`` holds what the test prepared: ``docs/`` (a folder of documents), ``extra/`` (documents added
before the third run), ``rows.jsonl`` and ``more_rows.jsonl`` (a table, then the same table with more
rows). The script writes ``DIR/out-*``, ``DIR/streamed.{npy,json}`` (what ``iter_embedded`` returned) and
``DIR/report.json`` (one summary per run, with its timings).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

STS_INSTRUCTION = "Retrieve semantically similar text"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--num-actors", type=int, default=2)
    args = parser.parse_args()
    work: Path = args.work

    t0 = time.perf_counter()
    import numpy as np
    import ray
    import ray.data

    from qwen3_rag.distributed import embed_corpus, iter_embedded

    # A short private temp dir: Ray's unix socket paths must fit in 107 bytes, and other Ray users of this
    # machine keep theirs in /tmp/ray.
    temp_dir = tempfile.mkdtemp(prefix="qr-ray-", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=256 * 2**20,
        _node_ip_address="127.0.0.1",
        _temp_dir=temp_dir,
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray_start = time.perf_counter() - t0

    runs: dict[str, dict] = {}

    def run(name: str, source, out: str, **kwargs) -> None:
        kwargs = {"num_actors": 2, "rows_per_call": 8, **kwargs}
        result = embed_corpus(source, work / out, model=args.model, **kwargs)
        runs[name] = {
            "embedded": result.embedded,
            "existing": result.existing,
            "total": result.total,
            "dimension": result.dimension,
            "new_files": [str(f) for f in result.new_files],
            "seconds": result.seconds,
        }

    try:
        # A folder of documents: all of it, then nothing new (Ray is not even used), then only the added files.
        run("docs_first", work / "docs", "out-docs")
        run("docs_again", work / "docs", "out-docs")
        shutil.copytree(work / "extra", work / "docs", dirs_exist_ok=True)
        run("docs_added", work / "docs", "out-docs")
        # A table: first as a Ray Dataset, then resumed from a longer JSONL file, where the ids already
        # embedded are filtered out in the workers. Symmetric-task instruction, Matryoshka size, metadata,
        # no text. 2 actors hold both CPUs (rows read first); 1 actor leaves one free (rows streamed).
        table = {"dimensions": 32, "instruction": STS_INSTRUCTION, "id_column": "doc_id", "text_column": "body",
                 "metadata_columns": ["group"], "store_text": False}  # fmt: skip
        rows = [json.loads(line) for line in (work / "rows.jsonl").read_text(encoding="utf-8").splitlines()]
        run("table_first", ray.data.from_items(rows), "out-table", **table)
        run("table_more", work / "more_rows.jsonl", "out-table", num_actors=1, **table)
        # Rows built in this process, streamed back instead of written (as `qwen3-rag index --ray` does).
        started = time.perf_counter()
        streamed = list(iter_embedded(rows, model=args.model, num_actors=2, rows_per_call=8, id_column="doc_id",
                                      text_column="body", metadata_columns=["group"]))  # fmt: skip
        np.save(work / "streamed.npy", np.concatenate([b.vectors for b in streamed]))
        columns = {"ids": [i for b in streamed for i in b.ids], "texts": [t for b in streamed for t in b.texts],
                   "metadatas": [m for b in streamed for m in b.metadatas], "batches": len(streamed),
                   "seconds": time.perf_counter() - started}  # fmt: skip
        (work / "streamed.json").write_text(json.dumps(columns), encoding="utf-8")
        runs["streamed"] = {"seconds": columns["seconds"]}
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)

    report = {"ray_version": ray.__version__, "ray_start_seconds": ray_start, "runs": runs,
              "script_seconds": time.perf_counter() - t0}  # fmt: skip
    (work / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
