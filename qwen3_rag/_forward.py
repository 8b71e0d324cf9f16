"""Decoder forward passes that return only what the recipes read: the last real token's hidden state.

Rows are right-padded: under a causal mask a real token never attends to the padding after it, so no
padding mask is needed and SDPA / flash attention run their fused causal kernels. Pooling reads each
row's own length, never a token id (the pad id equals ``<|endoftext|>``'s).

A shared prefix (the reranker's system prompt + instruction + query, or a query instruction) can be run
once and its key/value cache reused for every row: positions continue from the prefix, so the result is
the same computation as the full sequence, split in two.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from transformers import DynamicCache

PrefixCache = list[tuple[torch.Tensor, torch.Tensor]]


def _cache_kwarg(model: torch.nn.Module) -> str:
    # transformers 5.x renamed `past_key_values` to `cache` (the old name warns until its removal).
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _output_cache(output) -> DynamicCache:
    return output.cache if getattr(output, "cache", None) is not None else output.past_key_values


def _layers(cache: DynamicCache) -> PrefixCache:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))  # transformers < 4.56


def run_prefix(decoder: torch.nn.Module, prefix_ids: Sequence[int], device: torch.device) -> PrefixCache:
    """Key/value tensors of ``prefix_ids`` for every layer (batch of one)."""
    ids = torch.tensor([list(prefix_ids)], dtype=torch.long, device=device)
    output = decoder(input_ids=ids, use_cache=True)
    return [(k.detach(), v.detach()) for k, v in _layers(_output_cache(output))]


def last_token_states(
    decoder: torch.nn.Module,
    rows: Sequence[Sequence[int]],
    *,
    pad_id: int,
    device: torch.device,
    prefix: PrefixCache | None = None,
) -> torch.Tensor:
    """Final hidden state at the last token of each row, shape (len(rows), hidden), in the model's dtype.

    With ``prefix``, each row continues that prefix (its tokens are not repeated in ``rows``).
    """
    lengths = [len(r) for r in rows]
    width = max(lengths)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    ids = ids.to(device)
    kwargs = {}
    offset = 0
    if prefix is not None:
        offset = prefix[0][0].shape[-2]
        cache = DynamicCache()
        for layer, (k, v) in enumerate(prefix):
            cache.update(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1), layer)
        kwargs[_cache_kwarg(decoder)] = cache
    positions = torch.arange(offset, offset + width, device=device).unsqueeze(0)
    output = decoder(input_ids=ids, position_ids=positions, use_cache=prefix is not None, **kwargs)
    last = torch.as_tensor(lengths, device=device) - 1
    return output.last_hidden_state[torch.arange(len(rows), device=device), last]
