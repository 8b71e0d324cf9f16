"""Fused projections for CPU inference: each attention layer's q, k and v as one matrix multiply, each MLP's gate
and up as another.

A short input -- one query is ~15 tokens after the cached instruction prefix -- costs on CPU per operator called
more than per weight byte read: 7 matrix multiplies per decoder layer, each with its own activation quantisation
in int8, where the same weights fit in 4. q, k and v read the same hidden states, as do gate and up, so their
weights are concatenated (rows: q, then k, then v; gate, then up) into one ``nn.Linear`` before the precision's
own linear layers replace it (oneDNN packing, int8): the fused layer is converted like any other, once.

Each output column is the same dot product as before, so in int8 (integer accumulation, one scale per row)
the fused result equals the separate layers' exactly; in float it differs only in the summation order.

Only the architectures whose forward is known are fused (transformers' Qwen3 and Qwen2 attention and MLP): the
attention module still calls ``q_proj``, ``k_proj`` and ``v_proj`` on the same tensor; the first call computes
all three and keeps them (per thread, one entry, released when the model's forward pass ends), the next two
take their slice.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

_ATTENTION = {"Qwen3Attention", "Qwen2Attention"}
_MLP = {"Qwen3MLP", "Qwen2MLP"}


def concatenate_linears(linears: Sequence[torch.nn.Linear]) -> torch.nn.Linear:
    """One ``nn.Linear`` whose output is the given layers' outputs side by side (they share ``in_features``)."""
    if len({linear.in_features for linear in linears}) != 1:
        raise ValueError("fused projections must read the same input width")
    if len({linear.bias is None for linear in linears}) != 1:
        raise ValueError("fused projections must all have a bias or none")
    first = linears[0]
    out_features = sum(linear.out_features for linear in linears)
    fused = torch.nn.Linear(
        first.in_features, out_features, bias=first.bias is not None, device="meta", dtype=first.weight.dtype
    )
    with torch.no_grad():
        fused.weight = torch.nn.Parameter(torch.cat([linear.weight for linear in linears]), requires_grad=False)
        if first.bias is not None:
            fused.bias = torch.nn.Parameter(torch.cat([linear.bias for linear in linears]), requires_grad=False)
    return fused


class _LastOutput(threading.local):
    """Per thread, the last fused attention projection computed: its module, its input and its output."""

    owner: torch.nn.Module | None = None
    source: torch.Tensor | None = None
    output: torch.Tensor | None = None


_LAST = _LastOutput()


def forget_outputs() -> None:
    """Drop this thread's reference to the last fused projection (when a forward pass ends)."""
    _LAST.owner = _LAST.source = _LAST.output = None


class ProjectionPart(torch.nn.Module):
    """``q_proj``, ``k_proj`` or ``v_proj`` of an attention module whose ``qkv_proj`` computes all three.

    The same input tensor object given again (the next projection of the same hidden states) is not multiplied
    again: its slice of the kept output is returned. The reference held here keeps the input's identity from
    being reused; the attention module never modifies its input in place.
    """

    def __init__(self, owner: torch.nn.Module, start: int, stop: int) -> None:
        super().__init__()
        self.__dict__["owner"] = owner  # not a submodule: the fused layer is registered once, on the owner
        self.start, self.stop = start, stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = _LAST
        if last.owner is not self.owner or last.source is not x or last.output is None:
            output = self.owner.qkv_proj(x)
            last.owner, last.source, last.output = self.owner, x, output
        return last.output[..., self.start : self.stop]

    def extra_repr(self) -> str:
        return f"qkv_proj[..., {self.start}:{self.stop}]"


class FusedMLP(torch.nn.Module):
    """``down_proj(act_fn(gate_proj(x)) * up_proj(x))`` with gate and up as one ``gate_up_proj``."""

    def __init__(self, mlp: torch.nn.Module) -> None:
        super().__init__()
        self.intermediate_size = mlp.gate_proj.out_features
        self.gate_up_proj = concatenate_linears([mlp.gate_proj, mlp.up_proj])
        self.down_proj = mlp.down_proj
        self.act_fn = mlp.act_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.intermediate_size, dim=-1)
        return self.down_proj(self.act_fn(gate).mul_(up))


def _plain_linears(*layers: object) -> bool:
    return all(type(layer) is torch.nn.Linear for layer in layers)


def fuse_projections(model: torch.nn.Module) -> int:
    """Fuse q/k/v and gate/up in every known attention and MLP module of ``model``; returns how many matrix
    multiplies per forward pass this removed (3 per decoder layer). Registers the hook that releases the kept
    projection output when a forward pass ends."""
    removed = 0
    with torch.no_grad():
        for module in list(model.modules()):
            name = type(module).__name__
            if name in _ATTENTION and _plain_linears(module.q_proj, module.k_proj, module.v_proj):
                parts = (module.q_proj, module.k_proj, module.v_proj)
                module.qkv_proj = concatenate_linears(parts)
                start = 0
                for attribute, part in zip(("q_proj", "k_proj", "v_proj"), parts, strict=True):
                    setattr(module, attribute, ProjectionPart(module, start, start + part.out_features))
                    start += part.out_features
                removed += 2
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if type(child).__name__ in _MLP and _plain_linears(child.gate_proj, child.up_proj):
                    setattr(parent, child_name, FusedMLP(child))
                    removed += 1
    if removed:
        for module in {id(m): m for m in (model, getattr(model, "base_model", None)) if m is not None}.values():
            module.register_forward_hook(_forget, always_call=True)
    return removed


def _forget(module: torch.nn.Module, args: tuple, output: object) -> None:
    forget_outputs()
