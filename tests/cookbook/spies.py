"""Spies shared by the CLI tests."""

from __future__ import annotations

import pytest

from qwen3_rag.embedder import Qwen3Embedder


def count_document_embeddings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record how many texts each embed_documents call receives."""
    calls: list[int] = []
    original = Qwen3Embedder.embed_documents

    def spy(self, texts, **kwargs):
        calls.append(len(texts))
        return original(self, texts, **kwargs)

    monkeypatch.setattr(Qwen3Embedder, "embed_documents", spy)
    return calls
