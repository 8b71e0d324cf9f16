"""Device and dtype resolution, and loading that shares one model per (model, device, dtype) in a process."""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import transformers
from packaging.version import Version

from qwen3_rag._cpu_linear import pack_linear_layers
from qwen3_rag._fused import fuse_projections
from qwen3_rag._precision import Precision, resolve_precision
from qwen3_rag._quantize import quantize_model
from qwen3_rag._validation import check_model_name, one_line

logger = logging.getLogger("qwen3_rag")


class ModelLoadError(OSError):
    """The model could not be found or loaded; the message says what was looked for and what to do."""


def resolve_device(device: str | torch.device | None, *, check: bool = True) -> torch.device:
    """``None`` picks cuda > mps > cpu; an explicit device always wins, and must exist on this machine.

    Checked before any weights load: ``"cuda"`` without a CUDA GPU (or a CPU build of torch), ``"cuda:3"`` with
    two GPUs, ``"mps"`` off Apple silicon are each a ``ValueError`` naming the device and what is available
    (``check=False`` parses only; :func:`check_available` checks later).
    """
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        msg = f"device must be a torch device such as 'cpu', 'cuda', 'cuda:1' or 'mps', got {device!r}"
        raise ValueError(msg) from exc
    if check:
        check_available(resolved, device)
    return resolved


def available_devices() -> list[str]:
    """The devices this machine can run a model on, e.g. ``['cpu', 'cuda:0', 'cuda:1']``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        devices += [f"xpu:{i}" for i in range(xpu.device_count())]
    return devices


def check_available(device: torch.device, asked: object) -> None:
    """A ``ValueError`` naming the device and what is available, unless ``device`` exists on this machine."""
    if device.type == "cpu":
        return
    problem = None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            problem = (
                "this torch build has no CUDA support (a CPU wheel)"
                if torch.version.cuda is None
                else "no CUDA GPU is visible (torch.cuda.is_available() is False)"
            )
        elif device.index is not None and device.index >= torch.cuda.device_count():
            problem = f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            problem = "there is no Apple MPS backend here"
    elif device.type == "xpu":
        xpu = getattr(torch, "xpu", None)
        if xpu is None or not xpu.is_available():
            problem = "there is no Intel XPU here"
    else:
        problem = f"qwen3-rag runs models on cpu, cuda, mps or xpu, not {device.type}"
    if problem is not None:
        available = ", ".join(available_devices())
        raise ValueError(f"device {str(asked)!r} is not available: {problem}; available here: {available}")


def canonical_device(device: torch.device) -> str:
    """One name per physical device: ``cuda`` and ``cuda:0`` (when 0 is the current device) are the same GPU,
    ``cpu`` and ``cpu:0`` the same CPU -- so the registry holds one copy of the weights for both spellings."""
    if device.type == "cpu":
        return "cpu"
    if device.index is not None:
        return f"{device.type}:{device.index}"
    if device.type == "cuda":
        return f"cuda:{torch.cuda.current_device()}"
    if device.type == "xpu":
        return f"xpu:{torch.xpu.current_device()}"
    return f"{device.type}:0"  # mps has a single device


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
"""Guards ``_REGISTRY`` and ``_LOAD_LOCKS``; held for look-ups only, never while a model loads."""
_LOAD_LOCKS: dict[tuple, threading.Lock] = {}
"""One lock per registry key, held while that model loads: a second request for the same model waits for the
first and gets its object; requests for other models, and look-ups of loaded ones, never wait."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _registry_key(kind: str, source: str, device: torch.device, precision: Precision) -> tuple:
    """What makes two loads the same object: the checkpoint, what it is loaded as, where, in which dtype and
    quantization."""
    return (kind, source, canonical_device(device), precision.dtype, precision.quantization)


