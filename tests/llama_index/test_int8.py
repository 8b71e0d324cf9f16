"""The LlamaIndex adapters pass ``dtype="int8"`` (the CPU int8 mode) to the core, and refuse it on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from llama_index_qwen3 import Qwen3Embedding, Qwen3Rerank
from qwen3_rag import Qwen3Embedder, Qwen3Reranker

TEXTS = ["Beijing is the capital of China.", "Gravity pulls bodies together.", "Bread needs flour and water."]


def test_embedding_runs_the_int8_core(tiny_embedding_path):
    model = Qwen3Embedding(model_name=str(tiny_embedding_path), device="cpu", dtype="int8")
    assert model._embedder.quantization == "int8"
    core = Qwen3Embedder(tiny_embedding_path, device="cpu", dtype="int8")
    np.testing.assert_allclose(model.get_text_embedding_batch(TEXTS), core.embed_documents(TEXTS), atol=1e-6)


def test_rerank_runs_the_int8_core(tiny_reranker_path):
    rerank = Qwen3Rerank(model=str(tiny_reranker_path), device="cpu", dtype="int8", top_n=3)
    assert rerank._reranker.quantization == "int8"
    nodes = [NodeWithScore(node=TextNode(text=text)) for text in TEXTS]
    scores = [n.score for n in rerank.postprocess_nodes(nodes, QueryBundle("capital of China?"))]
    core = Qwen3Reranker(tiny_reranker_path, device="cpu", dtype="int8").score("capital of China?", TEXTS)
    np.testing.assert_allclose(sorted(scores, reverse=True), sorted(core, reverse=True), atol=1e-6)


def test_int8_on_a_gpu_is_refused(tiny_embedding_path, tiny_reranker_path):
    with pytest.raises(ValueError, match="CPU mode"):
        Qwen3Embedding(model_name=str(tiny_embedding_path), device="cuda", dtype="int8")
    with pytest.raises(ValueError, match="CPU mode"):
        Qwen3Rerank(model=str(tiny_reranker_path), device="cuda", dtype="int8")
