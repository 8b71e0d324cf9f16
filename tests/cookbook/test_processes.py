"""``qwen3-rag`` in real, separate processes on one embedded database: two index runs at once, search while index
runs, a relative model path used from another folder, no chromadb warning on incremental runs.

A process is paused (SIGSTOP) at the point under test, so the overlap is certain rather than a matter of timing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings
from filelock import FileLock, Timeout

from qwen3_rag.cli.lock import INDEX_LOCK

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="pauses processes with SIGSTOP (POSIX)")

WAIT = 300  # seconds: the machine may be shared; nothing here should take a tenth of it


def console_script() -> str:
    beside = Path(sys.executable).with_name("qwen3-rag")
    return str(beside) if beside.exists() else shutil.which("qwen3-rag") or "qwen3-rag"


class Run:
    """``qwen3-rag ARGS`` in its own process, its stderr read line by line as it comes."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self.process = subprocess.Popen(
            [console_script(), *map(str, args)],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._out: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stderr, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stdout, self._out), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + WAIT
        while not any(text in line for line in self.lines):
            assert self.process.poll() is None or any(text in line for line in self.lines), (
                f"exited {self.process.returncode} before printing {text!r}:\n{self.err}"
            )
            assert time.monotonic() < deadline, f"no {text!r} after {WAIT} s:\n{self.err}"
            time.sleep(0.05)

    def finish(self) -> int:
        code = self.process.wait(timeout=WAIT)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    @property
    def err(self) -> str:
        return "".join(self.lines)

    @property
    def out(self) -> str:
        return "".join(self._out)

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)


@pytest.fixture
def env(tiny_models_env: dict[str, str]) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3_RAG_")}
    out.update(tiny_models_env)
    return out


def write_corpus(folder: Path, count: int, topic: str) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"{topic}{i:03}.txt").write_text(
            f"Note {i} about {topic}. The {topic} number {i} is described here in one short sentence.",
            encoding="utf-8",
        )
    return folder


