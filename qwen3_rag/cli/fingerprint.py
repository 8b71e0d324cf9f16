"""The embedding fingerprint an index is stamped with, and choosing an embedder whose vectors match it."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from qwen3_rag._validation import check_dimensions
from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.options import EmbeddingRequest
from qwen3_rag.embedder import Qwen3Embedder
from qwen3_rag.prompts import DEFAULT_EMBEDDING_MODEL, DEFAULT_INSTRUCTION

_META = "qwen3_rag:"
_FORMAT = 1
_PROBE_TEXT = "qwen3-rag fingerprint probe: the quick brown fox jumps over the lazy dog."
_PROBE_SIZE = 16
_PROBE_AGREEMENT = 0.95


class FingerprintMismatch(UsageError):
    """The collection holds vectors of another model, dimension or instruction than the one asked for."""


# ---------------------------------------------------------------------------------------------- fingerprint


@dataclass(frozen=True)
class Fingerprint:
    """What makes two vectors comparable: the model, the output dimension, the query instruction, unit length.

    ``probe`` holds the first components of one fixed text's vector, which recognises the same weights under
    another name (a Hub id indexed online, a local copy of it searched offline).
    """

    model: str
    dimensions: int
    instruction: str
    normalized: bool = True
    probe: tuple[float, ...] = ()

    def to_metadata(self) -> dict[str, Any]:
        return {
            f"{_META}format": _FORMAT,
            f"{_META}embedding_model": self.model,
            f"{_META}dimensions": self.dimensions,
            f"{_META}instruction": self.instruction,
            f"{_META}normalized": self.normalized,
            f"{_META}probe": json.dumps(list(self.probe)),
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None) -> Fingerprint | None:
        metadata = metadata or {}
        if f"{_META}embedding_model" not in metadata:
            return None
        return cls(
            model=metadata[f"{_META}embedding_model"],
            dimensions=int(metadata[f"{_META}dimensions"]),
            instruction=metadata.get(f"{_META}instruction", ""),
            normalized=bool(metadata.get(f"{_META}normalized", True)),
            probe=tuple(json.loads(metadata.get(f"{_META}probe", "[]"))),
        )

    def describe(self) -> str:
        instruction = repr(self.instruction) if self.instruction else "none"
        norm = "unit-length" if self.normalized else "unnormalised"
        return f"model {self.model!r}, {self.dimensions} dimensions, instruction {instruction}, {norm} vectors"


def absolute_model_path(model: str) -> str:
    """A model that names a local folder, as an absolute path (the index records it, and is searched from other
    folders); a Hub id as it is."""
    path = os.path.expanduser(model)
    return os.path.abspath(path) if os.path.exists(path) else model


def _probe(embedder: Qwen3Embedder, dimensions: int) -> tuple[float, ...]:
    vector = embedder.embed_documents([_PROBE_TEXT], dimensions=dimensions)[0][:_PROBE_SIZE]
    return tuple(round(float(x), 5) for x in vector)


def _agree(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    if not a or len(a) != len(b):
        return False
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    return norm > 0 and dot / norm >= _PROBE_AGREEMENT


def _mismatch(what: str, recorded: Fingerprint, asked: Any, origin: str, where: str) -> FingerprintMismatch:
    return FingerprintMismatch(
        f"{where} was built with {recorded.describe()}; {origin} asks for {what} {asked!r}. Vectors made "
        f"differently cannot be compared: drop {origin} to use the index's own settings, or index into a new "
        "--db or --collection."
    )


def load_embedder(
    request: EmbeddingRequest, recorded: Fingerprint | None, where: str
) -> tuple[Qwen3Embedder, Fingerprint]:
    """The embedder to use with a collection, and the fingerprint its vectors have.

    Settings the user did not give come from the collection (or the defaults, for a new one); settings the user
    gave must agree with the collection's, or a FingerprintMismatch says which one differs and how to fix it.
    """
    if recorded is not None:
        if request.dimensions.given and request.dimensions.value != recorded.dimensions:
            raise _mismatch("dimensions", recorded, request.dimensions.value, request.dimensions.origin, where)
        if request.instruction.given and (request.instruction.value or "") != recorded.instruction:
            raise _mismatch("instruction", recorded, request.instruction.value, request.instruction.origin, where)
        if not recorded.normalized:
            raise FingerprintMismatch(f"{where} holds unnormalised vectors; qwen3-rag only writes unit-length ones")
    model = request.model.value if request.model.given else recorded.model if recorded else DEFAULT_EMBEDDING_MODEL
    model = absolute_model_path(model)
    dimensions = request.dimensions.value if request.dimensions.given else recorded.dimensions if recorded else None
    if request.instruction.given:
        instruction = request.instruction.value or ""
    else:
        instruction = recorded.instruction if recorded else DEFAULT_INSTRUCTION
    try:
        embedder = Qwen3Embedder(
            model,
            device=request.device,
            dtype=request.dtype,
            instruction=instruction or None,
            batch_size=request.batch_size,
            max_length=request.max_length,
            show_progress=False,
            base_url=request.base_url,
            api_key=request.api_key,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    try:
        check_dimensions(
            dimensions, hidden_size=embedder.hidden_size, model=model, name=request.dimensions.origin or "--dimensions"
        )
    except ValueError as exc:
        if recorded is not None and not request.dimensions.given:  # the index's size, beyond this model's
            raise _mismatch("model", recorded, model, request.model.origin or "the model", where) from None
        raise UsageError(str(exc)) from None
    dimensions = dimensions or embedder.hidden_size
    if recorded is not None:
        if model != recorded.model and not _agree(_probe(embedder, dimensions), recorded.probe):
            raise _mismatch("embedding model", recorded, model, request.model.origin or "the model", where)
        return embedder, recorded
    return embedder, Fingerprint(model, dimensions, instruction, True, _probe(embedder, dimensions))
