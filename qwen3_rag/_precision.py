"""Which precision a model runs in: the ``dtype`` argument parsed, and the CPU default chosen by capability.

``dtype=None`` on a CPU picks bfloat16 where the CPU multiplies bf16 matrices natively -- AMX-BF16 (Intel
Sapphire Rapids and later) or AVX512-BF16 (Intel Cooper Lake, AMD Zen 4 and later) -- and float32 elsewhere
(AVX2-only CPUs emulate bf16 and run it several times slower than fp32). ``python benchmarks/bench_precision.py``
measures the gain: on the 2-core AMD EPYC (Zen 4, AVX512-BF16, no AMX) the project's development machine has,
bf16 linear layers run ~2-3x the fp32 FLOP/s; the issue that asked for this measured 5-9x on an AMX Xeon. The
choice is logged once per process, with the reason. ``QWEN3_RAG_CPU_DTYPE=float32`` keeps float32 (bit-faithful
to the model card's float32 recipe), ``=bfloat16`` forces bf16; an explicit ``dtype`` always wins.

``dtype="int8"`` is the opt-in int8 mode of ``qwen3_rag/_quantize.py``: float32 compute with every decoder
linear layer in int8. It is a CPU mode; CUDA and MPS refuse it (use their bfloat16 default instead).

The capability comes from PyTorch's own CPU feature queries (``torch.cpu._is_avx512_bf16_supported`` and
``_is_amx_tile_supported``, which read cpuinfo, not ``/proc``) where this torch has them, merged with the flags
of ``/proc/cpuinfo`` where that file exists; either may be missing, neither is required.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger("qwen3_rag")

ENV_CPU_DTYPE = "QWEN3_RAG_CPU_DTYPE"
"""``auto`` (default: by capability), ``float32`` or ``bfloat16``: the CPU default when no ``dtype`` is passed."""

INT8 = "int8"

_FLOATS = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}
_CPUINFO = Path("/proc/cpuinfo")
_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")


@dataclass(frozen=True)
class CpuCapability:
    """What this CPU can do for bf16 and int8 matrix multiplies, and where that was read."""

    torch_capability: str
    """``torch.backends.cpu.get_cpu_capability()``: the vector ISA PyTorch's kernels dispatch to (AVX2, AVX512...)."""
    flags: frozenset[str]
    """The flags of interest found (``amx_bf16``, ``avx512_bf16``, ``avx512_vnni``...), from torch and /proc/cpuinfo."""

    @property
    def native_bf16(self) -> bool:
        """bf16 dot products in hardware: AMX-BF16 tiles or AVX512-BF16 instructions."""
        return bool(self.flags & {"amx_bf16", "avx512_bf16"})

    @property
    def int8_dot(self) -> bool:
        """u8 x s8 dot products accumulated in int32 (VNNI or AMX-INT8): no int16 saturation in int8 GEMMs."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"})

    def describe(self) -> str:
        shown = [f for f in _FLAGS_OF_INTEREST if f in self.flags]
        found = " ".join(shown) or "none of " + "/".join(_FLAGS_OF_INTEREST)
        return f"torch capability {self.torch_capability}; flags: {found}"


def _cpuinfo_flags(path: Path = _CPUINFO) -> set[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split()) & set(_FLAGS_OF_INTEREST)
    return set()


def _torch_flags() -> set[str]:
    queries = {  # private, but cpuinfo-backed and present since torch 2.3; each one optional
        "avx2": "_is_avx2_supported",
        "avx512f": "_is_avx512_supported",
        "avx512_bf16": "_is_avx512_bf16_supported",
        "avx512_vnni": "_is_vnni_supported",
        "amx_tile": "_is_amx_tile_supported",
    }
    found = set()
    for flag, name in queries.items():
        query = getattr(torch.cpu, name, None)
        try:
            if query is not None and query():
                found.add(flag)
        except (RuntimeError, AttributeError):  # pragma: no cover - a torch without cpuinfo
            pass
    if "amx_tile" in found:  # every AMX CPU so far (Sapphire Rapids on) has the BF16 and INT8 tile units
        found |= {"amx_bf16", "amx_int8"}
    return found


@functools.cache
def cpu_capability() -> CpuCapability:
    """This machine's CPU, probed once per process."""
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except (RuntimeError, AttributeError):  # pragma: no cover - very old torch
        isa = "unknown"
    flags = _torch_flags() | _cpuinfo_flags()
    if platform.machine().lower() not in {"x86_64", "amd64", "i386", "i686"}:
        flags = set()  # the flags above are x86's; other CPUs keep the float32 default
    return CpuCapability(torch_capability=isa, flags=frozenset(flags))


