"""Qwen3-Embedding as a chromadb embedding function: documents as they are, queries with the instruction.

Needs the optional ``chromadb`` dependency: ``pip install "qwen3-rag[chroma]"``.

Setup:
    .. code-block:: python

        import chromadb
        from qwen3_rag.chroma import Qwen3EmbeddingFunction

        client = chromadb.PersistentClient(path="./db")
        collection = client.get_or_create_collection(
            "docs", embedding_function=Qwen3EmbeddingFunction("Qwen/Qwen3-Embedding-0.6B"),
            configuration={"hnsw": {"space": "cosine"}},
        )
        collection.add(ids=["a", "b"], documents=["Beijing is the capital of China.", "Gravity pulls."])
        collection.query(query_texts=["What is the capital of China?"], n_results=1)

``collection.add`` embeds through ``__call__`` (no instruction, as the model card says for documents);
``collection.query(query_texts=...)`` goes through chromadb's ``embed_query`` hook, which adds
``Instruct: {instruction}\\nQuery:``. The model loads on first use, so opening a collection is cheap.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

try:
    from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
    from chromadb.utils.embedding_functions import register_embedding_function
except ImportError as exc:  # pragma: no cover - exercised by a test that hides chromadb
    msg = 'qwen3_rag.chroma needs chromadb, an optional dependency: pip install "qwen3-rag[chroma]"'
    raise ImportError(msg) from exc

from qwen3_rag._validation import check_dimensions, check_instruction, check_positive
from qwen3_rag.embedder import Qwen3Embedder
from qwen3_rag.prompts import DEFAULT_EMBEDDING_MODEL, DEFAULT_INSTRUCTION

__all__ = ["CHROMA_HAS_QUERY_HOOK", "Qwen3EmbeddingFunction"]

CHROMA_HAS_QUERY_HOOK: bool = hasattr(EmbeddingFunction, "embed_query")
"""Whether the installed chromadb embeds ``query_texts`` through ``embed_query`` (chromadb >= 1.0)."""

_DEFAULT = object()


@register_embedding_function
class Qwen3EmbeddingFunction(EmbeddingFunction[Documents]):
    """A chromadb ``EmbeddingFunction`` backed by a local Qwen3-Embedding model.

    Args:
        model: Hub id (``Qwen/Qwen3-Embedding-0.6B``, ``-4B``, ``-8B``) or a local folder.
        dimensions: Matryoshka size (32..hidden size); ``None`` keeps the full vector.
        instruction: the task for queries; ``None`` or ``""`` embeds queries without one.
        device: ``None`` picks cuda > mps > cpu. Not saved in the collection's configuration.
        dtype: ``None`` picks bfloat16 on CUDA and on CPUs with native bf16, float32 elsewhere; ``"int8"`` is the
            CPU int8 mode (refused on GPUs). Not saved either.
        max_length: tokens per input, ``<|endoftext|>`` included.
        batch_size: inputs per forward pass.
        embedder: an existing :class:`~qwen3_rag.Qwen3Embedder` to use instead of loading ``model``. Its
            model, ``dimensions``, ``instruction`` and ``max_length`` are the function's (and are what the
            collection stores), unless ``dimensions`` or ``instruction`` are passed here too; a different
            ``max_length`` cannot be honoured and is refused.

    Vectors are unit length, so ``cosine``, ``ip`` and ``l2`` rank identically; ``cosine`` is the default space.
    The configuration chromadb persists with the collection (``get_config``) holds the model, dimensions,
    instruction and max_length, so ``client.get_collection(name)`` rebuilds this function by itself once
    ``qwen3_rag.chroma`` is imported.
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_EMBEDDING_MODEL,
        *,
        dimensions: int | None = _DEFAULT,
        instruction: str | None = _DEFAULT,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int = _DEFAULT,
        batch_size: int = 32,
        embedder: Qwen3Embedder | None = None,
    ) -> None:
        if embedder is not None and not isinstance(embedder, Qwen3Embedder):
            raise TypeError(f"embedder must be a Qwen3Embedder, got {type(embedder).__name__}")
        if embedder is not None:  # the stored config must describe the vectors this embedder makes
            dimensions = embedder.dimensions if dimensions is _DEFAULT else dimensions
            instruction = embedder.instruction if instruction is _DEFAULT else instruction
            if max_length is not _DEFAULT and max_length != embedder.max_length:
                msg = (
                    f"max_length={max_length!r} differs from the embedder's max_length={embedder.max_length}, which "
                    "is what cuts the texts: leave max_length out, or build the embedder with it"
                )
                raise ValueError(msg)
            max_length = embedder.max_length
        self.dimensions = check_dimensions(None if dimensions is _DEFAULT else dimensions)
        self.instruction = check_instruction(DEFAULT_INSTRUCTION if instruction is _DEFAULT else instruction) or None
        self.max_length = check_positive(8192 if max_length is _DEFAULT else max_length, "max_length")
        self.model = embedder.model_name if embedder is not None else os.fspath(model)
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self._embedder = embedder
        if not CHROMA_HAS_QUERY_HOOK:  # pragma: no cover - chromadb < 1.0
            warnings.warn(
                "this chromadb has no query-embedding hook: collection.query(query_texts=...) would embed queries "
                "as documents, without the instruction. Pass query_embeddings=ef.embed_query([...]) instead.",
                stacklevel=2,
            )

    @property
    def embedder(self) -> Qwen3Embedder:
        """The :class:`~qwen3_rag.Qwen3Embedder`, loaded on first use (shared with any other user of the model)."""
        if self._embedder is None:
            self._embedder = Qwen3Embedder(
                self.model,
                device=self.device,
                dtype=self.dtype,
                dimensions=self.dimensions,
                instruction=self.instruction,
                max_length=self.max_length,
                batch_size=self.batch_size,
            )
        return self._embedder

    # -- the protocol ---------------------------------------------------------------------------------

    def __call__(self, input: Documents) -> Embeddings:
        """Document vectors: no instruction (the model card's recipe for the indexed side)."""
        texts = _as_texts(input)
        if not texts:
            return []
        return list(self.embedder.embed_documents(texts, dimensions=self.dimensions))

    def embed_query(self, input: Documents) -> Embeddings:
        """Query vectors: ``Instruct: {instruction}\\nQuery:{text}``. chromadb calls this for ``query_texts``."""
        texts = _as_texts(input)
        if not texts:
            return []
        return list(self.embedder.embed_queries(texts, instruction=self.instruction, dimensions=self.dimensions))

    @staticmethod
    def name() -> str:
        return "qwen3_rag"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dimensions": self.dimensions,
            "instruction": self.instruction,
            "max_length": self.max_length,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> Qwen3EmbeddingFunction:
        Qwen3EmbeddingFunction.validate_config(config)
        return Qwen3EmbeddingFunction(
            config["model"],
            dimensions=config.get("dimensions"),
            instruction=config.get("instruction"),
            max_length=config.get("max_length", 8192),
        )

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        if not isinstance(config, dict) or not isinstance(config.get("model"), str) or not config["model"]:
            raise ValueError(f"a qwen3_rag embedding function config needs a 'model' string, got {config!r}")

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        """Vectors of another dimension or instruction cannot share a collection; a moved model folder can."""
        for key in ("dimensions", "instruction"):
            if key in new_config and new_config[key] != old_config.get(key):
                msg = (
                    f"changing {key} from {old_config.get(key)!r} to {new_config[key]!r} would mix incompatible "
                    "vectors in one collection: create a new collection instead"
                )
                raise ValueError(msg)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, dimensions={self.dimensions}, "
            f"instruction={self.instruction!r})"
        )


def _as_texts(input: Sequence[str] | str) -> list[str]:
    if isinstance(input, str):  # chromadb passes lists; a bare string is one text, not its characters
        return [input]
    texts = list(input)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"Qwen3EmbeddingFunction embeds text only; input[{i}] is a {type(text).__name__}")
    return texts
