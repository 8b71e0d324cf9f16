"""Argument checks with messages that name the argument and the valid range."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """A list of str, or a TypeError naming the offending index; a lone str is refused (not iterated)."""
    if isinstance(texts, str):
        msg = f"{name} must be a list of strings, got a single str; wrap it in a list: [{name[:-1] or name}]"
        raise TypeError(msg)
    if not isinstance(texts, Iterable):
        msg = f"{name} must be a list of strings, got {type(texts).__name__}"
        raise TypeError(msg)
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            msg = f"{name}[{i}] must be a str, got {type(text).__name__}"
            raise TypeError(msg)
    return texts


def check_text(text: Any, name: str) -> str:
    if not isinstance(text, str):
        msg = f"{name} must be a str, got {type(text).__name__}"
        raise TypeError(msg)
    return text


def check_positive(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{name} must be an integer >= 1{' or None' if allow_none else ''}, got {value!r}"
        raise ValueError(msg)
    return value


def check_instruction(value: Any, name: str = "instruction") -> str | None:
    if value is not None and not isinstance(value, str):
        msg = f"{name} must be a str or None, got {type(value).__name__}"
        raise TypeError(msg)
    return value


def plain_path(value: Any) -> Any:
    """``pathlib.Path('models/emb')`` (any ``os.PathLike``) -> ``'models/emb'``; anything else unchanged."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def plain_torch(value: Any) -> Any:
    """``torch.device('cuda', 1)`` -> ``'cuda:1'``, ``torch.bfloat16`` -> ``'bfloat16'``; anything else unchanged.

    The adapters keep their config as plain strings (``model_dump()`` / ``to_dict()`` hold no torch objects)
    without importing torch themselves.
    """
    if type(value).__module__ == "torch":
        return str(value).removeprefix("torch.")
    return value
