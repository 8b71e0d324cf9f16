"""`base_url` selects a vLLM server in the core and in all four adapters; constructing one sends nothing, and
closing one closes its connections (no request is sent here; the real-server equality tests are
tests/scaleout/test_vllm.py)."""

from __future__ import annotations

import pytest

from langchain_qwen3 import Qwen3Embeddings, Qwen3Rerank
from llama_index_qwen3 import Qwen3Embedding
from llama_index_qwen3 import Qwen3Rerank as LlamaQwen3Rerank
from qwen3_rag import Qwen3Embedder, Qwen3Reranker
from qwen3_rag.remote import RemoteError

URL = "http://127.0.0.1:9"  # nothing listens: constructing a client sends nothing

BUILDERS = [
    lambda: Qwen3Embedder("served-embedder", base_url=URL, api_key="sk-test"),
    lambda: Qwen3Reranker("served-reranker", base_url=URL, api_key="sk-test"),
    lambda: Qwen3Embeddings(model="served-embedder", base_url=URL, api_key="sk-test"),
    lambda: Qwen3Rerank(model="served-reranker", base_url=URL, api_key="sk-test"),
    lambda: Qwen3Embedding(model_name="served-embedder", base_url=URL, api_key="sk-test"),
    lambda: LlamaQwen3Rerank(model="served-reranker", base_url=URL, api_key="sk-test"),
]


def _remote(obj):
    for attr in ("_core", "_embedder", "_reranker"):
        obj = getattr(obj, attr, obj)
    return obj._remote


@pytest.mark.parametrize("build", BUILDERS)
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


@pytest.mark.parametrize("build", BUILDERS)
def test_close_and_with_close_the_server_connections(build):
    obj = build()
    assert not _remote(obj)._client.is_closed
    obj.close()
    assert _remote(obj)._client.is_closed
    with build() as again:
        client = _remote(again)._client
        assert not client.is_closed
    assert client.is_closed


def test_local_models_close_without_error(tiny_embedding_path, tiny_reranker_path):
    with Qwen3Embedder(tiny_embedding_path) as emb, Qwen3Reranker(tiny_reranker_path) as rr:
        assert emb.embed_documents(["x"]).shape == (1, 64) and len(rr.score("q", ["d"])) == 1


def test_a_remote_embedder_with_dimensions_is_built_without_the_server():
    emb = Qwen3Embedder("served-embedder", base_url=URL, dimensions=32)  # nothing listens at URL
    assert emb.dimensions == 32
    with pytest.raises(ValueError, match="dimensions must be an integer >= 32"):
        Qwen3Embedder("served-embedder", base_url=URL, dimensions=16)  # what is known without the server


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_a_server_that_is_down_is_a_one_line_remote_error_at_first_use(monkeypatch):
    from qwen3_rag import remote

    monkeypatch.setattr(remote, "_sleep", lambda seconds: None)
    emb = Qwen3Embedder("served-embedder", base_url=URL, dimensions=32)
    with pytest.raises(RemoteError, match=r"could not reach the vLLM server at http://127.0.0.1:9/") as error:
        emb.embed_documents(["a"])
    assert "\n" not in str(error.value) and error.value.status_code is None
