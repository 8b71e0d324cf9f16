"""Fixtures for the LangChain adapter tests: adapters and core objects over the session's tiny models,
documents shaped like a retriever's output, and a runner for the snippets in the class docstrings."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document

from langchain_qwen3 import Qwen3Embeddings, Qwen3Rerank
from qwen3_rag import DEFAULT_EMBEDDING_MODEL, DEFAULT_RERANKER_MODEL, Qwen3Embedder, Qwen3Reranker
from tests.langchain.texts import PASSAGES


@pytest.fixture(scope="session")
def embeddings(tiny_embedding_path: Path) -> Qwen3Embeddings:
    return Qwen3Embeddings(model=str(tiny_embedding_path), device="cpu")


@pytest.fixture(scope="session")
def core_embedder(tiny_embedding_path: Path) -> Qwen3Embedder:
    return Qwen3Embedder(tiny_embedding_path, device="cpu")


@pytest.fixture(scope="session")
def core_reranker(tiny_reranker_path: Path) -> Qwen3Reranker:
    return Qwen3Reranker(tiny_reranker_path, device="cpu")


@pytest.fixture
def make_rerank(tiny_reranker_path: Path, core_reranker: Qwen3Reranker) -> Callable[..., Qwen3Rerank]:
    """Build a Qwen3Rerank over the tiny reranker (``core_reranker`` keeps the weights loaded between tests)."""

    def make(**kwargs: Any) -> Qwen3Rerank:
        kwargs.setdefault("device", "cpu")
        return Qwen3Rerank(model=str(tiny_reranker_path), **kwargs)

    return make


@pytest.fixture
def documents() -> list[Document]:
    """Retrieved documents: ids, and metadata with a nested value (to catch shallow copies)."""
    return [
        Document(page_content=text, id=f"doc-{i}", metadata={"source": f"doc{i}.txt", "tags": ["a", str(i)]})
        for i, text in enumerate(PASSAGES)
    ]


def docstring_code(cls: type) -> str:
    """The ```python blocks of a class docstring, in order, as one script."""
    blocks = re.findall(r"```python\n(.*?)```", inspect.getdoc(cls) or "", flags=re.DOTALL)
    return "\n".join(textwrap.dedent(block) for block in blocks)


@pytest.fixture
def run_docstring_code(
    tiny_embedding_path: Path, tiny_reranker_path: Path, core_embedder: Qwen3Embedder, core_reranker: Qwen3Reranker
) -> Callable[[type], Awaitable[dict[str, Any]]]:
    """Run a class docstring's snippets (top-level ``await`` allowed) with the Hub ids pointing at the tiny models."""

    async def run(cls: type) -> dict[str, Any]:
        code = docstring_code(cls)
        code = code.replace(repr(DEFAULT_EMBEDDING_MODEL), repr(str(tiny_embedding_path)))
        code = code.replace(repr(DEFAULT_RERANKER_MODEL), repr(str(tiny_reranker_path)))
        code = code.replace(f'"{DEFAULT_EMBEDDING_MODEL}"', repr(str(tiny_embedding_path)))
        code = code.replace(f'"{DEFAULT_RERANKER_MODEL}"', repr(str(tiny_reranker_path)))
        namespace: dict[str, Any] = {}
        compiled = compile(code, f"<{cls.__name__} docstring>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(compiled, namespace)  # a coroutine when the code awaits
        if inspect.iscoroutine(result):
            await result
        return namespace

    return run
