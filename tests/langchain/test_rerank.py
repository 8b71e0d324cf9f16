"""Qwen3Rerank: the document-compressor contract (no standard suite exists for compressors) over the core."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading

import pytest
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ValidationError

from langchain_qwen3 import Qwen3Rerank
from qwen3_rag import STS_INSTRUCTION, Qwen3Reranker
from tests.langchain.texts import PASSAGES, QUERY


def best_first(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])


# -- the compressor contract -------------------------------------------------------------------------------


def test_is_a_langchain_document_compressor(make_rerank):
    assert isinstance(make_rerank(), BaseDocumentCompressor)


def test_defaults_are_the_model_card_settings():
    fields = Qwen3Rerank.model_fields
    assert fields["model"].default == "Qwen/Qwen3-Reranker-0.6B"
    assert fields["instruction"].default == "Given a web search query, retrieve relevant passages that answer the query"
    assert fields["top_n"].default == 3
    assert fields["score_threshold"].default is None
    assert fields["max_length"].default == 8192


def test_returns_the_top_n_best_first_with_the_core_scores(make_rerank, core_reranker, documents):
    scores = core_reranker.score(QUERY, PASSAGES)
    assert len(set(scores)) == len(scores)  # the tiny model tells them apart, so the order is meaningful
    result = make_rerank(top_n=3).compress_documents(documents, QUERY)
    assert [doc.id for doc in result] == [f"doc-{i}" for i in best_first(scores)[:3]]
    assert [doc.metadata["relevance_score"] for doc in result] == pytest.approx(
        sorted(scores, reverse=True)[:3], abs=1e-6
    )
    assert all(0.0 <= doc.metadata["relevance_score"] <= 1.0 for doc in result)


def test_top_n_none_returns_every_document_reordered(make_rerank, core_reranker, documents):
    result = make_rerank(top_n=None).compress_documents(documents, QUERY)
    assert [doc.id for doc in result] == [f"doc-{i}" for i in best_first(core_reranker.score(QUERY, PASSAGES))]


def test_top_n_larger_than_the_input_returns_every_document(make_rerank, documents):
    assert len(make_rerank(top_n=50).compress_documents(documents[:2], QUERY)) == 2


def test_returns_new_documents_with_copied_metadata_and_the_same_id_and_content(make_rerank, documents):
    by_id = {doc.id: doc for doc in documents}
    for doc in make_rerank(top_n=None).compress_documents(documents, QUERY):
        original = by_id[doc.id]
        assert doc is not original and doc.metadata is not original.metadata
        assert doc.metadata["tags"] is not original.metadata["tags"]  # deep copy: nested values too
        assert doc.page_content == original.page_content
        assert {k: v for k, v in doc.metadata.items() if k != "relevance_score"} == original.metadata


def test_never_mutates_the_input_documents(make_rerank, documents):
    before = [doc.model_dump() for doc in documents]
    result = make_rerank(top_n=None).compress_documents(documents, QUERY)
    assert [doc.model_dump() for doc in documents] == before
    result[0].metadata["tags"].append("changed downstream")
    result[0].metadata["source"] = "changed downstream"
    assert [doc.model_dump() for doc in documents] == before


def test_score_threshold_drops_documents_under_it(make_rerank, core_reranker, documents):
    scores = sorted(core_reranker.score(QUERY, PASSAGES), reverse=True)
    threshold = scores[3]  # keep exactly the four best: a score equal to the threshold is not under it
    result = make_rerank(top_n=None, score_threshold=threshold).compress_documents(documents, QUERY)
    assert [doc.metadata["relevance_score"] for doc in result] == pytest.approx(scores[:4], abs=1e-6)
    assert len(make_rerank(top_n=2, score_threshold=threshold).compress_documents(documents, QUERY)) == 2
    assert make_rerank(score_threshold=1.0).compress_documents(documents, QUERY) == []


def test_no_documents_in_no_documents_out(make_rerank, monkeypatch):
    reranker = make_rerank()

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model ran on an empty input")

    monkeypatch.setattr(Qwen3Reranker, "score", must_not_run)
    assert reranker.compress_documents([], QUERY) == []
    assert asyncio.run(reranker.acompress_documents([], QUERY)) == []


def test_instruction_reaches_the_model(make_rerank, core_reranker, documents):
    sts = make_rerank(top_n=None, instruction=STS_INSTRUCTION)
    expected = core_reranker.score(QUERY, PASSAGES, instruction=STS_INSTRUCTION)
    got = {doc.id: doc.metadata["relevance_score"] for doc in sts.compress_documents(documents, QUERY)}
    assert [got[f"doc-{i}"] for i in range(len(PASSAGES))] == pytest.approx(expected, abs=1e-6)
    assert expected != pytest.approx(core_reranker.score(QUERY, PASSAGES), abs=1e-4)


def test_settings_changed_after_construction_apply_to_the_next_call(make_rerank, core_reranker, documents):
    reranker = make_rerank()
    reranker.top_n = 1
    assert len(reranker.compress_documents(documents, QUERY)) == 1
    reranker.instruction = STS_INSTRUCTION
    expected = max(core_reranker.score(QUERY, PASSAGES, instruction=STS_INSTRUCTION))
    assert reranker.compress_documents(documents, QUERY)[0].metadata["relevance_score"] == pytest.approx(expected)


# -- rerank(): index + relevance_score ---------------------------------------------------------------------


def test_rerank_returns_indexes_and_relevance_scores_best_first(make_rerank, core_reranker, documents):
    scores = core_reranker.score(QUERY, PASSAGES)
    hits = make_rerank(top_n=3).rerank(documents, QUERY)
    assert [hit["index"] for hit in hits] == best_first(scores)[:3]
    assert [hit["relevance_score"] for hit in hits] == pytest.approx([scores[i] for i in best_first(scores)[:3]])
    assert all(set(hit) == {"index", "relevance_score"} for hit in hits)
    json.dumps(hits)


def test_rerank_takes_strings_and_per_call_overrides(make_rerank, core_reranker):
    reranker = make_rerank(top_n=1, score_threshold=0.99)
    scores = core_reranker.score(QUERY, PASSAGES)
    everything = reranker.rerank(PASSAGES, QUERY, top_n=None, score_threshold=None)
    assert [hit["index"] for hit in everything] == best_first(scores)
    assert len(reranker.rerank(PASSAGES, QUERY, score_threshold=None)) == 1
    assert reranker.rerank([], QUERY) == []


def test_rerank_rejects_bad_inputs(make_rerank):
    reranker = make_rerank()
    with pytest.raises(TypeError, match=r"documents\[1\]"):
        reranker.rerank(["fine", 3], QUERY)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="single str"):
        reranker.rerank("a lone string", QUERY)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="query"):
        reranker.rerank(PASSAGES, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_n"):
        reranker.rerank(PASSAGES, QUERY, top_n=0)


# -- async -------------------------------------------------------------------------------------------------


async def test_acompress_documents_equals_the_sync_result(make_rerank, documents):
    reranker = make_rerank(top_n=4)
    assert await reranker.acompress_documents(documents, QUERY) == reranker.compress_documents(documents, QUERY)


async def test_acompress_documents_runs_the_model_off_the_event_loop(make_rerank, documents, monkeypatch):
    """The model call blocks until the event loop itself releases it: only possible if it runs elsewhere."""
    reranker = make_rerank()
    release = threading.Event()
    threads: list[int] = []
    original = Qwen3Reranker.score

    def blocking(self, *args, **kwargs):
        threads.append(threading.get_ident())
        if not release.wait(timeout=5):
            raise AssertionError("the event loop was blocked while the model ran")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Qwen3Reranker, "score", blocking)
    task = asyncio.create_task(reranker.acompress_documents(documents, QUERY))
    for _ in range(500):
        if threads:
            break
        await asyncio.sleep(0.01)
    release.set()
    result = await task
    assert threads and threads[0] != threading.get_ident()
    assert len(result) == 3


async def test_concurrent_async_calls_each_get_their_own_ranking(make_rerank, documents):
    reranker = make_rerank(top_n=None)
    queries = [QUERY, "Why do things fall?", "What do plants make from light?", "Where is Paris?"]
    expected = [reranker.compress_documents(documents, q) for q in queries]
    results = await asyncio.gather(*(reranker.acompress_documents(documents, q) for q in queries))
    assert [[d.id for d in r] for r in results] == [[d.id for d in r] for r in expected]
    for got, want in zip(results, expected, strict=True):
        assert [d.metadata["relevance_score"] for d in got] == pytest.approx(
            [d.metadata["relevance_score"] for d in want], abs=1e-6
        )


# -- one model per (model, device, dtype) ------------------------------------------------------------------


def test_instances_share_one_loaded_model_with_the_core(make_rerank, tiny_reranker_path, core_reranker):
    first = make_rerank(top_n=1)
    second = Qwen3Rerank(model_name=str(tiny_reranker_path), device="cpu", dtype="float32", batch_size=2)
    assert first._core._loaded is second._core._loaded is core_reranker._loaded
    assert make_rerank(dtype="bfloat16")._core._loaded is not core_reranker._loaded


def test_shares_the_loaded_model_with_the_llama_index_adapter(make_rerank, tiny_reranker_path, core_reranker):
    from llama_index_qwen3 import Qwen3Rerank as LlamaIndexQwen3Rerank

    llama = LlamaIndexQwen3Rerank(model=str(tiny_reranker_path), device="cpu")
    assert llama.reranker._loaded is make_rerank()._core._loaded is core_reranker._loaded


# -- pydantic config ---------------------------------------------------------------------------------------


def test_model_accepts_the_model_name_alias(tiny_reranker_path):
    assert Qwen3Rerank(model_name=str(tiny_reranker_path), device="cpu").model == str(tiny_reranker_path)


@pytest.mark.parametrize("misspelt", ["top_k", "threshold", "query_instruction", "model_path"])
def test_a_misspelt_argument_is_an_error(make_rerank, misspelt):
    with pytest.raises(ValidationError, match=misspelt):
        make_rerank(**{misspelt: 1})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_n": 0}, "top_n"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_length": 10}, "max_length"),
        ({"dtype": "int4"}, "dtype"),
    ],
)
def test_invalid_settings_fail_at_construction(make_rerank, kwargs, message):
    with pytest.raises(ValidationError, match=message):
        make_rerank(**kwargs)


def test_invalid_settings_assigned_later_are_refused(make_rerank):
    reranker = make_rerank()
    with pytest.raises(ValidationError, match="top_n"):
        reranker.top_n = 0
    with pytest.raises(ValidationError, match="frozen"):
        reranker.model = "other"
    assert reranker.top_n == 3


def test_assigning_settings_builds_no_new_core(make_rerank):
    reranker = make_rerank()
    core = reranker._core
    reranker.top_n = 5
    reranker.score_threshold = 0.25
    reranker.instruction = STS_INSTRUCTION
    assert reranker._core is core
    assert (reranker.top_n, reranker.score_threshold, reranker.instruction) == (5, 0.25, STS_INSTRUCTION)


def test_assigning_top_n_to_a_served_reranker_opens_no_client(monkeypatch):
    from qwen3_rag import remote

    opened = []
    connect = remote._VLLMClient._connect
    monkeypatch.setattr(remote._VLLMClient, "_connect", lambda client: opened.append(client) or connect(client))
    reranker = Qwen3Rerank(model="served-reranker", base_url="http://127.0.0.1:9")  # nothing is sent
    core, client = reranker._core, reranker._core._remote._client
    reranker.top_n = 5
    reranker.instruction = "another task"
    assert reranker._core is core and reranker._core._remote._client is client and not client.is_closed
    assert len(opened) == 1
    with reranker:
        pass
    assert client.is_closed


def test_nan_scores_raise_instead_of_being_filtered_to_nothing(tiny_reranker_path, tmp_path, documents):
    from qwen3_rag import NonFiniteError
    from tests.core.checkpoints import overflowing_in_float16

    overflowing = overflowing_in_float16(tiny_reranker_path, tmp_path / "overflowing")
    reranker = Qwen3Rerank(model=str(overflowing), dtype="float16", score_threshold=0.0, top_n=None)
    with pytest.raises(NonFiniteError, match="dtype='bfloat16'"):
        reranker.compress_documents(documents, QUERY)


def test_the_model_object_is_not_part_of_dump_or_repr(make_rerank, tiny_reranker_path):
    reranker = make_rerank()
    dumped = reranker.model_dump()
    assert set(dumped) == set(Qwen3Rerank.model_fields)
    assert dumped["model"] == str(tiny_reranker_path)
    json.dumps(dumped)
    text = repr(reranker)
    assert text.startswith("Qwen3Rerank(") and "Qwen3Reranker" not in text and "ForCausalLM" not in text


def test_every_field_is_documented():
    for name, field in Qwen3Rerank.model_fields.items():
        assert field.description and len(field.description) > 15, name


def test_class_docstring_has_the_langchain_sections():
    doc = inspect.getdoc(Qwen3Rerank)
    positions = [doc.index(s) for s in ("Setup:", "Key init args", "Instantiate:", "Rerank documents:", "Async:")]
    assert positions == sorted(positions)


async def test_class_docstring_snippets_run(run_docstring_code):
    namespace = await run_docstring_code(Qwen3Rerank)
    assert isinstance(namespace["reranker"], Qwen3Rerank)
    assert len(namespace["best"]) == 2
    assert all(isinstance(doc, Document) and "relevance_score" in doc.metadata for doc in namespace["best"])