def _looks_like_path(name: str) -> bool:
    """``./models/x``, ``/abs/x``, ``../x``, ``~/x``, ``a/b/c``, ``C:\\x``: not a Hub id, so a (missing) path.

    ``org/name`` and ``name`` are valid Hub ids; they are tried as local folders first anyway.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def pretrained_kwargs(local: bool) -> dict[str, Any]:
    """What every ``from_pretrained`` here is given: never remote code, and only local files for a local folder
    or with ``HF_HUB_OFFLINE`` set. The chat model of ``qwen3-rag ask`` loads with the same."""
    kwargs: dict[str, Any] = {"trust_remote_code": False}
    if _offline() or local:
        kwargs["local_files_only"] = True
    return kwargs


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``{"dtype": dtype}`` for transformers >= 4.56, ``{"torch_dtype": dtype}`` before (the name changed)."""
    return {_DTYPE_KWARG: dtype}


def _locate(name: str, what: str = "the Qwen3 model", example: str = "Qwen/Qwen3-Embedding-0.6B") -> tuple[str, bool]:
    """``(source, is_local)``: the resolved folder for a local checkpoint, else the Hub id as given.

    ``what`` names the model in messages (``"the chat model"``), ``example`` is the Hub id a download hint shows.
    """
    local = Path(name).expanduser()
    if local.exists():
        if not local.is_dir():
            msg = (
                f"Could not load {what} {name!r}: it is a file, not a model folder; pass the folder that "
                "holds config.json, the *.safetensors weights and the tokenizer files"
            )
            raise ModelLoadError(msg)
        if not (local / "config.json").is_file():
            msg = (
                f"Could not load {what} {name!r}: the folder holds no config.json, so it is not a model "
                "folder; pass the folder that holds config.json, the *.safetensors weights and the tokenizer files"
            )
            raise ModelLoadError(msg)
        return str(local.resolve()), True
    if _looks_like_path(name):
        msg = (
            f"Could not load {what} {name!r}: there is no local folder at {str(local.absolute())!r} "
            "(and it is not a Hugging Face Hub id); check the path, or download the model there first "
            f"(hf download {example} --local-dir ...)"
        )
        raise ModelLoadError(msg)
    return name, False


locate_checkpoint = _locate
"""Public name of :func:`_locate` for callers outside the core (the CLI checks --llm before it searches)."""


def _load_error(
    name: str,
    local: bool,
    exc: BaseException,
    what: str = "the Qwen3 model",
    fix: str = "Pass the path of a local folder holding config.json, *.safetensors and the tokenizer files, "
    "or a Hub id such as 'Qwen/Qwen3-Embedding-0.6B' with network access.",
) -> ModelLoadError:
    if local:
        where = "the local folder"
    else:
        where = "a Hugging Face Hub id (no local folder of that name exists)"
        if _offline():
            where += "; HF_HUB_OFFLINE is set, so only the local cache was searched"
    cause = f"{type(exc).__name__}: {one_line(exc)}"
    return ModelLoadError(f"Could not load {what} {name!r} (looked for it as {where}). {fix} Cause: {cause}")


def _corrupt_weights(name: str, exc: BaseException, what: str = "the Qwen3 model") -> ModelLoadError:
    return ModelLoadError(
        f"Could not load {what} {name!r}: a weight file is corrupt or truncated "
        f"(SafetensorError: {one_line(exc)}); download the model again"
    )


def load_model(
    name: str | os.PathLike,
    *,
    kind: str,
    device: str | torch.device | None,
    dtype: str | torch.dtype | None,
) -> LoadedModel:
    """Load (or reuse) ``name`` as ``kind`` ('embedding' or 'reranker') on ``device`` in ``dtype``.

    Two requests for the same (model, kind, device, dtype) share one object, so a LangChain and a
    LlamaIndex adapter over the same checkpoint hold the weights once. The device is checked before anything
    loads, the checkpoint (architecture, output head, weight files) before the weights load. Never
    ``trust_remote_code``; weights load from safetensors only.
    """
    name = check_model_name(name)
    torch_device = resolve_device(device, check=False)
    precision = resolve_precision(dtype, torch_device)  # dtype='int8' on a GPU is wrong on any machine: said first
    check_available(torch_device, device)
    source, local = _locate(name)
    key = _registry_key(kind, source, torch_device, precision)
    with _REGISTRY_LOCK:
        loaded = _REGISTRY.get(key)
        if loaded is not None:
            return loaded
        load_lock = _LOAD_LOCKS.setdefault(key, threading.Lock())
    with load_lock:
        with _REGISTRY_LOCK:
            loaded = _REGISTRY.get(key)
        if loaded is None:
            loaded = _load(name, source, local, kind=kind, device=torch_device, precision=precision)
            with _REGISTRY_LOCK:
                _REGISTRY[key] = loaded
        return loaded


