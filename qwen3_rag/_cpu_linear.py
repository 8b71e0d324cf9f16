"""CPU matrix multiplies through oneDNN with pre-packed weights.

``torch.nn.Linear`` on CPU calls a GEMM that re-reads the weight in its stored (out, in) layout on every
call. That is fine for thousands of tokens, but a single query is ~20 tokens, and there the GEMM reaches a
third of the machine's FLOP/s. oneDNN's linear with the weight re-ordered once into its blocked layout (what
PyTorch's own Inductor uses for frozen CPU models) stays near peak from a few tokens on. On the 2-core
development machine (``python benchmarks/bench_linear.py``, the 1024 -> 3072 projection in fp32): 72 -> 190
GFLOP/s at 18 tokens (2.6x), 168 -> 215 at 512 (1.3x), 173 -> 198 at 4096 (1.15x).

The same fp32 (or bf16) products summed in a different order: results differ from ``nn.Linear`` by ~1e-6
relative, far inside the 1e-5 the fidelity tests hold. The packed weight replaces the original (no extra
memory). Used only on CPU, for float32 and bfloat16, and only after a probe matches ``nn.Linear``; any
failure keeps the plain modules. ``QWEN3_RAG_CPU_PACKED_LINEAR=0`` turns it off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import torch

logger = logging.getLogger("qwen3_rag")

ENV_SWITCH = "QWEN3_RAG_CPU_PACKED_LINEAR"
_DTYPES = (torch.float32, torch.bfloat16)


class PackedLinear(torch.nn.Module):
    """An inference-only ``nn.Linear`` whose weight oneDNN re-ordered once."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in {"0", "false", "no", "off"}


def _probe(dtype: torch.dtype) -> bool:
    """oneDNN is present and its packed linear equals ``nn.Linear`` on this machine."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        linear = torch.nn.Linear(64, 48, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(48, 64, generator=generator))
        x = torch.randn(2, 5, 64, generator=generator).to(dtype)
        with torch.inference_mode():
            expected, got = linear(x).float(), PackedLinear(linear)(x).float()
    except (RuntimeError, AttributeError, NotImplementedError) as exc:
        logger.debug("oneDNN packed linear unavailable: %s", exc)
        return False
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    return got.shape == expected.shape and bool(torch.allclose(got, expected, rtol=tolerance, atol=tolerance))


def pack_linear_layers(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> int:
    """Swap the decoder's ``nn.Linear`` modules for :class:`PackedLinear` on CPU; returns how many.

    The output head (the reranker's ``lm_head``) stays as it is: only its ``yes``/``no`` rows are read.
    """
    if device.type != "cpu" or dtype not in _DTYPES or not _enabled() or not _probe(dtype):
        return 0
    return replace_decoder_linears(model, PackedLinear)


def replace_decoder_linears(model: torch.nn.Module, make: Callable[[torch.nn.Linear], torch.nn.Module]) -> int:
    """Swap every plain ``nn.Linear`` of ``model`` except its output head for ``make(linear)``; returns how many."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    targets = [
        (parent, child_name, child)
        for parent in model.modules()
        for child_name, child in parent.named_children()
        if type(child) is torch.nn.Linear and child is not head
    ]
    with torch.no_grad():
        for parent, child_name, child in targets:
            setattr(parent, child_name, make(child))
    return len(targets)
