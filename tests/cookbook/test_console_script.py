"""The installed ``qwen3-rag`` console script, run as a user runs it: a separate process configured only through
the environment variables, offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from qwen3_rag.cli import main

DATA = Path(__file__).resolve().parents[2] / "cookbook" / "data"


def console_script() -> str:
    """The script next to this interpreter (the virtualenv's bin/), else the one on PATH."""
    beside = Path(sys.executable).with_name("qwen3-rag")
    return str(beside) if beside.exists() else shutil.which("qwen3-rag") or "qwen3-rag"


def test_console_script_answers_from_the_sample_corpus(tmp_path, tiny_models_env, monkeypatch, capsys):
    db = tmp_path / "db"
    for name, value in tiny_models_env.items():
        monkeypatch.setenv(name, value)
    assert main(["index", str(DATA), "--db", str(db), "--quiet"]) == 0  # in process: the index is not under test
    capsys.readouterr()

    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3_RAG_")}
    env.update(tiny_models_env, QWEN3_RAG_DB=str(db))
    question = "How does Matryoshka truncation change an embedding?"
    done = subprocess.run(
        [console_script(), "ask", question, "--top-k", "8", "--top-n", "3", "--max-new-tokens", "8", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["question"] == question
    assert payload["llm"] == tiny_models_env["QWEN3_RAG_LLM"]
    assert len(payload["sources"]) == 3
    assert all((DATA / Path(s["source"]).name).is_file() for s in payload["sources"])
    assert "Traceback" not in done.stderr


def test_console_script_errors_are_one_line_with_their_status(tmp_path, tiny_models_env):
    """As a user's shell sees them: a device this machine lacks (2, before any model loads), a missing model
    folder (1), each one line on stderr and nothing on stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3_RAG_")}
    env.update(tiny_models_env, QWEN3_RAG_DB=str(tmp_path / "db"))
    for args, code, message in (
        (["index", str(DATA), "--device", "cuda:99"], 2, "qwen3-rag index: error: --device: device 'cuda:99'"),
        (["index", str(DATA), "--embedding-model", "./models/x"], 1, "there is no local folder at"),
    ):
        done = subprocess.run(
            [console_script(), *args], capture_output=True, text=True, env=env, timeout=300, check=False
        )
        assert done.returncode == code, done.stderr
        assert done.stdout == ""
        assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr
        if code == 2:
            assert not (tmp_path / "db").exists()  # refused before anything was written
