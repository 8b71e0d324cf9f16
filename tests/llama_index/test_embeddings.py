"""Qwen3Embedding: the LlamaIndex BaseEmbedding contract over the core, with the Qwen3 query recipe."""

from __future__ import annotations

import asyncio
import copy
import json
import pickle

import numpy as np
import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import ValidationError
from llama_index.core.constants import DEFAULT_EMBED_BATCH_SIZE as LLAMA_INDEX_DEFAULT_BATCH_SIZE

from langchain_qwen3 import Qwen3Embeddings
from llama_index_qwen3 import DEFAULT_EMBED_BATCH_SIZE, Qwen3Embedding
from qwen3_rag import DEFAULT_INSTRUCTION, STS_INSTRUCTION, Qwen3Embedder, format_query

QUERY = "What is the capital of China?"
TEXTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
    "Short.",
    "A much longer passage, so that the texts of one call differ in token length and get sorted and padded.",
]


def close(a, b) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32), atol=1e-5)


def test_is_a_llama_index_base_embedding_with_the_qwen3_defaults(embed_model):
    assert isinstance(embed_model, BaseEmbedding)
    assert embed_model.query_instruction == DEFAULT_INSTRUCTION
    assert embed_model.dimensions is None
    assert embed_model.max_length == 8192
    assert (embed_model.batch_size, embed_model.embedder.batch_size) == (32, 32)


def test_query_embedding_applies_the_qwen3_instruction_exactly_as_the_card(embed_model, core_embedder):
    query = embed_model.get_query_embedding(QUERY)
    # the card's format, spelled out independently of the adapter: no space after "Query:"
    card = core_embedder.embed_documents([f"Instruct: {DEFAULT_INSTRUCTION}\nQuery:{QUERY}"])[0]
    close(query, card)
    close(query, core_embedder.embed_queries([QUERY])[0])
    assert not np.allclose(query, core_embedder.embed_documents([QUERY])[0], atol=1e-3)


def test_text_embeddings_apply_no_instruction_and_equal_the_core(embed_model, core_embedder):
    expected = core_embedder.embed_documents(TEXTS)
    close(embed_model.get_text_embedding(TEXTS[0]), expected[0])
    close(embed_model.get_text_embedding_batch(TEXTS), expected)
    close(embed_model._get_text_embeddings(TEXTS), expected)


def test_query_instruction_none_embeds_the_query_bare(tiny_embedding_path, core_embedder):
    bare = Qwen3Embedding(model_name=str(tiny_embedding_path), device="cpu", query_instruction=None)
    close(bare.get_query_embedding(QUERY), core_embedder.embed_documents([QUERY])[0])


def test_custom_query_instruction_is_used_and_read_on_every_call(tiny_embedding_path, core_embedder):
    model = Qwen3Embedding(model_name=str(tiny_embedding_path), device="cpu", query_instruction=STS_INSTRUCTION)
    close(model.get_query_embedding(QUERY), core_embedder.embed_documents([format_query(QUERY, STS_INSTRUCTION)])[0])
    model.query_instruction = DEFAULT_INSTRUCTION
    close(model.get_query_embedding(QUERY), core_embedder.embed_queries([QUERY])[0])


def test_matryoshka_dimensions_give_renormalised_vectors_equal_to_the_core(tiny_embedding_path, core_embedder):
    model = Qwen3Embedding(model_name=str(tiny_embedding_path), device="cpu", dimensions=32)
    query = model.get_query_embedding(QUERY)
    texts = model.get_text_embedding_batch(TEXTS)
    assert len(query) == 32 and all(len(t) == 32 for t in texts)
    assert np.linalg.norm(query) == pytest.approx(1.0, abs=1e-5)
    close(query, core_embedder.embed_queries([QUERY], dimensions=32)[0])
    close(texts, core_embedder.embed_documents(TEXTS, dimensions=32))


