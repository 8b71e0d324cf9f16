"""Argument and result checks with messages that name the argument, the valid range and the fix."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

MIN_DIMENSIONS = 32
"""The smallest Matryoshka size Qwen3-Embedding was trained for."""


class NonFiniteError(FloatingPointError):
    """The model produced NaN or infinity: the message names the dtype it ran in and the dtype to use instead.

    Raised instead of returning the values, so that a NaN never reaches a ranking (it breaks ``sorted``) or an index.
    """


def one_line(text: object) -> str:
    """``text`` with its line breaks (and the runs of blanks around them) folded into single spaces."""
    return " ".join(str(text).split())


def check_model_name(value: Any) -> str:
    """A Hub id, a local folder (``str`` or ``os.PathLike``) or a served model name, as a non-empty ``str``."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        msg = (
            "model must be a Hugging Face Hub id such as 'Qwen/Qwen3-Embedding-0.6B' or the path of a local "
            f"model folder (a str or os.PathLike), got {type(value).__name__}"
        )
        raise TypeError(msg)
    if not value.strip():
        raise ValueError(f"model must be a Hub id or the path of a local model folder, got {value!r}")
    return value


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


def check_dimensions(
    value: Any, *, hidden_size: int | None = None, model: str | None = None, name: str = "dimensions"
) -> int | None:
    """The one Matryoshka range check: ``None`` (the full vector) or an integer from 32 to ``hidden_size``.

    ``hidden_size=None`` (not known yet, e.g. a server not asked yet) checks the lower bound only. ``name`` is how
    the caller's user spells the setting (``"--dimensions"`` in the CLI).
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < MIN_DIMENSIONS
        or (hidden_size is not None and value > hidden_size)
    ):
        if hidden_size is None:
            msg = f"{name} must be an integer >= {MIN_DIMENSIONS} or None, got {value!r}"
        else:
            of = f" (the hidden size of {model})" if model else " (the model's hidden size)"
            msg = f"{name} must be an integer between {MIN_DIMENSIONS} and {hidden_size}{of}, got {value!r}"
        raise ValueError(msg)
    return value


def non_finite_rows(values: Any) -> list[int]:
    """Indices of the rows of a 1-D or 2-D torch tensor or numpy array that hold a NaN or an infinity."""
    import numpy as np

    if hasattr(values, "detach"):  # a torch tensor: reduce on its device, move only the row flags
        import torch

        bad = ~torch.isfinite(values)
        flags = (bad if bad.dim() == 1 else bad.any(dim=-1)).cpu().numpy()
    else:
        bad = ~np.isfinite(np.asarray(values, dtype=np.float64))
        flags = bad if bad.ndim == 1 else bad.any(axis=-1)
    return [int(i) for i in np.flatnonzero(flags)]


def describe_indices(indices: Sequence[int], total: int, noun: str) -> str:
    """``"input 3 of 10"``, ``"inputs 1, 4 and 7 of 10"``, ``"12 of 100 inputs (the first: 0, 1, 2, 5, 9)"``."""
    if len(indices) == 1:
        return f"{noun} {indices[0]} of {total}"
    if len(indices) <= 5:
        listed = ", ".join(map(str, indices[:-1])) + f" and {indices[-1]}"
        return f"{noun}s {listed} of {total}"
    return f"{len(indices)} of {total} {noun}s (the first: {', '.join(map(str, indices[:5]))})"


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


def non_finite_error(
    indices: Sequence[int],
    total: int,
    *,
    noun: str,
    model: str,
    dtype: object = None,
    device: object = None,
    server: str | None = None,
) -> NonFiniteError:
    """The error for NaN/inf outputs: which inputs, in which dtype, and the dtype that avoids it."""
    which = describe_indices(indices, total, noun)
    if server is not None:
        msg = (
            f"the vLLM server at {server} returned NaN or infinity for {which} (model {model!r}): the served model "
            "overflows in its dtype; restart the server with --dtype bfloat16 (or --dtype float32)"
        )
        return NonFiniteError(msg)
    dtype_name = str(dtype).removeprefix("torch.")
    if dtype_name == "float16":
        fix = "float16 overflows in Qwen3 models; load the model with dtype='bfloat16' (or dtype='float32')"
    elif dtype_name == "bfloat16":
        fix = "load the model with dtype='float32'"
    else:
        fix = "not a low-precision overflow, so the weights are probably damaged; download the model again"
    return NonFiniteError(f"{model} produced NaN or infinity for {which} in {dtype_name} on {device}: {fix}")
