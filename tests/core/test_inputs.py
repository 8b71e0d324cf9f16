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
