"""Field coercions shared by the adapters: config stays plain strings, so ``model_dump()`` holds no objects."""

from __future__ import annotations

import os
from typing import Any


def plain_model(value: Any) -> Any:
    """``pathlib.Path('models/emb')`` -> ``'models/emb'``; anything else unchanged."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def plain_torch(value: Any) -> Any:
    """``torch.device('cuda', 1)`` -> ``'cuda:1'``, ``torch.bfloat16`` -> ``'bfloat16'``; anything else unchanged.

    Needs no torch import: the adapters never touch torch themselves.
    """
    if type(value).__module__ == "torch":
        return str(value).removeprefix("torch.")
    return value