def _env_choice() -> torch.dtype | None:
    value = os.environ.get(ENV_CPU_DTYPE, "").strip().lower()
    if value in {"", "auto"}:
        return None
    choice = _FLOATS.get(value)
    if choice not in {torch.float32, torch.bfloat16}:
        raise ValueError(f"{ENV_CPU_DTYPE} must be 'auto', 'float32' or 'bfloat16', got {value!r}")
    return choice


_LOGGED: set[tuple[torch.dtype, str]] = set()
_LOG_LOCK = threading.Lock()


def default_cpu_dtype() -> tuple[torch.dtype, str]:
    """The CPU default and why: the environment switch, else bfloat16 where bf16 is native, else float32."""
    forced = _env_choice()
    if forced is not None:
        return forced, f"{ENV_CPU_DTYPE}={os.environ[ENV_CPU_DTYPE].strip()}"
    cpu = cpu_capability()
    if cpu.native_bf16 and torch.backends.mkldnn.is_available():
        return torch.bfloat16, (
            f"this CPU multiplies bf16 natively ({cpu.describe()}); "
            f"pass dtype='float32' or set {ENV_CPU_DTYPE}=float32 for float32"
        )
    return torch.float32, f"this CPU has no native bf16 matrix unit ({cpu.describe()})"


def _log_default_once(dtype: torch.dtype, reason: str) -> None:
    with _LOG_LOCK:
        if (dtype, reason) in _LOGGED:
            return
        _LOGGED.add((dtype, reason))
    logger.info("CPU default dtype %s: %s", str(dtype).removeprefix("torch."), reason)


@dataclass(frozen=True)
class Precision:
    """How a model runs: its compute dtype, and ``quantization="int8"`` for the int8 mode (else ``None``)."""

    dtype: torch.dtype
    quantization: str | None = None

    @property
    def name(self) -> str:
        """What to pass as ``dtype`` to get this precision again: ``"int8"``, ``"bfloat16"``..."""
        return self.quantization or str(self.dtype).removeprefix("torch.")


def resolve_precision(dtype: str | torch.dtype | None, device: torch.device) -> Precision:
    """``None``: bfloat16 on CUDA (float32 on cards without bf16), by capability on CPU (see the module), float32
    on MPS; ``"int8"``: the CPU int8 mode (refused elsewhere); float16 only when asked."""
    if dtype is None:
        if device.type == "cuda":
            return Precision(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)
        if device.type == "cpu":
            choice, reason = default_cpu_dtype()
            _log_default_once(choice, reason)
            return Precision(choice)
        return Precision(torch.float32)
    if isinstance(dtype, torch.dtype):
        if dtype not in _FLOATS.values():
            raise ValueError(f"dtype must be float32, bfloat16, float16 or the string 'int8', got {dtype}")
        return Precision(dtype)
    if isinstance(dtype, str) and dtype.strip().lower() == INT8:
        if device.type != "cpu":
            msg = (
                f"dtype='int8' is a CPU mode (PyTorch's int8 CPU kernels); it is not available on {device.type!r}. "
                "On a GPU use the default (bfloat16) or dtype='float16', or pass device='cpu' for int8"
            )
            raise ValueError(msg)
        return Precision(torch.float32, INT8)
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in _FLOATS:
        return Precision(_FLOATS[dtype.lower().removeprefix("torch.")])
    msg = f"dtype must be one of 'float32', 'bfloat16', 'float16', 'int8' (or a torch.dtype), got {dtype!r}"
    raise ValueError(msg)
