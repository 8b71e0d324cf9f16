"""Bad input gets a clear error naming the argument; edge cases return the right shapes; threads are safe."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from qwen3_rag import Qwen3Embedder, Qwen3Reranker


@pytest.fixture(scope="module")
def emb(tiny_embedding_path):
    return Qwen3Embedder(tiny_embedding_path)


@pytest.fixture(scope="module")
def rr(tiny_reranker_path):
    return Qwen3Reranker(tiny_reranker_path)


def test_empty_lists_return_empty_results(emb, rr):
    assert emb.embed_documents([]).shape == (0, emb.dimension)
    assert emb.embed_queries([], dimensions=32).shape == (0, 32)
    assert rr.score("q", []) == []
    assert rr.rerank("q", []) == []


def test_empty_strings_are_valid_texts(emb, rr):
    out = emb.embed_documents(["", "x"])
    assert out.shape == (2, emb.dimension)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert len(rr.score("", ["", "d"])) == 2


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["nested"]])
def test_a_non_string_names_its_index(emb, rr, bad):
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        emb.embed_documents(["ok", bad])
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        emb.embed_queries(["ok", bad])
    with pytest.raises(TypeError, match=r"documents\[1\] must be a str"):
        rr.score("q", ["ok", bad])


def test_a_bare_string_is_refused_not_split_into_characters(emb, rr):
    with pytest.raises(TypeError, match="got a single str"):
        emb.embed_documents("hello")
    with pytest.raises(TypeError, match="got a single str"):
        rr.score("q", "document")
    with pytest.raises(TypeError, match="query must be a str"):
        rr.score(["q"], ["d"])


@pytest.mark.parametrize("dims", [0, 31, 65, 1.5, True, "64"])
def test_dimensions_out_of_range_name_the_argument_and_range(emb, tiny_embedding_path, dims):
    with pytest.raises(ValueError, match=r"dimensions must be an integer between 32 and 64"):
        emb.embed_documents(["x"], dimensions=dims)
    with pytest.raises(ValueError, match=r"dimensions must be an integer between 32 and 64"):
        Qwen3Embedder(tiny_embedding_path, dimensions=dims)


@pytest.mark.parametrize("name", ["batch_size", "max_length", "max_batch_tokens"])
@pytest.mark.parametrize("value", [0, -1])
def test_sizes_below_one_are_refused(tiny_embedding_path, tiny_reranker_path, name, value):
    with pytest.raises(ValueError, match=rf"{name} must be an integer >= 1"):
        Qwen3Embedder(tiny_embedding_path, **{name: value})
    with pytest.raises(ValueError, match=rf"{name} must be an integer >= 1"):
        Qwen3Reranker(tiny_reranker_path, **{name: value})


@pytest.mark.parametrize("top_n", [0, -3, 2.5])
def test_top_n_below_one_is_refused(rr, top_n):
    with pytest.raises(ValueError, match="top_n must be an integer >= 1"):
        rr.rerank("q", ["a", "b"], top_n=top_n)


def test_top_n_larger_than_the_list_returns_all(rr):
    assert len(rr.rerank("q", ["a", "b"], top_n=10)) == 2


def test_instruction_must_be_text(emb):
    with pytest.raises(TypeError, match="instruction must be a str or None"):
        emb.embed_queries(["q"], instruction=42)


def test_concurrent_calls_from_threads_give_the_serial_results(emb, rr):
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(24)]
    serial_vectors = emb.embed_queries(texts)
    serial_scores = rr.score("query", texts)
    with ThreadPoolExecutor(max_workers=6) as pool:
        vectors = list(pool.map(lambda i: emb.embed_queries(texts[i : i + 4]), range(0, 24, 4)))
        scores = list(pool.map(lambda i: rr.score("query", texts[i : i + 4]), range(0, 24, 4)))
    np.testing.assert_allclose(np.vstack(vectors), serial_vectors, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(scores), serial_scores, atol=1e-5)


def test_cold_prefix_cache_and_eviction_run_concurrently_with_serial_results(tiny_embedding_path):
    """More instructions than the prefix cache holds, first use and eviction from many threads at once."""
    from qwen3_rag.embedder import _MAX_CACHED_PREFIXES

    emb = Qwen3Embedder(tiny_embedding_path, batch_size=3)
    instructions = [f"Given task number {i}, retrieve the passages it needs" for i in range(_MAX_CACHED_PREFIXES + 16)]
    queries = ["what is a vector?", "how many people live in the city", "the quick brown fox", "x"]
    emb._loaded.cache.clear()
    serial = {task: emb.embed_queries(queries, instruction=task) for task in instructions}
    emb._loaded.cache.clear()  # cold again: every first use below computes its prefix under contention
    jobs = [task for task in instructions for _ in range(3)]
    np.random.default_rng(1).shuffle(jobs)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda task: (task, emb.embed_queries(queries, instruction=task)), jobs))
    for task, vectors in results:
        np.testing.assert_allclose(vectors, serial[task], atol=1e-5)
    assert len(emb._loaded.cache) <= _MAX_CACHED_PREFIXES


def test_concurrent_reranking_of_different_queries_and_instructions_gives_the_serial_scores(tiny_reranker_path):
    rr = Qwen3Reranker(tiny_reranker_path, batch_size=2)
    documents = [f"document {i} about " + "words " * (i % 5) for i in range(9)]
    jobs = [(f"query {q}", f"instruction {q % 3}") for q in range(24)]
    serial = {job: rr.score(job[0], documents, instruction=job[1]) for job in jobs}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: (job, rr.score(job[0], documents, instruction=job[1])), jobs * 2))
    for job, scores in results:
        np.testing.assert_allclose(scores, serial[job], atol=1e-5)
