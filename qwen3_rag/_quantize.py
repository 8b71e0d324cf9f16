"""The int8 CPU mode (``dtype="int8"``): every decoder linear layer in int8, weights once at load, activations
per call.

Weights: symmetric int8 per output channel (one scale per row of the weight), quantised once when the model
loads; the float weight is dropped. Activations: symmetric per token, computed on every call, so no
calibration data is needed and a text's vector does not depend on the other texts in its batch. Everything
else -- embedding lookup, RMSNorm, rotary, attention, pooling -- runs in float32; the token-embedding table
(and the reranker's output head tied to it) is stored in bfloat16, whose rows it only gathers, and the
reranker's two ``yes``/``no`` head rows are read from it in float, never in int8.

q, k and v (and gate and up) are fused into one matrix multiply before quantisation (``_fused.py``): their hidden
states are quantised once, and a decoder layer makes 4 int8 matrix multiplies instead of 7.

Kernel: oneDNN's int8 matmul with a weight re-ordered once, ``torch.ops.onednn.qlinear_pointwise`` -- the op
PyTorch's Inductor emits for int8 CPU models, with AMX-INT8 or VNNI where the CPU has them. It takes one
activation scale per call, so each token is quantised here with its own scale around oneDNN's zero point,
``x ~= step * (xq - 128)`` with xq in [1, 255], and the product is scaled after: ``W x = step * W (xq - 128)``.

CPUs without VNNI add pairs of u8 x s8 products in int16, which can saturate on full-range activations; a
load-time probe feeds a saturating input and falls back to 7-bit activations (zero point 64, xq in [1, 127])
where the 8-bit product comes out wrong. On those CPUs oneDNN's int8 kernel is slow on short inputs (slower than
its own float32 on a query's 16 tokens, measured on an AVX2-only AMD EPYC), and FBGEMM's
(``quantized::linear_dynamic``, PyTorch's dynamic-quantisation kernel) is 2.3x faster there, so it computes the
same 7-bit integer products instead (:class:`FbgemmInt8Linear`, probed for exactness at load). It needs the
deprecated quantised tensor types for its weight: where a PyTorch release drops them, the probe fails and oneDNN
is used. If the oneDNN op is missing or wrong on this build (probed against a float reference), the fallback is
``torch._int_mm`` (s8 x s8 -> int32) with symmetric per-token scales; if neither works, loading in int8 fails
with a clear error.
"""

from __future__ import annotations

import functools
import logging
import warnings

import torch

from qwen3_rag._cpu_linear import replace_decoder_linears

logger = logging.getLogger("qwen3_rag")

_TINY = torch.finfo(torch.float32).tiny


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel: ``(q, scale)`` with ``weight ~= q * scale[:, None]``, q in [-127, 127]."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp_min(_TINY)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def activation_steps(x2: torch.Tensor, half: int) -> torch.Tensor:
    """Each row's (token's) symmetric step: its largest magnitude over ``half`` levels, never zero."""
    # amin and amax, not aminmax nor abs().amax: the fastest here (aminmax ~10x slower along dim 1)
    lo, hi = x2.amin(dim=1, keepdim=True), x2.amax(dim=1, keepdim=True)
    return torch.maximum(hi, lo.neg_()).div_(half).clamp_min_(_TINY)


