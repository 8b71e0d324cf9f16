"""Length-sorted, token-budgeted batching; out-of-memory back-off; progress bars."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen3_rag import Qwen3Embedder
from qwen3_rag._batching import padding_fraction, plan_batches, run_batches

CPU = torch.device("cpu")


def test_batches_are_sorted_longest_first_and_capped_by_batch_size():
    lengths = [5, 100, 7, 50, 6, 99]
    batches = plan_batches(lengths, batch_size=2, max_batch_tokens=None)
    assert batches == [[1, 5], [3, 2], [4, 0]]


def test_token_budget_bounds_padded_tokens_per_batch():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=200).tolist()
    batches = plan_batches(lengths, batch_size=64, max_batch_tokens=1000)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 1000
    assert padding_fraction(lengths, batches) < 0.05  # sorted batches barely pad


def test_batches_close_before_they_would_be_mostly_padding():
    lengths = [1000, 990, 600, 590, 580, 300]
    batches = plan_batches(lengths, batch_size=32, max_batch_tokens=None)
    assert batches == [[0, 1], [2, 3, 4], [5]]
    assert padding_fraction(lengths, batches) < 0.05
    assert plan_batches([40, 10, 8], batch_size=8, max_batch_tokens=None) == [[0, 1, 2]]  # 62 tokens: no split


def test_padding_stays_under_five_percent_on_a_long_tailed_corpus():
    lengths = np.random.default_rng(1).lognormal(mean=np.log(180), sigma=0.6, size=1000).astype(int) + 1
    batches = plan_batches(lengths.tolist(), batch_size=32, max_batch_tokens=16384)
    assert padding_fraction(lengths.tolist(), batches) < 0.05
    assert np.mean([len(b) for b in batches]) > 16  # still real batches


def test_a_sequence_longer_than_the_budget_runs_alone():
    assert plan_batches([5000, 10, 10], batch_size=8, max_batch_tokens=1000) == [[0], [1, 2]]


def test_results_come_back_in_input_order():
    lengths = [3, 9, 1, 7]
    out = run_batches(lambda b: [f"item{i}" for i in b], lengths, batch_size=2, max_batch_tokens=None,
                      device=CPU, show_progress=False, desc="x")
    assert out == ["item0", "item1", "item2", "item3"]


def test_out_of_memory_halves_the_batch_and_retries():
    calls = []

    def forward(batch):
        calls.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [i * 10 for i in batch]

    out = run_batches(forward, [4] * 8, batch_size=8, max_batch_tokens=None, device=CPU, show_progress=False, desc="x")
    assert out == [i * 10 for i in range(8)]
    assert calls[0] == 8 and max(calls[1:], default=0) <= 4 and 2 in calls


def test_a_single_sequence_that_does_not_fit_raises_an_error_naming_it():
    def forward(batch):
        if 1 in batch:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return batch

    with pytest.raises(MemoryError, match=r"input 1 \(40 tokens\)"):
        run_batches(forward, [4, 40, 4], batch_size=4, max_batch_tokens=None, device=CPU, show_progress=False,
                    desc="x")


def test_other_errors_are_not_swallowed():
    def forward(batch):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_batches(forward, [1, 2], batch_size=1, max_batch_tokens=None, device=CPU, show_progress=False, desc="x")


def test_embedder_batches_by_token_budget(tiny_embedding_path, monkeypatch):
    emb = Qwen3Embedder(tiny_embedding_path, batch_size=64, max_batch_tokens=64)
    texts = ["word " * n for n in (1, 30, 2, 25, 3, 20)]
    widths = []
    import qwen3_rag.embedder as module

    real = module.last_token_states

    def spy(model, rows, **kwargs):
        widths.append(len(rows) * max(len(r) for r in rows))
        return real(model, rows, **kwargs)

    monkeypatch.setattr(module, "last_token_states", spy)
    emb.embed_documents(texts)
    assert len(widths) > 1 and max(widths) <= 64


def test_progress_bar_is_off_for_short_calls_and_on_for_long_ones(capsys):
    def run(n, show):
        run_batches(lambda b: b, [1] * n, batch_size=1, max_batch_tokens=None, device=CPU, show_progress=show,
                    desc="Embedding")
        return capsys.readouterr().err

    assert "Embedding" not in run(3, None)
    assert "Embedding" in run(50, None)
    assert "Embedding" not in run(50, False)
    assert "Embedding" in run(3, True)
