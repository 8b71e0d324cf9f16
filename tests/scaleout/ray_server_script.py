"""Runs the Ray job against a real Chroma server for tests/scaleout/test_cli_ray.py, in ONE local Ray session.

Start it inside a private network namespace (Ray's processes listen on every interface), like
ray_job_script.py. The Chroma server is started HERE, inside the same namespace: its 127.0.0.1 is not the
host's, so a server started by the test outside would not be reachable. When the script ends the server is
stopped and its folder (``DIR/served``) is left for the test to read, without a server.

``DIR`` holds ``corpus/`` (files for ``qwen3-rag index``), ``docs/`` (a folder of documents for the Python
API, one of them not UTF-8 and one empty) and ``dups.jsonl`` (a table with a repeated id). The script writes
``DIR/report.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def start_chroma(chroma: str, path: Path, log: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chroma run exited with {process.returncode}: {log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/v2/heartbeat", timeout=5).status_code == 200:
                return process, url
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("chroma run did not answer within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--chroma", required=True)
    args = parser.parse_args()
    work: Path = args.work

    import ray
    import ray.data

    from qwen3_rag.cli import main as cli
    from qwen3_rag.distributed import embed_corpus, embed_corpus_to_chroma, iter_embedded

    server, url = start_chroma(args.chroma, work / "served", work / "chroma.log")
    temp_dir = tempfile.mkdtemp(prefix="qr-ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    report: dict = {"url": url}
    warnings = io.StringIO()
    handler = logging.StreamHandler(warnings)
    logging.getLogger("qwen3_rag").addHandler(handler)
    try:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, _node_ip_address="127.0.0.1",
                 _temp_dir=temp_dir, log_to_driver=False)  # fmt: skip
        ray.data.DataContext.get_current().enable_progress_bars = False

        # The CLI: `qwen3-rag index --ray --db URL` (the driver writes, the actors embed), twice, then a search.
        index = ["index", str(work / "corpus"), "--db", url, "-q", "--ray", "--ray-actors", "2"]
        report["index"] = cli(index)
        report["index_again"] = cli(index)
        search = io.StringIO()
        with contextlib.redirect_stdout(search):
            report["search"] = cli(["search", "tides", "--db", url, "--no-rerank", "--json"])
        report["search_json"] = json.loads(search.getvalue())

        # The Python API: a folder of documents into a named collection on the server.
        result = embed_corpus_to_chroma(work / "docs", work / "out", "corpus", db=url, model=args.model,
                                        num_actors=2, rows_per_call=4)  # fmt: skip
        report["api"] = {"embedded": result.embedded, "skipped": [list(s) for s in result.skipped]}

        # Streaming a folder: the skipped documents are named in warnings.
        streamed = list(iter_embedded(work / "docs", model=args.model, num_actors=1, rows_per_call=4))
        report["streamed_ids"] = sorted(i for batch in streamed for i in batch.ids)

        # A table whose ids repeat: refused before anything is embedded or written.
        try:
            embed_corpus(work / "dups.jsonl", work / "out-dups", model=args.model, num_actors=1)
            report["duplicates"] = None
        except ValueError as exc:
            report["duplicates"] = str(exc)
    finally:
        logging.getLogger("qwen3_rag").removeHandler(handler)
        report["warnings"] = warnings.getvalue()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        server.terminate()
        server.wait(timeout=60)
        (work / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