def test_agg_embedding_from_queries_is_the_mean_of_instructed_query_vectors(embed_model, core_embedder):
    queries = [QUERY, "Where is Beijing?"]
    agg = embed_model.get_agg_embedding_from_queries(queries)
    close(agg, core_embedder.embed_queries(queries).mean(axis=0))


async def test_async_methods_return_the_same_vectors_as_the_sync_ones(embed_model, core_embedder):
    queries = [QUERY, "Where is Beijing?"]
    close(await embed_model.aget_query_embedding(QUERY), core_embedder.embed_queries([QUERY])[0])
    close(await embed_model.aget_text_embedding(TEXTS[0]), core_embedder.embed_documents(TEXTS[:1])[0])
    close(await embed_model.aget_text_embedding_batch(TEXTS), core_embedder.embed_documents(TEXTS))
    close(await embed_model.aget_agg_embedding_from_queries(queries), core_embedder.embed_queries(queries).mean(0))


def test_default_embed_batch_size_hands_a_whole_ingestion_batch_to_one_sorted_core_call(embed_model, monkeypatch):
    assert DEFAULT_EMBED_BATCH_SIZE >= 512 > LLAMA_INDEX_DEFAULT_BATCH_SIZE
    assert embed_model.embed_batch_size == DEFAULT_EMBED_BATCH_SIZE
    calls: list[int] = []
    core = embed_model.embedder
    original = core.embed_documents

    def spy(texts, **kwargs):
        calls.append(len(texts))
        return original(texts, **kwargs)

    monkeypatch.setattr(core, "embed_documents", spy)
    texts = [f"passage {i} " + "word " * (i % 13) for i in range(120)]
    vectors = embed_model.get_text_embedding_batch(texts)
    assert calls == [120]  # one call: the core sorts all 120 by token length, not 12 chunks of 10
    assert len(vectors) == 120


def test_embed_batch_size_is_honoured_when_set(tiny_embedding_path, monkeypatch):
    model = Qwen3Embedding(model_name=str(tiny_embedding_path), device="cpu", embed_batch_size=2)
    calls: list[int] = []
    original = model.embedder.embed_documents
    monkeypatch.setattr(model.embedder, "embed_documents", lambda t, **kw: calls.append(len(t)) or original(t, **kw))
    model.get_text_embedding_batch(TEXTS[:3])
    assert calls == [2, 1]


def test_class_name_is_stable(embed_model):
    assert Qwen3Embedding.class_name() == "Qwen3Embedding"
    assert embed_model.to_dict()["class_name"] == "Qwen3Embedding"


def test_config_round_trips_through_to_dict_and_from_dict_without_the_model(tiny_embedding_path, core_embedder):
    model = Qwen3Embedding(
        model_name=str(tiny_embedding_path),
        dimensions=48,
        query_instruction=STS_INSTRUCTION,
        device="cpu",
        dtype="float32",
        embed_batch_size=256,
        max_length=512,
        batch_size=8,
        max_batch_tokens=4096,
    )
    data = model.to_dict()
    assert json.loads(json.dumps(data)) == data  # plain JSON: no model, tokenizer or torch objects
    assert {k: data[k] for k in ("model_name", "dimensions", "query_instruction", "device", "dtype")} == {
        "model_name": str(tiny_embedding_path),
        "dimensions": 48,
        "query_instruction": STS_INSTRUCTION,
        "device": "cpu",
        "dtype": "float32",
    }
    assert (data["embed_batch_size"], data["max_length"], data["batch_size"], data["max_batch_tokens"]) == (
        256,
        512,
        8,
        4096,
    )
    restored = Qwen3Embedding.from_dict(data)
    assert restored.to_dict() == data
    assert Qwen3Embedding.from_json(model.to_json()).to_dict() == data
    assert restored.embedder.max_length == 512 and restored.embedder.batch_size == 8
    close(restored.get_query_embedding(QUERY), model.get_query_embedding(QUERY))
    close(
        restored.get_query_embedding(QUERY),
        core_embedder.embed_documents([format_query(QUERY, STS_INSTRUCTION)], dimensions=48)[0],
    )