def token_integers(x2: torch.Tensor, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(integers, step)``: each row of ``x2`` divided by its own step and rounded, floats on [-half, half]."""
    step = activation_steps(x2, half)
    return (x2 / step).round_(), step


def quantize_activations(x2: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(xq, step)``: each row of ``x2`` (tokens) symmetric around its zero point, ``x ~= step * (xq - zero)``,
    as uint8 on [1, levels] with ``zero = levels // 2 + 1`` (128 for 8 bits, 64 for 7)."""
    integers, step = token_integers(x2, levels // 2)
    return integers.add_(levels // 2 + 1).to(torch.uint8), step


class _Int8Layer(torch.nn.Module):
    """What the int8 layers share: the float layer's shape and bias, float32 rows in, bias and shape out."""

    def __init__(self, linear: torch.nn.Linear, levels: int) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias, persistent=False)
        self.levels = levels

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        return x2 if x2.dtype == torch.float32 else x2.float()

    def _output(self, y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        if self.bias is not None:
            y = y.add_(self.bias)
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8Linear(_Int8Layer):
    """An inference-only ``nn.Linear`` with int8 weights (per output channel) and per-token uint8 activations,
    through oneDNN's int8 matmul."""

    def __init__(self, linear: torch.nn.Linear, *, levels: int = 255) -> None:
        super().__init__(linear, levels)
        q, scale = quantize_weight(linear.weight)
        self.packed_weight = torch.ops.onednn.qlinear_prepack(q, None)
        self.register_buffer("weight_scale", scale, persistent=False)
        self.register_buffer("weight_zero", torch.zeros(self.out_features, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, step = quantize_activations(self._rows(x), self.levels)
        y = torch.ops.onednn.qlinear_pointwise(
            xq, 1.0, self.levels // 2 + 1, self.packed_weight, self.weight_scale, self.weight_zero, None, 1.0, 0,
            torch.float32, "none", [], "",
        )  # fmt: skip
        return self._output(y.mul_(step), x.shape)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation_bits={8 if self.levels == 255 else 7}"


FBGEMM_ROWS = 256
"""Rows per FBGEMM call: on more, its kernel slows down (3072 -> 1024, 2,048 tokens: 83 ms in one call, 57 ms in
blocks of 256, oneDNN's 56 ms; measured on an AVX2-only AMD EPYC, 2 threads). Each token's own scale makes the
blocks' results the whole call's."""


class FbgemmInt8Linear(_Int8Layer):
    """The same int8 layer through FBGEMM's int8 matmul (``quantized::linear_dynamic``), for CPUs without VNNI.

    There, oneDNN's int8 kernel is slower on a query's few tokens than its own float32 (1024 -> 4096, 16 tokens:
    1.89 vs 1.75 ms) and FBGEMM's takes 0.83 ms. FBGEMM quantises its input itself, with one scale for the whole
    tensor; it is given each token already divided by its own step and rounded -- integers on [-half, half] --
    plus one extra row holding ``-(half + 1)`` and ``half``, so that its range is exactly ``levels`` wide: its
    scale is then 1 and its quantisation changes no value. The product is scaled by each token's step after, as
    in :class:`Int8Linear`: the same integers, the same result (probed at load against the exact product). Long
    inputs go through in blocks of :data:`FBGEMM_ROWS` tokens.
    """

    def __init__(self, linear: torch.nn.Linear, *, levels: int = 127) -> None:
        super().__init__(linear, levels)
        q, scale = quantize_weight(linear.weight)
        zeros = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():  # the quantised tensor types are deprecated: a removal fails the probe
            warnings.filterwarnings("ignore", message=".*quantized tensor creation", category=UserWarning)
            weight = torch.quantize_per_channel(q.float() * scale[:, None], scale.double(), zeros, 0, torch.qint8)
            self.packed_weight = torch.ops.quantized.linear_prepack(weight, None)
        span = torch.zeros(1, self.in_features)
        span[0, 0], span[0, -1] = -(levels // 2 + 1), levels // 2
        self.register_buffer("span", span, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        integers, step = token_integers(self._rows(x), self.levels // 2)
        parts = [self._product(part) for part in integers.split(FBGEMM_ROWS)]
        return self._output((parts[0] if len(parts) == 1 else torch.cat(parts)).mul_(step), x.shape)

    def _product(self, integers: torch.Tensor) -> torch.Tensor:
        rows = torch.cat([integers, self.span])
        return torch.ops.quantized.linear_dynamic(rows, self.packed_weight, self.levels < 255)[:-1]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation_bits={8 if self.levels == 255 else 7}, kernel=fbgemm"


class IntMmLinear(_Int8Layer):
    """The fallback: int8 weights per output channel, symmetric int8 activations per token, ``torch._int_mm``."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__(linear, 255)
        q, scale = quantize_weight(linear.weight)
        self.register_buffer("weight_t", q.t().contiguous(), persistent=False)
        self.register_buffer("scale", scale, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        integers, step = token_integers(self._rows(x), 127)
        y = torch._int_mm(integers.to(torch.int8), self.weight_t).float().mul_(step).mul_(self.scale)
        return self._output(y, x.shape)


def _close(layer: torch.nn.Module, linear: torch.nn.Linear, x: torch.Tensor, tolerance: float) -> bool:
    with torch.inference_mode():
        q, scale = quantize_weight(linear.weight)
        expected = torch.nn.functional.linear(x, q.float() * scale[:, None], linear.bias)
        got = layer(x)
    error = (got - expected).norm() / expected.norm().clamp_min(_TINY)
    return got.shape == expected.shape and bool(torch.isfinite(got).all()) and float(error) <= tolerance


def _exact(layer: torch.nn.Module, linear: torch.nn.Linear, x: torch.Tensor, levels: int) -> bool:
    """``layer`` computes the integer product of :func:`quantize_activations` exactly (to float rounding)."""
    with torch.inference_mode():
        q, scale = quantize_weight(linear.weight)
        x2 = x.reshape(-1, linear.in_features)
        xq, step = quantize_activations(x2, levels)
        dequantised = q.float() * scale[:, None]
        expected = torch.nn.functional.linear(xq.float() - (levels // 2 + 1), dequantised).mul_(step)
        if linear.bias is not None:
            expected = expected.add_(linear.bias)
        expected = expected.reshape(*x.shape[:-1], -1)
        got = layer(x)
    error = (got - expected).abs().max() / expected.abs().max().clamp_min(_TINY)
    return got.shape == expected.shape and float(error) <= 1e-4


def _probe_inputs() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(256, 64, bias=True)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(64, 256, generator=generator))
        linear.weight[0] = 1.0  # every product of row 0 with a saturating input is 255 x 127
        linear.bias.copy_(torch.randn(64, generator=generator))
    ordinary = torch.randn(2, 7, 256, generator=generator)
    saturating = torch.ones(3, 256)
    saturating[:, 0] = -1.0  # spans [-1, 1]: every other value quantises to 255
    return linear, ordinary, saturating


def _fbgemm_works(linear: torch.nn.Linear, inputs: tuple[torch.Tensor, ...]) -> bool:
    try:
        layer = FbgemmInt8Linear(linear, levels=127)
        return all(_exact(layer, linear, x, 127) for x in inputs)
    except (RuntimeError, AttributeError, NotImplementedError, TypeError) as exc:
        logger.debug("FBGEMM int8 linear unavailable: %s", exc)
        return False


@functools.cache
def backend() -> tuple[str, int]:
    """``("onednn", 255)``, ``("fbgemm", 127)``, ``("onednn", 127)``, ``("int_mm", 255)`` or ``("none", 0)``: the
    int8 linear that computes right on this machine, probed once per process.

    oneDNN with 8-bit activations where its product does not saturate (VNNI, AMX-INT8); where it does (no VNNI),
    7-bit activations through FBGEMM, faster there on short inputs, else through oneDNN."""
    linear, ordinary, saturating = _probe_inputs()
    if torch.backends.mkldnn.is_available():
        for levels in (255, 127):
            try:
                layer = Int8Linear(linear, levels=levels)
                if _close(layer, linear, ordinary, 0.02) and _close(layer, linear, saturating, 0.02):
                    if levels == 127 and _fbgemm_works(linear, (ordinary, saturating)):
                        return "fbgemm", 127
                    return "onednn", levels
            except (RuntimeError, AttributeError, NotImplementedError) as exc:
                logger.debug("oneDNN int8 linear unavailable: %s", exc)
                break
    try:
        if _close(IntMmLinear(linear), linear, ordinary, 0.02):
            return "int_mm", 255
    except (RuntimeError, AttributeError, NotImplementedError) as exc:
        logger.debug("torch._int_mm unavailable: %s", exc)
    return "none", 0


INT8_LAYERS = (Int8Linear, FbgemmInt8Linear, IntMmLinear)


class Int8UnavailableError(RuntimeError):
    """No int8 kernel of this PyTorch build computes correctly on this machine."""


def make_int8_linear(linear: torch.nn.Linear) -> torch.nn.Module:
    kind, levels = backend()
    if kind == "onednn":
        return Int8Linear(linear, levels=levels)
    if kind == "fbgemm":
        return FbgemmInt8Linear(linear, levels=levels)
    if kind == "int_mm":
        return IntMmLinear(linear)
    msg = (
        "dtype='int8' needs PyTorch's int8 CPU kernels (oneDNN's qlinear or torch._int_mm), and neither "
        f"works in this torch {torch.__version__} on this CPU; use dtype='bfloat16' or 'float32'"
    )
    raise Int8UnavailableError(msg)


def quantize_model(model: torch.nn.Module) -> int:
    """Put the int8 mode in place on a float32 CPU model; returns how many linear layers became int8.

    Every ``nn.Linear`` except the output head becomes int8; the token-embedding table (shared with a tied
    head) is kept in bfloat16 and its rows are returned as float32.
    """
    count = replace_decoder_linears(model, make_int8_linear)
    with torch.no_grad():
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        if isinstance(embeddings, torch.nn.Embedding) and embeddings.weight.dtype == torch.float32:
            embeddings.weight.data = embeddings.weight.data.to(torch.bfloat16)  # a tied head shares the Parameter
            embeddings.register_forward_hook(_as_float32)
        # What is left in float32 (norms, biases) may still be a view into the memory-mapped checkpoint file, which
        # keeps every page of it that quantisation read resident (the whole float32 model: measured 2.06x fp32's
        # RSS). Own copies let the mapping go. model.parameters() yields a tied Parameter once.
        for parameter in model.parameters():
            if parameter.dtype == torch.float32:
                parameter.data = parameter.data.clone()
    return count


def _as_float32(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.float()
