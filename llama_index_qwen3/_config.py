"""Config helpers shared by the adapters."""

from __future__ import annotations

import os
import pickle
from typing import Any

from llama_index.core.bridge.pydantic import BaseModel


def plain_path(value: Any) -> Any:
    """A ``pathlib.Path`` (any ``os.PathLike``) as its string; anything else unchanged."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def stringify_torch(value: Any) -> Any:
    """``torch.device('cuda', 1)`` -> ``'cuda:1'``, ``torch.bfloat16`` -> ``'bfloat16'``; anything else unchanged.

    Config stays plain strings so that ``to_dict()`` / ``to_json()`` round-trip without torch objects.
    """
    if type(value).__module__ == "torch":
        return str(value).removeprefix("torch.")
    return value


def config_state(component: BaseModel, runtime: str) -> dict[str, Any]:
    """Pickle state of an adapter: its config, never the loaded model held in the ``runtime`` attribute.

    LlamaIndex's ``BaseComponent.__getstate__`` test-pickles every attribute to drop the unpicklable ones,
    which for a core object means serialising the whole model before failing on its lock. Unpickling
    (``BaseComponent.__setstate__``) runs ``__init__``, which loads the model, or reuses it in the same process:
    so ``IngestionPipeline(num_workers=...)`` and copies work without copying weights.
    """
    state = BaseModel.__getstate__(component)
    private = state.get("__pydantic_private__") or {}
    state["__pydantic_private__"] = {k: v for k, v in private.items() if k != runtime}
    state["__dict__"] = {k: v for k, v in state["__dict__"].items() if _picklable(v)}
    return state


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True
