"""Device and dtype resolution, and loading that shares one model per (model, device, dtype) in a process."""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from packaging.version import Version

from qwen3_rag._cpu_linear import pack_linear_layers
from qwen3_rag._precision import resolve_precision
from qwen3_rag._quantize import quantize_model

logger = logging.getLogger("qwen3_rag")


class ModelLoadError(OSError):
    """The model could not be found or loaded; the message says what was looked for and what to do."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks cuda > mps > cpu; an explicit device always wins."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        msg = f"device must be a torch device such as 'cpu', 'cuda', 'cuda:1' or 'mps', got {device!r}"
        raise ValueError(msg) from exc


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The compute dtype for ``dtype`` on ``device`` (``"int8"`` computes in float32); see ``_precision``."""
    return resolve_precision(dtype, device).dtype


def attention_implementation(device: torch.device) -> str:
    """flash_attention_2 on CUDA when the package is installed, else PyTorch SDPA."""
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


@dataclass(eq=False)
class LoadedModel:
    """A model, its tokenizer and a lock for the tokenizer (fast tokenizers are not re-entrant)."""

    name: str
    kind: str
    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    quantization: str | None = None
    """``"int8"`` for the int8 CPU mode (``dtype`` is then its float32 compute dtype), else ``None``."""
    lock: threading.RLock = field(default_factory=threading.RLock)
    cache: dict = field(default_factory=dict)
    """Per-model derived state (e.g. instruction-prefix key/values), guarded by ``lock``."""

    def __deepcopy__(self, memo: dict) -> LoadedModel:
        return self  # weights are shared, never copied

    def __reduce__(self):
        # Pickled as its recipe: unpickling loads the model again (or reuses it in the same process).
        return _reload, (
            self.name,
            self.kind,
            str(self.device),
            self.quantization or str(self.dtype).removeprefix("torch."),
        )


def _reload(name: str, kind: str, device: str, dtype: str) -> LoadedModel:
    return load_model(name, kind=kind, device=device, dtype=dtype)


# transformers renamed `torch_dtype` to `dtype` in 4.56; the old name warns in 5.x.
_DTYPE_KWARG = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"

_REGISTRY: weakref.WeakValueDictionary[tuple, LoadedModel] = weakref.WeakValueDictionary()
_REGISTRY_LOCK = threading.Lock()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _load_error(name: str, exc: Exception) -> ModelLoadError:
    where = "a local folder" if Path(name).expanduser().exists() else "a Hugging Face Hub id"
    hint = (
        f"Could not load the Qwen3 model {name!r} (looked for it as {where}"
        f"{'; HF_HUB_OFFLINE is set, so only the local cache was searched' if _offline() else ''}). "
        "Pass the path of a local folder holding config.json, *.safetensors and the tokenizer files, "
        "or a Hub id such as 'Qwen/Qwen3-Embedding-0.6B' with network access. "
        f"Cause: {type(exc).__name__}: {exc}"
    )
    return ModelLoadError(hint)


def load_model(
    name: str | os.PathLike,
    *,
    kind: str,
    device: str | torch.device | None,
    dtype: str | torch.dtype | None,
) -> LoadedModel:
    """Load (or reuse) ``name`` as ``kind`` ('embedding' or 'reranker') on ``device`` in ``dtype``.

    Two requests for the same (model, kind, device, dtype) share one object, so a LangChain and a
    LlamaIndex adapter over the same checkpoint hold the weights once. Never ``trust_remote_code``;
    weights load from safetensors only.
    """
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model must be a Hub id or a local folder, got {name!r}")
    local = Path(name).expanduser()
    source = str(local.resolve()) if local.exists() else name
    torch_device = resolve_device(device)
    precision = resolve_precision(dtype, torch_device)
    torch_dtype = precision.dtype
    key = (kind, source, str(torch_device), torch_dtype, precision.quantization)
    with _REGISTRY_LOCK:
        loaded = _REGISTRY.get(key)
        if loaded is not None:
            return loaded
        if local.exists() and not (local / "config.json").is_file():
            raise ModelLoadError(f"{name!r} is a folder but holds no config.json: it is not a model folder")
        kwargs: dict[str, Any] = {"trust_remote_code": False}
        if _offline() or local.exists():
            kwargs["local_files_only"] = True
        auto = AutoModel if kind == "embedding" else AutoModelForCausalLM
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # one "Loading weights" bar per model is noise in pipelines
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            model = auto.from_pretrained(
                source,
                **{_DTYPE_KWARG: torch_dtype},
                use_safetensors=True,
                attn_implementation=attention_implementation(torch_device),
                **kwargs,
            )
        except (OSError, ValueError) as exc:
            raise _load_error(name, exc) from exc
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        if getattr(model.config, "model_type", None) not in {"qwen3", "qwen2"}:
            logger.warning("%s is a %r model, not Qwen3: the Qwen3 recipe may not apply", name, model.config.model_type)
        model.to(torch_device).eval()
        if precision.quantization:
            layers = f", {quantize_model(model)} linear layers in int8"
        else:
            packed = pack_linear_layers(model, torch_device, torch_dtype)
            layers = f", {packed} linear layers packed for oneDNN" if packed else ""
        loaded = LoadedModel(
            name=name, kind=kind, model=model, tokenizer=tokenizer, device=torch_device, dtype=torch_dtype,
            quantization=precision.quantization,
        )  # fmt: skip
        _REGISTRY[key] = loaded
        logger.info("loaded %s (%s) on %s in %s%s", name, kind, torch_device, precision.name, layers)
        return loaded


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def open_model(
    model: str | os.PathLike,
    *,
    kind: str,
    device: str | torch.device | None,
    dtype: str | torch.dtype | None,
    base_url: str | None,
    api_key: str | None,
    timeout: float | None,
    batch_size: int,
) -> tuple[Any, LoadedModel | None]:
    """``(remote client, None)`` for a model served at ``base_url`` (vLLM), else ``(None, loaded local model)``."""
    if base_url is None:
        return None, load_model(model, kind=kind, device=device, dtype=dtype)
    from qwen3_rag.remote import VLLMEmbeddingClient, VLLMRerankClient

    client = VLLMEmbeddingClient if kind == "embedding" else VLLMRerankClient
    return client(os.fspath(model), base_url, api_key=api_key, timeout=timeout, batch_size=batch_size), None