def wait_until_locked(db: Path) -> None:
    """Until some process holds the index lock of ``db`` (probing it releases it at once if it was free)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if (db / INDEX_LOCK).exists():
            probe = FileLock(db / INDEX_LOCK)
            try:
                probe.acquire(blocking=False)
            except Timeout:
                return
            probe.release()
        time.sleep(0.05)
    raise AssertionError(f"nobody took the index lock of {db}")


def assert_intact(db: Path, expected: int) -> None:
    """Every chunk is stored with its vector and reachable by a vector search."""
    with chromadb.PersistentClient(path=str(db), settings=Settings(anonymized_telemetry=False)) as client:
        collection = client.get_collection("qwen3_rag")
        assert collection.count() == expected
        stored = collection.get(include=["embeddings"])
        assert len(stored["ids"]) == expected and len(stored["embeddings"]) == expected
        probe = np.asarray(stored["embeddings"][0])
        reached = collection.query(query_embeddings=[probe], n_results=expected, include=[])["ids"][0]
        assert sorted(reached) == sorted(stored["ids"])


def test_a_second_index_run_waits_for_the_first_and_nothing_is_lost(tmp_path, env):
    first_docs = write_corpus(tmp_path / "planets", 60, "planet")
    second_docs = write_corpus(tmp_path / "rivers", 60, "river")
    db = tmp_path / "db"  # a new database: the first run creates it while the second starts
    first = Run(["index", first_docs, "--db", db], env)
    wait_until_locked(db)
    first.pause()
    try:
        second = Run(["index", second_docs, "--db", db], env)
        second.wait_for("another qwen3-rag index run is writing to")
    finally:
        first.resume()
    assert first.finish() == 0, first.err
    assert second.finish() == 0, second.err
    assert "Indexed 60 files (60 new chunks)" in first.err and "Indexed 60 files (60 new chunks)" in second.err
    assert "holds 120 chunks" in second.err
    assert "Traceback" not in first.err + second.err
    assert_intact(db, 120)


def test_search_and_ask_keep_working_while_an_index_run_writes(tmp_path, env):
    db = tmp_path / "db"
    seed = Run(["index", write_corpus(tmp_path / "seed", 20, "seed"), "--db", db, "-q"], env)
    assert seed.finish() == 0, seed.err
    big = Run(["index", write_corpus(tmp_path / "big", 200, "moon"), "--db", db], env)
    big.wait_for("200 files: 200 to index")
    query = ["--db", db, "--no-rerank", "--top-n", "3", "--json"]
    big.pause()  # mid-run: embedding, or holding the write lock of a group of files
    try:
        during = Run(["search", "moon", *query], env)
        deadline = time.monotonic() + WAIT
        while during.process.poll() is None and time.monotonic() < deadline:
            if "waiting for a qwen3-rag index run to finish writing" in during.err:
                break  # paused while writing: the reader waits for the write to end, as it must
            time.sleep(0.05)
    finally:
        big.resume()
    asked = Run(["ask", "What about the moon?", *query, "--max-new-tokens", "4"], env)  # unpaused, alongside
    assert during.finish() == 0, during.err
    assert asked.finish() == 0, asked.err
    assert big.finish() == 0, big.err
    for run in (during, asked):
        assert '"results"' in run.out or '"answer"' in run.out
        assert "Traceback" not in run.err
    assert_intact(db, 220)


def test_search_waits_for_a_write_in_progress_then_answers(tmp_path, env, monkeypatch, tiny_models_env):
    from qwen3_rag.cli import main
    from qwen3_rag.cli.lock import AccessLock

    db = tmp_path / "db"
    for name, value in tiny_models_env.items():
        monkeypatch.setenv(name, value)
    assert main(["index", str(write_corpus(tmp_path / "docs", 5, "tide")), "--db", str(db), "-q"]) == 0
    writer = AccessLock(db)
    with writer.writing():  # what an index run holds while it stores a group of chunks
        search = Run(["search", "tides", "--db", db, "--no-rerank", "--json"], env)
        search.wait_for("waiting for a qwen3-rag index run to finish writing")
        assert search.process.poll() is None  # still waiting: it has not read the database
    writer.close()
    assert search.finish() == 0, search.err
    assert '"results"' in search.out


def test_a_relative_model_path_works_from_any_folder_and_incremental_runs_warn_nothing(
    tmp_path, env, tiny_embedding_path, monkeypatch, capsys
):
    from qwen3_rag.cli import main

    work = tmp_path / "work"
    docs = write_corpus(work / "docs", 3, "tide")
    relative = os.path.relpath(tiny_embedding_path, work)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("QWEN3_RAG_EMBEDDING_MODEL")
    env.pop("QWEN3_RAG_EMBEDDING_MODEL")
    monkeypatch.chdir(work)
    assert main(["index", "docs", "--db", "db", "--embedding-model", relative, "-q"]) == 0
    (docs / "extra.txt").write_text("One more note about tides.", encoding="utf-8")
    second = Run(["index", "docs", "--db", "db"], env, cwd=work)  # a fresh process; the model from the index
    assert second.finish() == 0, second.err
    assert "Indexed 1 files (1 new chunks); 3 unchanged" in second.err
    assert "Could not reconstruct" not in second.err
    monkeypatch.chdir(tmp_path)  # another folder: the recorded absolute path still finds the model
    capsys.readouterr()
    assert main(["search", "tides", "--db", str(work / "db"), "--no-rerank", "--json"]) == 0, capsys.readouterr().err
    with chromadb.PersistentClient(path=str(work / "db"), settings=Settings(anonymized_telemetry=False)) as client:
        collection = client.get_collection("qwen3_rag")
        assert collection.metadata["qwen3_rag:embedding_model"] == str(tiny_embedding_path)
        assert collection.configuration_json["embedding_function"]["config"]["model"] == str(tiny_embedding_path)