def test_torch_device_and_dtype_objects_are_stored_as_plain_strings(tiny_embedding_path):
    import torch

    model = Qwen3Embedding(model_name=str(tiny_embedding_path), device=torch.device("cpu"), dtype=torch.float32)
    assert (model.device, model.dtype) == ("cpu", "float32")
    assert (str(model.embedder.device), model.embedder.dtype) == ("cpu", torch.float32)


def test_settings_baked_into_the_loaded_model_cannot_be_changed_silently(embed_model):
    for field, value in [("model_name", "other"), ("dimensions", 32), ("device", "cuda"), ("max_length", 64)]:
        with pytest.raises(ValidationError, match="frozen"):
            setattr(embed_model, field, value)
    assert embed_model.dimensions is None and len(embed_model.get_text_embedding("x")) == 64


def test_invalid_dimensions_are_refused_at_construction_with_the_valid_range(tiny_embedding_path):
    with pytest.raises(ValueError, match="between 32 and 64"):
        Qwen3Embedding(model_name=str(tiny_embedding_path), device="cpu", dimensions=16)


def test_one_loaded_model_is_shared_with_the_core_per_model_device_dtype(embed_model, tiny_embedding_path):
    core = Qwen3Embedder(tiny_embedding_path, device="cpu", dtype="float32")
    other = Qwen3Embedding(model_name=str(tiny_embedding_path), device="cpu", dimensions=32)
    assert embed_model.embedder._loaded.model is core._loaded.model
    assert other.embedder._loaded.model is core._loaded.model


def test_one_loaded_model_is_shared_with_the_langchain_adapter(embed_model, tiny_embedding_path):
    langchain = Qwen3Embeddings(model=str(tiny_embedding_path), device="cpu", dimensions=32)
    assert langchain._core._loaded.model is embed_model.embedder._loaded.model
    close(langchain.embed_query(QUERY), embed_model.embedder.embed_queries([QUERY], dimensions=32)[0])


def test_a_path_is_accepted_as_the_model_and_stored_as_a_string(tiny_embedding_path, embed_model):
    model = Qwen3Embedding(model_name=tiny_embedding_path, device="cpu")
    assert model.model_name == str(tiny_embedding_path)
    assert model.embedder._loaded.model is embed_model.embedder._loaded.model


def test_pickling_carries_the_config_not_the_weights(embed_model, caplog):
    data = pickle.dumps(embed_model)
    assert len(data) < 10_000  # the tiny model alone is ~400 kB; a real one is gigabytes
    assert "unpickleable" not in caplog.text  # LlamaIndex's fallback would have tried to pickle the model first
    restored = pickle.loads(data)
    assert restored.to_dict() == embed_model.to_dict()
    assert restored.embedder._loaded.model is embed_model.embedder._loaded.model  # same process: reused
    close(restored.get_query_embedding(QUERY), embed_model.get_query_embedding(QUERY))


def test_deepcopy_copies_the_config_and_shares_the_loaded_core(embed_model):
    copied = copy.deepcopy(embed_model)
    assert copied is not embed_model and copied.to_dict() == embed_model.to_dict()
    assert copied.embedder is embed_model.embedder
    copied.query_instruction = None
    assert embed_model.query_instruction == DEFAULT_INSTRUCTION


async def test_concurrent_async_chunks_and_queries_match_the_core(tiny_embedding_path, core_embedder):
    # embed_batch_size=2: LlamaIndex gathers the chunks concurrently, each in a worker thread
    model = Qwen3Embedding(model_name=str(tiny_embedding_path), device="cpu", embed_batch_size=2)
    texts = [f"text number {i} " + "word " * (3 * i) for i in range(8)]
    close(await model.aget_text_embedding_batch(texts), core_embedder.embed_documents(texts))
    queries = await asyncio.gather(*(model.aget_query_embedding(t) for t in texts))
    close(queries, core_embedder.embed_queries(texts))
