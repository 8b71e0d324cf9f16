"""The LangChain adapters pass ``dtype="int8"`` (the CPU int8 mode) to the core, and refuse it on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_core.documents import Document

from langchain_qwen3 import Qwen3Embeddings, Qwen3Rerank
from qwen3_rag import Qwen3Embedder, Qwen3Reranker

TEXTS = ["Beijing is the capital of China.", "Gravity pulls bodies together.", "Bread needs flour and water."]


def test_embeddings_run_the_int8_core(tiny_embedding_path):
    embeddings = Qwen3Embeddings(model=str(tiny_embedding_path), device="cpu", dtype="int8")
    assert embeddings.dtype == "int8"
    assert embeddings._core.quantization == "int8"
    core = Qwen3Embedder(tiny_embedding_path, device="cpu", dtype="int8")
    np.testing.assert_allclose(embeddings.embed_documents(TEXTS), core.embed_documents(TEXTS), atol=1e-6)
    fp32 = Qwen3Embedder(tiny_embedding_path, device="cpu", dtype="float32").embed_documents(TEXTS)
    assert (np.asarray(embeddings.embed_documents(TEXTS)) * fp32).sum(axis=1).min() >= 0.99


def test_rerank_runs_the_int8_core(tiny_reranker_path):
    rerank = Qwen3Rerank(model=str(tiny_reranker_path), device="cpu", dtype="int8", top_n=3)
    assert rerank._core.quantization == "int8"
    documents = [Document(page_content=text) for text in TEXTS]
    scores = [d.metadata["relevance_score"] for d in rerank.compress_documents(documents, "capital of China?")]
    core = Qwen3Reranker(tiny_reranker_path, device="cpu", dtype="int8").score("capital of China?", TEXTS)
    np.testing.assert_allclose(sorted(scores, reverse=True), sorted(core, reverse=True), atol=1e-6)


def test_int8_on_a_gpu_is_refused(tiny_embedding_path, tiny_reranker_path):
    with pytest.raises(ValueError, match="CPU mode"):
        Qwen3Embeddings(model=str(tiny_embedding_path), device="cuda", dtype="int8")
    with pytest.raises(ValueError, match="CPU mode"):
        Qwen3Rerank(model=str(tiny_reranker_path), device="cuda", dtype="int8")
