"""Qwen3Rerank: a LlamaIndex node postprocessor over the core reranker, behaving like LlamaIndex's own."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
from langchain_core.documents import Document
from llama_index.core.bridge.pydantic import ValidationError
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, QueryBundle

from langchain_qwen3 import Qwen3Rerank as LangChainRerank
from llama_index_qwen3 import RETRIEVAL_SCORE_KEY, Qwen3Rerank
from qwen3_rag import DEFAULT_INSTRUCTION, Qwen3Reranker

QUERY = "What is the capital of China?"


def texts_of(nodes):
    return [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]


def test_is_a_node_postprocessor_with_the_qwen3_defaults(make_rerank):
    rerank = make_rerank()
    assert isinstance(rerank, BaseNodePostprocessor)
    assert (rerank.top_n, rerank.instruction, rerank.keep_retrieval_score) == (3, DEFAULT_INSTRUCTION, False)
    assert (rerank.batch_size, rerank.reranker.batch_size, rerank.max_length) == (16, 16, 8192)


def test_returns_at_most_top_n_nodes_best_first_scored_with_p_yes(make_rerank, retrieved, core_reranker):
    rerank = make_rerank(top_n=3)
    out = rerank.postprocess_nodes(retrieved, query_str=QUERY)
    p_yes = core_reranker.score(QUERY, texts_of(retrieved))
    best_first = sorted(range(len(retrieved)), key=lambda i: -p_yes[i])[:3]
    assert [n.node.node_id for n in out] == [retrieved[i].node.node_id for i in best_first]
    assert [n.score for n in out] == pytest.approx([p_yes[i] for i in best_first], abs=1e-6)
    assert all(0.0 <= n.score <= 1.0 for n in out)
    assert len(set(p_yes)) == len(p_yes)  # distinct scores: the order above is meaningful


def test_returns_every_node_when_there_are_fewer_than_top_n(make_rerank, retrieved):
    out = make_rerank(top_n=10).postprocess_nodes(retrieved[:2], query_str=QUERY)
    assert sorted(n.node.node_id for n in out) == ["node-0", "node-1"]
    assert out[0].score >= out[1].score


def test_scores_the_text_with_embed_metadata_as_llama_index_rerankers_do(make_rerank, retrieved, monkeypatch):
    rerank = make_rerank()
    seen = {}
    original = rerank.reranker.rerank

    def spy(query, documents, **kwargs):
        seen.update(query=query, documents=list(documents), **kwargs)
        return original(query, documents, **kwargs)

    monkeypatch.setattr(rerank.reranker, "rerank", spy)
    rerank.postprocess_nodes(retrieved, query_bundle=QueryBundle(QUERY))
    assert seen["query"] == QUERY
    assert seen["documents"] == texts_of(retrieved)
    assert "source: doc0.txt" in seen["documents"][0] and "not for the model" not in seen["documents"][0]


def test_returns_new_node_with_scores_and_leaves_the_input_untouched(make_rerank, retrieved):
    before = [n.model_dump() for n in retrieved]
    out = make_rerank(top_n=5).postprocess_nodes(retrieved, query_str=QUERY)
    assert [n.model_dump() for n in retrieved] == before
    assert not any(o is r for o in out for r in retrieved)


def test_keep_retrieval_score_adds_it_to_the_metadata_of_a_copy(make_rerank, retrieved):
    before = [n.model_dump() for n in retrieved]
    out = make_rerank(top_n=5, keep_retrieval_score=True).postprocess_nodes(retrieved, query_str=QUERY)
    by_id = {n.node.node_id: n for n in retrieved}
    for n in out:
        original = by_id[n.node.node_id]
        assert n.node.metadata == {**original.node.metadata, RETRIEVAL_SCORE_KEY: original.score}
        assert n.node.text == original.node.text
        # the retrieval score is bookkeeping, not content: it stays out of the text the LLM and embedder see
        assert n.node.get_content(MetadataMode.LLM) == original.node.get_content(MetadataMode.LLM)
        assert n.node.get_content(MetadataMode.EMBED) == original.node.get_content(MetadataMode.EMBED)
    assert [n.model_dump() for n in retrieved] == before


def test_retrieval_score_is_not_kept_by_default(make_rerank, retrieved):
    out = make_rerank(top_n=5).postprocess_nodes(retrieved, query_str=QUERY)
    assert all(RETRIEVAL_SCORE_KEY not in n.node.metadata for n in out)


def test_without_a_query_raises_a_clear_value_error_before_emitting_anything(
    make_rerank, retrieved, instrumentation_events, callback_manager, debug_handler
):
    rerank = make_rerank(callback_manager=callback_manager)
    with pytest.raises(ValueError, match="needs the query"):
        rerank.postprocess_nodes(retrieved)
    assert not [e for e in instrumentation_events if isinstance(e, (ReRankStartEvent, ReRankEndEvent))]
    assert debug_handler.get_events(CBEventType.RERANKING) == []


def test_emits_rerank_start_and_end_events_and_the_reranking_callback_event(
    make_rerank, retrieved, instrumentation_events, callback_manager, debug_handler
):
    rerank = make_rerank(top_n=2, callback_manager=callback_manager)
    out = rerank.postprocess_nodes(retrieved, query_str=QUERY)

    rerank_events = [e for e in instrumentation_events if isinstance(e, (ReRankStartEvent, ReRankEndEvent))]
    assert [type(e) for e in rerank_events] == [ReRankStartEvent, ReRankEndEvent]
    start, end = rerank_events
    assert start.query.query_str == QUERY
    assert (start.top_n, start.model_name, len(start.nodes)) == (2, rerank.model, len(retrieved))
    assert end.nodes == out

    [(cb_start, cb_end)] = debug_handler.get_event_pairs(CBEventType.RERANKING)
    assert cb_start.payload[EventPayload.QUERY_STR] == QUERY
    assert cb_start.payload[EventPayload.TOP_K] == 2
    assert cb_start.payload[EventPayload.MODEL_NAME] == rerank.model
    assert cb_start.payload[EventPayload.NODES] == retrieved
    assert cb_end.payload[EventPayload.NODES] == out


def test_empty_input_returns_an_empty_list_with_balanced_events(make_rerank, instrumentation_events):
    assert make_rerank().postprocess_nodes([], query_str=QUERY) == []
    kinds = [type(e) for e in instrumentation_events if isinstance(e, (ReRankStartEvent, ReRankEndEvent))]
    assert kinds == [ReRankStartEvent, ReRankEndEvent]


def test_instruction_is_used_and_read_on_every_call(make_rerank, retrieved, core_reranker):
    task = "Given a question, find the passage that names a city"
    rerank = make_rerank(top_n=5, instruction=task)
    out = rerank.postprocess_nodes(retrieved, query_str=QUERY)
    expected = core_reranker.score(QUERY, texts_of(retrieved), instruction=task)
    default = core_reranker.score(QUERY, texts_of(retrieved))
    assert sorted(n.score for n in out) == pytest.approx(sorted(expected), abs=1e-6)
    assert sorted(expected) != pytest.approx(sorted(default), abs=1e-6)
    rerank.instruction = DEFAULT_INSTRUCTION
    out = rerank.postprocess_nodes(retrieved, query_str=QUERY)
    assert sorted(n.score for n in out) == pytest.approx(sorted(default), abs=1e-6)


def test_top_n_is_read_on_every_call(make_rerank, retrieved):
    rerank = make_rerank(top_n=4)
    assert len(rerank.postprocess_nodes(retrieved, query_str=QUERY)) == 4
    rerank.top_n = 1
    assert len(rerank.postprocess_nodes(retrieved, query_str=QUERY)) == 1


async def test_async_postprocess_returns_the_same_nodes_and_scores(make_rerank, retrieved):
    rerank = make_rerank(top_n=3)
    sync = rerank.postprocess_nodes(retrieved, query_str=QUERY)
    out = await rerank.apostprocess_nodes(retrieved, query_str=QUERY)
    assert [(n.node.node_id, n.score) for n in out] == [(n.node.node_id, n.score) for n in sync]


def test_class_name_is_stable(make_rerank):
    assert Qwen3Rerank.class_name() == "Qwen3Rerank"
    assert make_rerank().to_dict()["class_name"] == "Qwen3Rerank"


def test_config_round_trips_through_to_dict_and_from_dict_without_the_model(make_rerank, retrieved):
    rerank = make_rerank(
        top_n=2,
        instruction="Find passages about capitals",
        keep_retrieval_score=True,
        dtype="float32",
        max_length=256,
        batch_size=4,
        max_batch_tokens=2048,
    )
    data = rerank.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert {k: v for k, v in data.items() if k != "model"} == {
        "top_n": 2,
        "instruction": "Find passages about capitals",
        "keep_retrieval_score": True,
        "device": "cpu",
        "dtype": "float32",
        "max_length": 256,
        "batch_size": 4,
        "max_batch_tokens": 2048,
        "base_url": None,
        "class_name": "Qwen3Rerank",
    }
    restored = Qwen3Rerank.from_dict(data)
    assert restored.to_dict() == data
    assert Qwen3Rerank.from_json(rerank.to_json()).to_dict() == data
    assert (restored.reranker.max_length, restored.reranker.batch_size) == (256, 4)
    assert [(n.node.node_id, n.score) for n in restored.postprocess_nodes(retrieved, query_str=QUERY)] == [
        (n.node.node_id, n.score) for n in rerank.postprocess_nodes(retrieved, query_str=QUERY)
    ]


def test_settings_baked_into_the_loaded_model_cannot_be_changed_silently(make_rerank):
    rerank = make_rerank()
    for field, value in [("model", "other"), ("device", "cuda"), ("dtype", "float16"), ("max_length", 64)]:
        with pytest.raises(ValidationError, match="frozen"):
            setattr(rerank, field, value)


def test_one_loaded_model_is_shared_with_the_core_per_model_device_dtype(make_rerank, tiny_reranker_path):
    core = Qwen3Reranker(tiny_reranker_path, device="cpu", dtype="float32")
    assert make_rerank().reranker._loaded.model is core._loaded.model
    assert make_rerank(top_n=1, instruction="other").reranker._loaded.model is core._loaded.model


def test_one_loaded_model_is_shared_with_the_langchain_adapter(make_rerank, tiny_reranker_path, retrieved):
    rerank = make_rerank(top_n=5)
    langchain = LangChainRerank(model=str(tiny_reranker_path), device="cpu", top_n=5)
    assert langchain._core._loaded.model is rerank.reranker._loaded.model
    texts = texts_of(retrieved)
    ours = [n.score for n in rerank.postprocess_nodes(retrieved, query_str=QUERY)]
    theirs = langchain.compress_documents([Document(page_content=t) for t in texts], QUERY)
    assert ours == pytest.approx([d.metadata["relevance_score"] for d in theirs], abs=1e-6)


def test_pickling_carries_the_config_not_the_weights(make_rerank, retrieved, caplog):
    rerank = make_rerank(top_n=2)
    data = pickle.dumps(rerank)
    assert len(data) < 10_000
    assert "unpickleable" not in caplog.text
    restored = pickle.loads(data)
    assert restored.to_dict() == rerank.to_dict()
    assert restored.reranker._loaded.model is rerank.reranker._loaded.model
    assert [n.node.node_id for n in restored.postprocess_nodes(retrieved, query_str=QUERY)] == [
        n.node.node_id for n in rerank.postprocess_nodes(retrieved, query_str=QUERY)
    ]


def test_deepcopy_copies_the_config_and_shares_the_loaded_core(make_rerank):
    rerank = make_rerank(top_n=2)
    copied = copy.deepcopy(rerank)
    copied.top_n = 4
    assert (rerank.top_n, copied.top_n) == (2, 4)
    assert copied.reranker is rerank.reranker
