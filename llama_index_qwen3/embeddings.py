"""Qwen3-Embedding as a LlamaIndex ``BaseEmbedding``: a thin layer over :class:`qwen3_rag.Qwen3Embedder`."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
from llama_index.core.callbacks import CallbackManager

from llama_index_qwen3._config import config_state
from qwen3_rag import DEFAULT_EMBEDDING_MODEL, DEFAULT_INSTRUCTION, Qwen3Embedder
from qwen3_rag._loading import Closing
from qwen3_rag._validation import plain_path, plain_torch

DEFAULT_EMBED_BATCH_SIZE = 1024
"""Texts LlamaIndex hands over per call; the core sorts within a call, so a bigger call pads less."""


class Qwen3Embedding(BaseEmbedding, Closing):
    """Qwen3-Embedding for LlamaIndex, run locally: queries get the Qwen3 instruction, documents none.

    Setup:
        ``pip install "qwen3-rag[llama-index]"``

    Key init args:
        model_name: Hub id (``Qwen/Qwen3-Embedding-0.6B``, ``-4B``, ``-8B``) or a local folder.
        dimensions: Matryoshka size (32..hidden size); ``None`` keeps the full vector.
        query_instruction: the task put before every query as ``Instruct: {task}\\nQuery:{query}``;
            ``None`` or ``""`` embeds queries bare (symmetric tasks). Documents never get one.
        device / dtype: ``None`` picks cuda > mps > cpu, and bfloat16 on CUDA and on CPUs with native bf16, float32
            elsewhere; ``dtype="int8"`` is the CPU int8 mode (refused on GPUs).
        embed_batch_size: texts handed to the model per call. LlamaIndex cuts every
            ``get_text_embedding_batch`` (and so every ingestion run) into chunks of this many texts before
            the model sees them, and the core can only sort by token length -- the thing that keeps padding
            low -- within one chunk. LlamaIndex's default of 10 leaves almost nothing to sort, so this
            defaults to 1024: a whole realistic ingestion batch is sorted at once. It bounds nothing on the
            accelerator: ``batch_size`` and ``max_batch_tokens`` size the forward passes.
        max_length: tokens per text, ``<|endoftext|>`` included; longer texts lose their end (logged).

    Instantiate:
        .. code-block:: python

            from llama_index.core import Settings
            from llama_index_qwen3 import Qwen3Embedding

            Settings.embed_model = Qwen3Embedding(model_name="Qwen/Qwen3-Embedding-0.6B", dimensions=512)

    Embed:
        .. code-block:: python

            q = embed_model.get_query_embedding("What is the capital of China?")
            docs = embed_model.get_text_embedding_batch(["Beijing is the capital of China."])

    Async:
        .. code-block:: python

            q = await embed_model.aget_query_embedding("What is the capital of China?")

    The loaded weights are shared with every other adapter and core object over the same
    (model, device, dtype) in the process. Fields that choose the model or its settings are frozen after
    construction (build a new object instead); ``query_instruction`` is read on every call.
    """

    model_name: str = Field(
        default=DEFAULT_EMBEDDING_MODEL,
        description="Hub id (Qwen/Qwen3-Embedding-0.6B, -4B, -8B) or a local folder.",
        frozen=True,
    )
    embed_batch_size: int = Field(
        default=DEFAULT_EMBED_BATCH_SIZE,
        description=(
            "Texts handed to the model per call; the model sorts by length within a call, so keep it large "
            "(LlamaIndex's usual 10 defeats the sorting). Forward passes are sized by batch_size."
        ),
        gt=0,
        le=2048,
    )
    dimensions: int | None = Field(
        default=None,
        description="Matryoshka output size, 32..hidden size; None keeps the full vector.",
        frozen=True,
    )
    query_instruction: str | None = Field(
        default=DEFAULT_INSTRUCTION,
        description="Task for queries (Instruct: {task}\\nQuery:{query}); None or '' for none. Documents get none.",
    )
    device: str | None = Field(
        default=None, description="Torch device such as 'cpu', 'cuda:1', 'mps'; None picks one.", frozen=True
    )
    dtype: str | None = Field(
        default=None,
        description="'float32', 'bfloat16', 'float16' or 'int8' (CPU only); None: bfloat16 on CUDA and on CPUs "
        "with native bf16 (AMX / AVX512-BF16), float32 elsewhere.",
        frozen=True,
    )
    max_length: int = Field(
        default=8192,
        description="Tokens per text, <|endoftext|> included; longer texts lose their end.",
        gt=1,
        frozen=True,
    )
    batch_size: int = Field(default=32, description="Texts per forward pass.", gt=0, frozen=True)
    max_batch_tokens: int | None = Field(
        default=None,
        description="Padded tokens per forward pass; None picks one for the device.",
        gt=0,
        frozen=True,
    )
    base_url: str | None = Field(
        default=None,
        description="A vLLM server serving the model (e.g. http://127.0.0.1:8000) instead of local weights.",
        frozen=True,
    )
    api_key: str | None = Field(
        default=None, description="The server's --api-key, if it has one.", frozen=True, exclude=True, repr=False
    )

    _embedder: Qwen3Embedder = PrivateAttr()

    def __init__(
        self,
        model_name: str | os.PathLike = DEFAULT_EMBEDDING_MODEL,
        *,
        dimensions: int | None = None,
        query_instruction: str | None = DEFAULT_INSTRUCTION,
        device: Any = None,
        dtype: Any = None,
        embed_batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
        max_length: int = 8192,
        batch_size: int = 32,
        max_batch_tokens: int | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model_name=model_name,
            dimensions=dimensions,
            query_instruction=query_instruction,
            device=device,
            dtype=dtype,
            embed_batch_size=embed_batch_size,
            max_length=max_length,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            base_url=base_url,
            api_key=api_key,
            callback_manager=callback_manager,
            **kwargs,
        )
        self._embedder = Qwen3Embedder(
            self.model_name,
            instruction=self.query_instruction,
            dimensions=self.dimensions,
            device=self.device,
            dtype=self.dtype,
            max_length=self.max_length,
            batch_size=self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
            base_url=self.base_url,
            api_key=self.api_key,
        )

    @field_validator("model_name", mode="before")
    @classmethod
    def _path_as_string(cls, value: Any) -> Any:
        return plain_path(value)

    @field_validator("device", "dtype", mode="before")
    @classmethod
    def _torch_objects_as_strings(cls, value: Any) -> Any:
        return plain_torch(value)

    def __getstate__(self) -> dict[str, Any]:
        return config_state(self, "_embedder")

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Any:
        memo = {} if memo is None else memo
        memo[id(self._embedder)] = self._embedder  # copies share the core: it holds the process-wide weights
        return super().__deepcopy__(memo)

    @classmethod
    def class_name(cls) -> str:
        return "Qwen3Embedding"

    @property
    def embedder(self) -> Qwen3Embedder:
        """The core object (shares its loaded model with every adapter over the same model, device, dtype)."""
        return self._embedder

    def close(self) -> None:
        """Close the connections to the vLLM server (``base_url``); local weights stay shared."""
        self._embedder.close()

    # -- BaseEmbedding hooks: BaseEmbedding adds events, caching and batching around these --------------

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embedder.embed_queries([query], instruction=self.query_instruction)[0].tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embedder.embed_documents([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embedder.embed_documents(texts).tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