def _load(name: str, source: str, local: bool, *, kind: str, device: torch.device, precision: Precision) -> LoadedModel:
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    dtype = precision.dtype
    kwargs = pretrained_kwargs(local)
    auto = AutoModel if kind == "embedding" else AutoModelForCausalLM
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one "Loading weights" bar per model is noise in pipelines
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        check_architecture(name, kind, config)
        folder = _checkpoint_folder(source, local)
        weights = _weight_names(name, folder)
        if weights is not None:
            check_output_head(name, kind, config, weights)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = auto.from_pretrained(
            source,
            config=config,
            **dtype_kwargs(dtype),
            use_safetensors=True,
            attn_implementation=attention_implementation(device),
            **kwargs,
        )
        if weights is None:  # a Hub checkpoint whose weights were not in the cache before from_pretrained
            weights = _weight_names(name, _checkpoint_folder(source, local))
            if weights is not None:
                check_output_head(name, kind, config, weights)
    except SafetensorError as exc:
        raise _corrupt_weights(name, exc) from exc
    except (OSError, ValueError) as exc:
        if isinstance(exc, ModelLoadError):
            raise
        raise _load_error(name, local, exc) from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.to(device).eval()
    if precision.quantization:
        fuse_projections(model)
        layers = f", {quantize_model(model)} linear layers in int8"
    else:
        packed = pack_linear_layers(model, device, dtype)
        layers = f", {packed} linear layers packed for oneDNN" if packed else ""
    loaded = LoadedModel(
        name=name, kind=kind, model=model, tokenizer=tokenizer, device=device, dtype=dtype,
        quantization=precision.quantization,
    )  # fmt: skip
    logger.info("loaded %s (%s) on %s in %s%s", name, kind, device, precision.name, layers)
    return loaded


_ARCHITECTURES = {"embedding": ("qwen3", "qwen2"), "reranker": ("qwen3",)}
_EXAMPLES = {"embedding": "Qwen/Qwen3-Embedding-0.6B", "reranker": "Qwen/Qwen3-Reranker-0.6B"}


def check_architecture(name: str, kind: str, config: Any) -> None:
    """Refuse, before the weights load, a checkpoint the recipe cannot run: a BERT, or as the reranker anything
    but a causal Qwen3 language model (an embedding checkpoint is a base ``Qwen3Model``)."""
    model_type = getattr(config, "model_type", None)
    example = _EXAMPLES[kind]
    if model_type not in _ARCHITECTURES[kind]:
        msg = f"{name!r} is a {model_type!r} checkpoint, not a Qwen3 one: pass a {kind} checkpoint such as {example!r}"
        raise ModelLoadError(msg)
    architectures = list(getattr(config, "architectures", None) or [])
    if kind == "reranker" and architectures and "Qwen3ForCausalLM" not in architectures:
        msg = (
            f"{name!r} is a {'/'.join(architectures)} checkpoint, not a causal language model (Qwen3ForCausalLM): "
            "Qwen3-Reranker scores from its output head's yes/no rows, which an embedding or classifier checkpoint "
            f"does not have; pass a Qwen3-Reranker checkpoint such as {example!r}"
        )
        raise ModelLoadError(msg)


