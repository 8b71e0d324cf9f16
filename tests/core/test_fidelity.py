"""qwen3_rag against the model cards' recipes (tests/core/recipes.py) on tiny random models with the real
Qwen vocabulary: same token ids, same vectors, same scores."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from qwen3_rag import Qwen3Embedder, Qwen3Reranker
from tests.core.recipes import TASK, card_embed, card_rerank, get_detailed_instruct

ENDOFTEXT_ID = 151643

QUERIES = [
    "What is the capital of China?",
    "Explain gravity",
    "  leading spaces and a trailing newline\n",
    "多语言查询：北京是首都吗？",
    "naïve café – emoji 🚀 and numbers 12345",
    "",
]
DOCUMENTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.\n\nIt gives weight to objects.",
    "def add(a, b):\n    return a + b\n",
    "北京是中华人民共和国的首都。",
    "A much longer document. " * 40,
    "",
]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def embedder(qwen_embedding_path):
    return Qwen3Embedder(qwen_embedding_path)


@pytest.fixture(scope="module")
def legacy_embedder(qwen_embedding_legacy_path):
    return Qwen3Embedder(qwen_embedding_legacy_path)


@pytest.fixture(scope="module")
def reranker(qwen_reranker_path):
    return Qwen3Reranker(qwen_reranker_path)


def test_query_vectors_match_the_card_recipe(embedder, qwen_embedding_path):
    ours = embedder.embed_queries(QUERIES)
    card = card_embed(qwen_embedding_path, [get_detailed_instruct(TASK, q) for q in QUERIES]).numpy()
    assert ours.dtype == np.float32
    assert ours.shape == card.shape
    assert cosine_rows(ours, card).min() >= 0.99999


def test_document_vectors_match_the_card_recipe_without_instruction(embedder, qwen_embedding_path):
    ours = embedder.embed_documents(DOCUMENTS)
    card = card_embed(qwen_embedding_path, DOCUMENTS).numpy()
    assert cosine_rows(ours, card).min() >= 0.99999


def test_query_instruction_keeps_its_newline_and_has_no_space_after_query(embedder, qwen_tokenizer):
    ids = embedder.tokenize(["hello"], instruction=TASK)[0]
    assert qwen_tokenizer.decode(ids) == f"Instruct: {TASK}\nQuery:hello<|endoftext|>"


def test_custom_and_empty_instructions(embedder, qwen_embedding_path):
    task = "Given a product title, retrieve matching product descriptions"
    custom = embedder.embed_queries(QUERIES[:2], instruction=task)
    card = card_embed(qwen_embedding_path, [get_detailed_instruct(task, q) for q in QUERIES[:2]]).numpy()
    assert cosine_rows(custom, card).min() >= 0.99999
    for none in (None, ""):
        bare = embedder.embed_queries(QUERIES[:2], instruction=none)
        np.testing.assert_allclose(bare, embedder.embed_documents(QUERIES[:2]), atol=1e-6)


@pytest.mark.parametrize("dims", [32, 48, 64])
def test_matryoshka_vectors_are_the_recipe_truncated_then_renormalised(embedder, qwen_embedding_path, dims):
    card = card_embed(qwen_embedding_path, DOCUMENTS).numpy()
    expected = card[:, :dims] / np.linalg.norm(card[:, :dims], axis=1, keepdims=True)
    ours = embedder.embed_documents(DOCUMENTS, dimensions=dims)
    assert ours.shape == (len(DOCUMENTS), dims)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    assert cosine_rows(ours, expected).min() >= 0.99999


def test_default_dimensions_apply_to_every_call_and_a_call_can_override(qwen_embedding_path):
    emb = Qwen3Embedder(qwen_embedding_path, dimensions=32)
    assert emb.dimension == 32
    assert emb.embed_queries(["q"]).shape == (1, 32)
    assert emb.embed_documents(["d"], dimensions=48).shape == (1, 48)


@pytest.mark.parametrize("max_length", [None, 6])
def test_both_tokenizer_generations_end_in_exactly_one_endoftext(embedder, legacy_embedder, max_length):
    for emb in (embedder, legacy_embedder):
        if max_length:
            emb = Qwen3Embedder(emb.model_name, max_length=max_length)
        for ids in emb.tokenize(DOCUMENTS + QUERIES, instruction=None):
            assert ids[-1] == ENDOFTEXT_ID
            assert ids.count(ENDOFTEXT_ID) == 1
            assert len(ids) <= (max_length or 10**9)


def test_both_tokenizer_generations_give_the_same_vectors(embedder, legacy_embedder):
    assert legacy_embedder._loaded.tokenizer("x")["input_ids"][-1] != ENDOFTEXT_ID  # it really is the old one
    np.testing.assert_allclose(
        legacy_embedder.embed_queries(QUERIES), embedder.embed_queries(QUERIES), atol=1e-6
    )
    np.testing.assert_allclose(
        legacy_embedder.embed_documents(DOCUMENTS), embedder.embed_documents(DOCUMENTS), atol=1e-6
    )


def test_truncation_keeps_the_endoftext_and_matches_the_recipe(qwen_embedding_path, caplog):
    emb = Qwen3Embedder(qwen_embedding_path, max_length=16)
    with caplog.at_level(logging.WARNING, logger="qwen3_rag"):
        ours = emb.embed_documents(DOCUMENTS)
    card = card_embed(qwen_embedding_path, DOCUMENTS, max_length=16).numpy()
    assert cosine_rows(ours, card).min() >= 0.99999
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1  # once per call, with a count
    assert "of 6 texts" in warnings[0].getMessage()


def test_no_truncation_no_log(embedder, caplog):
    with caplog.at_level(logging.WARNING, logger="qwen3_rag"):
        embedder.embed_documents(["short"])
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]


def test_batched_equals_one_at_a_time_and_any_input_order(qwen_embedding_path):
    emb = Qwen3Embedder(qwen_embedding_path, batch_size=4)
    batched = emb.embed_queries(QUERIES + DOCUMENTS)
    single = np.vstack([emb.embed_queries([t]) for t in QUERIES + DOCUMENTS])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    order = np.random.default_rng(0).permutation(len(QUERIES + DOCUMENTS))
    shuffled = emb.embed_queries([(QUERIES + DOCUMENTS)[i] for i in order])
    np.testing.assert_allclose(shuffled, batched[order], atol=1e-5)


def test_queries_whose_ids_do_not_start_with_the_cached_prefix_run_in_full(qwen_embedding_path, monkeypatch):
    emb = Qwen3Embedder(qwen_embedding_path)
    expected = card_embed(qwen_embedding_path, [get_detailed_instruct(TASK, q) for q in QUERIES]).numpy()
    real = emb._instruction_prefix(TASK)
    monkeypatch.setattr(emb, "_instruction_prefix", lambda instruction: ([0, *real[0][1:]], real[1]))
    assert cosine_rows(emb.embed_queries(QUERIES), expected).min() >= 0.99999


def test_reranker_scores_match_the_card_recipe(reranker, qwen_reranker_path):
    query = QUERIES[0]
    card_scores, _ = card_rerank(qwen_reranker_path, [(query, d) for d in DOCUMENTS])
    scores = reranker.score(query, DOCUMENTS)
    assert all(0.0 <= s <= 1.0 for s in scores)
    np.testing.assert_allclose(scores, card_scores, atol=1e-5)
    assert np.ptp(card_scores) > 1e-3  # the fixture model separates inputs, so the check has teeth


def test_reranker_token_ids_are_the_card_s(reranker, qwen_reranker_path):
    _, card_ids = card_rerank(qwen_reranker_path, [(QUERIES[3], d) for d in DOCUMENTS[:3]])
    assert reranker.tokenize(QUERIES[3], DOCUMENTS[:3]) == card_ids


def test_reranker_custom_instruction_matches_the_recipe(reranker, qwen_reranker_path):
    task = "Given a code question, retrieve code that answers it"
    card_scores, _ = card_rerank(qwen_reranker_path, [("add two numbers", d) for d in DOCUMENTS], instruction=task)
    np.testing.assert_allclose(reranker.score("add two numbers", DOCUMENTS, instruction=task), card_scores, atol=1e-5)


def test_shared_prefix_reuse_does_not_change_scores(qwen_reranker_path):
    plain = Qwen3Reranker(qwen_reranker_path, reuse_prefix=False, batch_size=2)
    reused = Qwen3Reranker(qwen_reranker_path, reuse_prefix=True, batch_size=2)
    for docs in (DOCUMENTS, DOCUMENTS[:1]):
        np.testing.assert_allclose(reused.score(QUERIES[1], docs), plain.score(QUERIES[1], docs), atol=1e-5)


def test_reranker_batched_equals_one_at_a_time_and_any_order(qwen_reranker_path):
    rr = Qwen3Reranker(qwen_reranker_path, batch_size=2)
    batched = rr.score(QUERIES[0], DOCUMENTS)
    single = [rr.score(QUERIES[0], [d])[0] for d in DOCUMENTS]
    np.testing.assert_allclose(batched, single, atol=1e-5)
    order = list(reversed(range(len(DOCUMENTS))))
    np.testing.assert_allclose(rr.score(QUERIES[0], [DOCUMENTS[i] for i in order]), [batched[i] for i in order],
                               atol=1e-5)


def test_reranker_truncation_cuts_only_the_document_end(qwen_reranker_path, qwen_tokenizer, caplog):
    rr = Qwen3Reranker(qwen_reranker_path, max_length=120)
    long_doc = "word " * 500 + "THE-END"
    with caplog.at_level(logging.WARNING, logger="qwen3_rag"):
        ids = rr.tokenize(QUERIES[0], [long_doc, "short"])
        scores = rr.score(QUERIES[0], [long_doc, "short"])
    assert len(ids[0]) == 120
    text = qwen_tokenizer.decode(ids[0])
    assert text.startswith("<|im_start|>system\nJudge whether")
    assert f"<Instruct>: {TASK}\n<Query>: {QUERIES[0]}\n<Document>: word word" in text
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert "THE-END" not in text
    card_scores, _ = card_rerank(qwen_reranker_path, [(QUERIES[0], long_doc), (QUERIES[0], "short")], max_length=120)
    np.testing.assert_allclose(scores, card_scores, atol=1e-5)
    messages = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(messages) == 2 and "1 of 2 documents" in messages[0]  # once per call (tokenize, score)


def test_reranker_refuses_a_query_that_leaves_no_room_for_the_document(qwen_reranker_path):
    rr = Qwen3Reranker(qwen_reranker_path, max_length=100)
    with pytest.raises(ValueError, match="query take"):
        rr.score("very long query " * 50, ["doc"])


def test_rerank_sorts_best_first_and_keeps_input_indices(reranker):
    scores = reranker.score(QUERIES[0], DOCUMENTS)
    results = reranker.rerank(QUERIES[0], DOCUMENTS, top_n=3)
    assert [r.index for r in results] == sorted(range(len(scores)), key=lambda i: -scores[i])[:3]
    assert [r.score for r in results] == sorted(scores, reverse=True)[:3]
    assert len(reranker.rerank(QUERIES[0], DOCUMENTS)) == len(DOCUMENTS)


def test_forward_passes_run_under_inference_mode(embedder, reranker):
    seen = []
    hooks = [
        m.register_forward_hook(lambda *_: seen.append(torch.is_inference_mode_enabled()))
        for m in (embedder._loaded.model, reranker._decoder)
    ]
    try:
        embedder.embed_queries(["q"])
        reranker.score("q", ["d"])
    finally:
        for h in hooks:
            h.remove()
    assert seen and all(seen)
