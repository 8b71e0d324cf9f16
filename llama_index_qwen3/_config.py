"""Config helpers shared by the adapters."""

from __future__ import annotations

from typing import Any


def stringify_torch(value: Any) -> Any:
    """``torch.device('cuda', 1)`` -> ``'cuda:1'``, ``torch.bfloat16`` -> ``'bfloat16'``; anything else unchanged.

    Config stays plain strings so that ``to_dict()`` / ``to_json()`` round-trip without torch objects.
    """
    if type(value).__module__ == "torch":
        return str(value).removeprefix("torch.")
    return value