def check_output_head(name: str, kind: str, config: Any, weights: set[str]) -> None:
    """The reranker's output head must be in the weight files: ``lm_head.weight``, or with tied embeddings
    (``tie_word_embeddings``, as in Qwen3-0.6B) the causal model's ``model.embed_tokens.weight``. Otherwise
    transformers fills the head with random numbers, and every score is noise."""
    if kind != "reranker" or "lm_head.weight" in weights:
        return
    tied = bool(getattr(config, "tie_word_embeddings", False))
    if tied and "model.embed_tokens.weight" in weights:
        return
    if "embed_tokens.weight" in weights:
        reason = "its weight files hold a base Qwen3Model (an embedding checkpoint?) without an output head"
    elif tied:
        reason = "its weight files hold neither lm_head.weight nor the tied model.embed_tokens.weight"
    else:
        reason = (
            "its config does not tie the output head to the input embeddings and its weight files hold no "
            "lm_head.weight"
        )
    msg = (
        f"{name!r} cannot score as Qwen3-Reranker: {reason}, so the head would be initialised at random and every "
        f"score would be noise; pass a Qwen3-Reranker checkpoint such as {_EXAMPLES['reranker']!r}"
    )
    raise ModelLoadError(msg)


def _checkpoint_folder(source: str, local: bool) -> Path | None:
    """The folder that holds the checkpoint's files: the local folder, or the Hub snapshot in the cache."""
    if local:
        return Path(source)
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(source, "config.json")
    return Path(config).parent if isinstance(config, str) else None


def _weight_names(name: str, folder: Path | None, what: str = "the Qwen3 model") -> set[str] | None:
    """The tensor names in the folder's ``*.safetensors`` files (headers only), ``None`` if there are none yet.

    Reading the headers also finds a corrupt or truncated file before transformers does, and names it.
    """
    from safetensors import SafetensorError, safe_open

    files = sorted(folder.glob("*.safetensors")) if folder is not None else []
    if not files:
        return None
    names: set[str] = set()
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                names.update(handle.keys())
        except SafetensorError as exc:
            msg = (
                f"Could not load {what} {name!r}: {file.name} is corrupt or truncated "
                f"(SafetensorError: {one_line(exc)}); download the model again"
            )
            raise ModelLoadError(msg) from exc
    return names


def load_causal_lm(
    name: str | os.PathLike, *, device: torch.device, dtype: torch.dtype, what: str, fix: str, example: str
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of any transformers causal LM (the chat model of ``qwen3-rag ask``), loaded as the
    Qwen3 models are: the same path and Hub checks and messages, safetensors only, never remote code, the dtype
    keyword this transformers knows. ``what`` names the model in messages, ``fix`` says what to pass instead,
    ``example`` is a Hub id for the download hint. Not shared through the registry, not moved to ``device``."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = check_model_name(name)
    source, local = _locate(name, what, example)
    kwargs = pretrained_kwargs(local)
    try:
        _weight_names(name, _checkpoint_folder(source, local), what)  # a corrupt file is named before loading
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            **dtype_kwargs(dtype),
            use_safetensors=True,
            attn_implementation=attention_implementation(device),
            **kwargs,
        )
    except SafetensorError as exc:
        raise _corrupt_weights(name, exc, what) from exc
    except (OSError, ValueError) as exc:
        if isinstance(exc, ModelLoadError):
            raise
        raise _load_error(name, local, exc, what, fix) from exc
    return model, tokenizer


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


_Closing = TypeVar("_Closing", bound="Closing")


class Closing:
    """``close()`` plus ``with obj: ...``, which closes ``obj`` on the way out, for everything that may hold a
    server client (the core classes and the adapters); subclasses say what ``close()`` releases."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Closing) -> _Closing:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


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
    model = check_model_name(model)
    if base_url is None:
        return None, load_model(model, kind=kind, device=device, dtype=dtype)
    from qwen3_rag.remote import VLLMEmbeddingClient, VLLMRerankClient

    client = VLLMEmbeddingClient if kind == "embedding" else VLLMRerankClient
    return client(model, base_url, api_key=api_key, timeout=timeout, batch_size=batch_size), None
