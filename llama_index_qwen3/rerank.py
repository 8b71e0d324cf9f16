"""Qwen3-Reranker as a LlamaIndex node postprocessor: a thin layer over :class:`qwen3_rag.Qwen3Reranker`."""

from __future__ import annotations

import os
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle

from llama_index_qwen3._config import config_state
from qwen3_rag import DEFAULT_INSTRUCTION, DEFAULT_RERANKER_MODEL, Qwen3Reranker
from qwen3_rag._loading import Closing
from qwen3_rag._validation import plain_path, plain_torch

dispatcher = get_dispatcher(__name__)

RETRIEVAL_SCORE_KEY = "retrieval_score"
"""The metadata key that ``keep_retrieval_score=True`` writes, as in LlamaIndex's own rerankers."""


class Qwen3Rerank(BaseNodePostprocessor, Closing):
    """Qwen3-Reranker for LlamaIndex, run locally: reorders retrieved nodes by P(yes) for the query.

    Setup:
        ``pip install "qwen3-rag[llama-index]"``

    Key init args:
        model: Hub id (``Qwen/Qwen3-Reranker-0.6B``, ``-4B``, ``-8B``) or a local folder.
        top_n: nodes to return, best first.
        instruction: the ``<Instruct>:`` task; ``None`` is the card's web-search default.
        keep_retrieval_score: copy each node's retrieval score into the returned node's metadata
            (``retrieval_score``, hidden from the embedding and LLM text).
        device / dtype: ``None`` picks cuda > mps > cpu, and bfloat16 on CUDA and on CPUs with native bf16, float32
            elsewhere; ``dtype="int8"`` is the CPU int8 mode (refused on GPUs).
        max_length: tokens per (query, document) pair, prompt included; a longer document loses its end.

    Instantiate:
        .. code-block:: python

            from llama_index_qwen3 import Qwen3Rerank

            rerank = Qwen3Rerank(model="Qwen/Qwen3-Reranker-0.6B", top_n=3)
            query_engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[rerank])

    Rerank:
        .. code-block:: python

            best = rerank.postprocess_nodes(retrieved, query_str="What is the capital of China?")
            best[0].score  # P(yes) in [0, 1]

    Returns new ``NodeWithScore`` objects; the nodes passed in are left as they were. Emits
    ``ReRankStartEvent`` / ``ReRankEndEvent`` and the ``RERANKING`` callback event. The loaded weights are
    shared with every other adapter and core object over the same (model, device, dtype) in the process.
    Fields that choose the model or its settings are frozen after construction; ``top_n``, ``instruction``
    and ``keep_retrieval_score`` are read on every call.
    """

    model: str = Field(
        default=DEFAULT_RERANKER_MODEL,
        description="Hub id (Qwen/Qwen3-Reranker-0.6B, -4B, -8B) or a local folder.",
        frozen=True,
    )
    top_n: int = Field(default=3, description="Nodes to return, best first.", gt=0)
    instruction: str | None = Field(
        default=DEFAULT_INSTRUCTION,
        description="The <Instruct>: task of the reranker prompt; None for the card's default.",
    )
    keep_retrieval_score: bool = Field(
        default=False,
        description="Copy each node's retrieval score into the returned node's metadata as 'retrieval_score'.",
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
        description="Tokens per (query, document) pair, prompt included; a longer document loses its end.",
        gt=0,
        frozen=True,
    )
    batch_size: int = Field(default=16, description="Pairs per forward pass.", gt=0, frozen=True)
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

    _reranker: Qwen3Reranker = PrivateAttr()

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_RERANKER_MODEL,
        top_n: int = 3,
        *,
        instruction: str | None = DEFAULT_INSTRUCTION,
        keep_retrieval_score: bool = False,
        device: Any = None,
        dtype: Any = None,
        max_length: int = 8192,
        batch_size: int = 16,
        max_batch_tokens: int | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model=model,
            top_n=top_n,
            instruction=instruction,
            keep_retrieval_score=keep_retrieval_score,
            device=device,
            dtype=dtype,
            max_length=max_length,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            base_url=base_url,
            api_key=api_key,
            **({} if callback_manager is None else {"callback_manager": callback_manager}),
            **kwargs,
        )
        self._reranker = Qwen3Reranker(
            self.model,
            instruction=self.instruction,
            device=self.device,
            dtype=self.dtype,
            max_length=self.max_length,
            batch_size=self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
            base_url=self.base_url,
            api_key=self.api_key,
        )

    @field_validator("model", mode="before")
    @classmethod
    def _path_as_string(cls, value: Any) -> Any:
        return plain_path(value)

    @field_validator("device", "dtype", mode="before")
    @classmethod
    def _torch_objects_as_strings(cls, value: Any) -> Any:
        return plain_torch(value)

    def __getstate__(self) -> dict[str, Any]:
        return config_state(self, "_reranker")

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Any:
        memo = {} if memo is None else memo
        memo[id(self._reranker)] = self._reranker  # copies share the core: it holds the process-wide weights
        return super().__deepcopy__(memo)

    @classmethod
    def class_name(cls) -> str:
        return "Qwen3Rerank"

    @property
    def reranker(self) -> Qwen3Reranker:
        """The core object (shares its loaded model with every adapter over the same model, device, dtype)."""
        return self._reranker

    def close(self) -> None:
        """Close the connections to the vLLM server (``base_url``); local weights stay shared."""
        self._reranker.close()

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            msg = (
                "Qwen3Rerank needs the query to rerank against: call postprocess_nodes(nodes, query_str=...) "
                "or pass query_bundle=QueryBundle(...)"
            )
            raise ValueError(msg)
        nodes = list(nodes)
        top_n = self.top_n
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_n, model_name=self.model))
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: top_n,
            },
        ) as event:
            texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
            results = self._reranker.rerank(query_bundle.query_str, texts, top_n=top_n, instruction=self.instruction)
            reranked = [NodeWithScore(node=self._output_node(nodes[r.index]), score=r.score) for r in results]
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    def _output_node(self, scored: NodeWithScore) -> BaseNode:
        """The node to return: the same object, or with ``keep_retrieval_score`` a copy with the score added."""
        if not self.keep_retrieval_score:
            return scored.node
        node = scored.node
        hidden = [RETRIEVAL_SCORE_KEY]
        return node.model_copy(
            update={
                "metadata": {**node.metadata, RETRIEVAL_SCORE_KEY: scored.score},
                "excluded_embed_metadata_keys": _union(node.excluded_embed_metadata_keys, hidden),
                "excluded_llm_metadata_keys": _union(node.excluded_llm_metadata_keys, hidden),
            }
        )


def _union(keys: list[str], extra: list[str]) -> list[str]:
    return [*keys, *(k for k in extra if k not in keys)]
