"""Pickling support shared by the LlamaIndex adapters."""

from __future__ import annotations

import pickle
from typing import Any

from llama_index.core.bridge.pydantic import BaseModel


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
