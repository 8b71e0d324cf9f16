"""`base_url` selects a vLLM server in the core and in all four adapters (no request is sent here; the
real-server equality tests are tests/scaleout/test_vllm.py)."""

from __future__ import annotations

import pytest

from langchain_qwen3 import Qwen3Embeddings, Qwen3Rerank
from llama_index_qwen3 import Qwen3Embedding
from llama_index_qwen3 import Qwen3Rerank as LlamaQwen3Rerank
from qwen3_rag import Qwen3Embedder, Qwen3Reranker

URL = "http://127.0.0.1:9"  # nothing listens: constructing a client sends nothing


def _remote(obj):
    for attr in ("_core", "_embedder", "_reranker"):
        obj = getattr(obj, attr, obj)
    return obj._remote


@pytest.mark.parametrize(
    "build",
    [
        lambda: Qwen3Embedder("served-embedder", base_url=URL, api_key="sk-test"),
        lambda: Qwen3Reranker("served-reranker", base_url=URL, api_key="sk-test"),
        lambda: Qwen3Embeddings(model="served-embedder", base_url=URL, api_key="sk-test"),
        lambda: Qwen3Rerank(model="served-reranker", base_url=URL, api_key="sk-test"),
        lambda: Qwen3Embedding(model_name="served-embedder", base_url=URL, api_key="sk-test"),
        lambda: LlamaQwen3Rerank(model="served-reranker", base_url=URL, api_key="sk-test"),
    ],
)
def test_base_url_and_api_key_reach_the_server_client(build):
    remote = _remote(build())
    assert remote is not None
    assert remote.base_url == URL
    assert remote.model.startswith("served-")
    assert remote._client.headers["Authorization"] == "Bearer sk-test"


def test_the_api_key_is_not_shown_or_serialised():
    lc = Qwen3Embeddings(model="served-embedder", base_url=URL, api_key="sk-test")
    assert "sk-test" not in repr(lc) and "sk-test" not in str(lc.model_dump())
    li = Qwen3Embedding(model_name="served-embedder", base_url=URL, api_key="sk-test")
    assert "sk-test" not in repr(li) and "sk-test" not in li.to_json()


def test_a_served_model_reports_no_local_tokenizer():
    with pytest.raises(NotImplementedError, match="server"):
        Qwen3Embedder("served-embedder", base_url=URL).tokenize(["x"])
