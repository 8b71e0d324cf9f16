"""Fixtures for the CLI and notebook tests: the tiny checkpoints selected through the environment variables a
user would set, a small corpus, and an in-process runner for ``qwen3-rag``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from qwen3_rag import Qwen3Embedder, Qwen3Reranker
from qwen3_rag.cli import main


@pytest.fixture(scope="session")
def tiny_models_env(tiny_embedding_path: Path, tiny_reranker_path: Path, tiny_chat_path: Path) -> dict[str, str]:
    """The variables that point qwen3-rag (and the notebooks) at the tiny checkpoints, offline, on the CPU."""
    return {
        "QWEN3_RAG_EMBEDDING_MODEL": str(tiny_embedding_path),
        "QWEN3_RAG_RERANKER_MODEL": str(tiny_reranker_path),
        "QWEN3_RAG_LLM": str(tiny_chat_path),
        "QWEN3_RAG_DEVICE": "cpu",
        "QWEN3_RAG_MAX_NEW_TOKENS": "16",  # random weights write noise: keep it short
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


@pytest.fixture(scope="session")
def _warm_models(tiny_embedding_path: Path, tiny_reranker_path: Path) -> tuple[Qwen3Embedder, Qwen3Reranker]:
    """Held for the session, so every in-process CLI run reuses the loaded tiny weights (models are shared)."""
    return Qwen3Embedder(tiny_embedding_path, device="cpu"), Qwen3Reranker(tiny_reranker_path, device="cpu")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tiny_models_env: dict[str, str], _warm_models, tmp_path: Path) -> Path:
    """Set the tiny-model variables (and QWEN3_RAG_DB to a fresh folder, returned), clear any other QWEN3_RAG_*."""
    import os

    for name in list(os.environ):
        if name.startswith("QWEN3_RAG_"):
            monkeypatch.delenv(name)
    for name, value in tiny_models_env.items():
        monkeypatch.setenv(name, value)
    db = tmp_path / "db"
    monkeypatch.setenv("QWEN3_RAG_DB", str(db))
    return db


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def qwen3_rag(capsys: pytest.CaptureFixture[str], cli_env: Path) -> Callable[..., Result]:
    """Run ``qwen3-rag ARGS...`` in this process; returns its exit status, stdout and stderr."""

    def run(*args: str) -> Result:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


CORPUS = {
    "stars.md": "# Stars\n\nThe sun is a star. Stars shine because nuclear fusion turns hydrogen into helium.\n\n"
    "Planets orbit stars. The Earth orbits the sun once a year.\n",
    "bread.txt": "Bread needs flour, water, salt and yeast. Knead the dough, let it rise, then bake it hot.\n",
    "notes/tides.md": "# Tides\n\nThe Moon's gravity raises two bulges in the oceans, so most coasts see "
    "two high tides a day.\n",
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A folder with three small documents (one in a subfolder)."""
    root = tmp_path / "corpus"
    for name, text in CORPUS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
