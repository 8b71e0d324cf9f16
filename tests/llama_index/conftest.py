"""Fixtures for the LlamaIndex adapter tests: adapters and core objects over the session's tiny models,
and recorders for LlamaIndex's instrumentation events and callback events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CallbackManager, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.schema import NodeWithScore, TextNode

from llama_index_qwen3 import Qwen3Embedding, Qwen3Rerank
from qwen3_rag import Qwen3Embedder, Qwen3Reranker


@pytest.fixture(scope="session")
def embed_model(tiny_embedding_path) -> Qwen3Embedding:
    return Qwen3Embedding(model_name=str(tiny_embedding_path), device="cpu")


@pytest.fixture(scope="session")
def core_embedder(tiny_embedding_path) -> Qwen3Embedder:
    return Qwen3Embedder(tiny_embedding_path, device="cpu")


@pytest.fixture(scope="session")
def core_reranker(tiny_reranker_path) -> Qwen3Reranker:
    return Qwen3Reranker(tiny_reranker_path, device="cpu")


@pytest.fixture
def make_rerank(tiny_reranker_path):
    """Build a Qwen3Rerank over the tiny reranker (the weights load once per session, shared)."""

    def make(**kwargs: Any) -> Qwen3Rerank:
        kwargs.setdefault("device", "cpu")
        return Qwen3Rerank(model=str(tiny_reranker_path), **kwargs)

    return make


PASSAGES = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
    "Paris is the capital and largest city of France.",
    "The cat sat on the mat and purred.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
]


@pytest.fixture
def retrieved() -> list[NodeWithScore]:
    """Retrieved nodes as a retriever returns them: retrieval scores, metadata, an excluded metadata key."""
    return [
        NodeWithScore(
            node=TextNode(
                text=text,
                id_=f"node-{i}",
                metadata={"source": f"doc{i}.txt", "secret": "not for the model"},
                excluded_embed_metadata_keys=["secret"],
                excluded_llm_metadata_keys=["secret"],
            ),
            score=0.9 - 0.1 * i,
        )
        for i, text in enumerate(PASSAGES)
    ]


class _EventRecorder(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "EventRecorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def instrumentation_events() -> Iterator[list[BaseEvent]]:
    """Every LlamaIndex instrumentation event emitted during the test, in order."""
    root = get_dispatcher()
    recorder = _EventRecorder()
    root.add_event_handler(recorder)
    try:
        yield recorder.events
    finally:
        root.event_handlers = [h for h in root.event_handlers if h is not recorder]


@pytest.fixture
def debug_handler() -> LlamaDebugHandler:
    return LlamaDebugHandler(print_trace_on_end=False)


@pytest.fixture
def callback_manager(debug_handler) -> CallbackManager:
    return CallbackManager([debug_handler])
