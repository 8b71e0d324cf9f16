"""Length-sorted, token-budgeted batching with out-of-memory back-off, shared by the embedder and reranker."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from tqdm.auto import tqdm

from qwen3_rag._loading import is_out_of_memory, release_memory

logger = logging.getLogger("qwen3_rag")

T = TypeVar("T")

PROGRESS_MIN_BATCHES = 8
"""With ``show_progress=None`` a bar appears only for calls of more than this many batches."""


DEFAULT_BATCH_TOKENS = {"cpu": 4096, "accelerator": 65536}
"""Padded tokens per forward pass when ``max_batch_tokens=None``.

CPU: smaller batches keep a layer's activations (tokens x 3072 floats in the MLP) in cache, and the packed
oneDNN linears (``_cpu_linear``) are near peak from a few hundred tokens on. Measured on 2 cores at the real
width (benchmarks/bench_efficiency.py --budgets, a rerank of 100 documents): 4096 runs 1,024-token documents at
75% of the best GEMM's FLOP/s against 60% at 16384, and reranks ~15% faster. Accelerators: big enough to fill
the device, small enough for its memory (out-of-memory halves the batch)."""


def token_budget(max_batch_tokens: int | None, device: torch.device) -> int:
    """The caller's budget, or the default for the device's kind."""
    if max_batch_tokens is not None:
        return max_batch_tokens
    return DEFAULT_BATCH_TOKENS["cpu" if device.type == "cpu" else "accelerator"]


MAX_BATCH_PADDING = 0.05
"""A batch closes before an input that would make more than this share of its tokens padding ..."""
PADDING_SLACK = 64
"""... unless the batch would waste no more than this many tokens (negligible next to a forward pass)."""


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None) -> list[list[int]]:
    """Indices grouped longest first: at most ``batch_size`` each, at most ``max_batch_tokens`` padded tokens
    (batch rows x longest row) each, where set, and little padding (see ``MAX_BATCH_PADDING``). A sequence
    longer than the budget runs alone."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    wasted = 0
    for i in order:
        # Sorted longest first, so the batch's padded width is the length of its first element.
        width = lengths[current[0]] if current else lengths[i]
        padded = (len(current) + 1) * width
        waste = wasted + width - lengths[i]
        full = (
            len(current) >= batch_size
            or (max_batch_tokens is not None and padded > max_batch_tokens)
            or waste > max(MAX_BATCH_PADDING * padded, PADDING_SLACK)
        )
        if current and full:
            batches.append(current)
            current, waste = [], 0
        current.append(i)
        wasted = waste
    if current:
        batches.append(current)
    return batches


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of the computed tokens that are padding."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1.0 - sum(lengths) / padded if padded else 0.0


def run_batches(
    forward: Callable[[list[int]], Sequence[T]],
    lengths: Sequence[int],
    *,
    batch_size: int,
    max_batch_tokens: int | None,
    device: torch.device,
    show_progress: bool | None,
    desc: str,
) -> list[T]:
    """Call ``forward`` on each planned batch of indices and return its per-item results in input order.

    On out-of-memory a batch is halved and retried; a single sequence that still does not fit raises a
    ``MemoryError`` naming its index and length.
    """
    results: list[T | None] = [None] * len(lengths)
    batches = plan_batches(lengths, batch_size, max_batch_tokens)
    show = len(batches) > PROGRESS_MIN_BATCHES if show_progress is None else show_progress
    with tqdm(total=len(lengths), desc=desc, unit="text", disable=not show) as bar:
        pending = list(reversed(batches))
        while pending:
            batch = pending.pop()
            try:
                outputs = forward(batch)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                release_memory(device)
                if len(batch) == 1:
                    msg = (
                        f"out of memory on input {batch[0]} ({lengths[batch[0]]} tokens) alone on {device}; "
                        "lower max_length, or use a smaller dtype or a larger device"
                    )
                    raise MemoryError(msg) from exc
                half = len(batch) // 2
                logger.warning("out of memory on a batch of %d on %s; retrying in halves", len(batch), device)
                pending.extend([batch[half:], batch[:half]])
                continue
            for i, out in zip(batch, outputs, strict=True):
                results[i] = out
            bar.update(len(batch))
    return results  # type: ignore[return-value]
