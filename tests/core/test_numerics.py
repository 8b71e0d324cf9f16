"""NaN and infinity never leave the core: a float16 overflow (real, in the forward pass) or damaged weights raise
a NonFiniteError naming the inputs, the dtype and the dtype to use -- before any vector is returned or any score
is sorted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen3_rag import NonFiniteError, Qwen3Embedder, Qwen3Reranker
from qwen3_rag._validation import check_dimensions
from tests.core.checkpoints import FLOAT16_MAX, overflowing_in_float16, poisoned_token

TEXTS = ["The planet Jupiter is the largest.", "Water boils at one hundred degrees.", "A short one."]


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory, tiny_embedding_path, tiny_reranker_path) -> dict[str, object]:
    root = tmp_path_factory.mktemp("overflowing")
    return {
        "embedding": overflowing_in_float16(tiny_embedding_path, root / "embedding"),
        "reranker": overflowing_in_float16(tiny_reranker_path, root / "reranker"),
    }


@pytest.fixture(scope="module")
def jupiter_id(tiny_embedding_path) -> int:
    from transformers import AutoTokenizer

    (token_id,) = AutoTokenizer.from_pretrained(tiny_embedding_path)(" Jupiter", add_special_tokens=False)["input_ids"]
    return token_id


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory, tiny_embedding_path, tiny_reranker_path, jupiter_id) -> dict[str, object]:
    """Inputs holding the word ' Jupiter' come out NaN in every dtype; all others are untouched."""
    root = tmp_path_factory.mktemp("poisoned")
    return {
        "embedding": poisoned_token(tiny_embedding_path, root / "embedding", jupiter_id),
        "reranker": poisoned_token(tiny_reranker_path, root / "reranker", jupiter_id),
    }


def test_the_overflow_is_real_the_weights_fit_float16_and_float32_stays_finite(overflowing):
    emb16 = Qwen3Embedder(overflowing["embedding"], dtype="float16")
    assert max(float(p.detach().abs().max()) for p in emb16._loaded.model.parameters()) < FLOAT16_MAX
    assert not torch.isinf(next(emb16._loaded.model.parameters())).any()
    vectors = Qwen3Embedder(overflowing["embedding"], dtype="float32").embed_documents(TEXTS)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    scores = Qwen3Reranker(overflowing["reranker"], dtype="float32").score("query", TEXTS)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_float16_overflow_in_embeddings_raises_naming_the_dtype_and_the_fix(overflowing):
    emb = Qwen3Embedder(overflowing["embedding"], dtype="float16")
    for call in (lambda: emb.embed_documents(TEXTS), lambda: emb.embed_queries(TEXTS[:1])):
        with pytest.raises(NonFiniteError) as error:
            call()
        message = str(error.value)
        assert "NaN or infinity" in message and "in float16 on cpu" in message
        assert "dtype='bfloat16'" in message and "dtype='float32'" in message
        assert "\n" not in message


def test_bfloat16_has_float32_range_and_does_not_overflow(overflowing):
    vectors = Qwen3Embedder(overflowing["embedding"], dtype="bfloat16").embed_documents(TEXTS)
    assert np.isfinite(vectors).all()


def test_float16_overflow_in_reranker_scores_raises_before_any_sort(overflowing):
    rr = Qwen3Reranker(overflowing["reranker"], dtype="float16")
    with pytest.raises(NonFiniteError, match=r"documents 0, 1 and 2 of 3 in float16 .*dtype='bfloat16'"):
        rr.score("query", TEXTS)
    with pytest.raises(NonFiniteError, match="float16"):
        rr.rerank("query", TEXTS, top_n=2)  # the sort never sees a NaN


def test_nan_on_some_inputs_names_those_inputs(poisoned):
    emb = Qwen3Embedder(poisoned["embedding"])
    assert np.isfinite(emb.embed_documents(TEXTS[1:])).all()  # inputs without the word are fine
    with pytest.raises(NonFiniteError, match=r"input 0 of 3 in float32 on cpu: .*weights are probably damaged"):
        emb.embed_documents(TEXTS)
    rr = Qwen3Reranker(poisoned["reranker"], batch_size=1)
    assert len(rr.rerank("query", TEXTS[1:])) == 2
    with pytest.raises(NonFiniteError, match=r"document 2 of 3 in float32"):
        rr.rerank("query", [TEXTS[1], TEXTS[2], TEXTS[0]])


def test_a_nan_in_the_query_is_refused_too(poisoned):
    with pytest.raises(NonFiniteError, match="document"):  # the query is in every pair
        Qwen3Reranker(poisoned["reranker"]).score("Where is Jupiter?", TEXTS[1:])
    with pytest.raises(NonFiniteError, match="input 0 of 1"):
        Qwen3Embedder(poisoned["embedding"]).embed_queries(["Where is Jupiter?"])


def test_the_one_matryoshka_check_names_the_range():
    assert check_dimensions(None) is None and check_dimensions(64, hidden_size=64) == 64
    with pytest.raises(ValueError, match=r"between 32 and 64 \(the hidden size of m\), got 65"):
        check_dimensions(65, hidden_size=64, model="m")
    with pytest.raises(ValueError, match=r"--dimensions must be an integer >= 32 or None, got 16"):
        check_dimensions(16, name="--dimensions")
