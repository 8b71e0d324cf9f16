"""LangChain document compressor over a local Qwen3-Reranker (a thin layer on :class:`qwen3_rag.Qwen3Reranker`)."""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_validator

from qwen3_rag import DEFAULT_INSTRUCTION, DEFAULT_RERANKER_MODEL, Qwen3Reranker
from qwen3_rag._loading import Closing
from qwen3_rag._validation import plain_path, plain_torch


class _Unset:
    def __repr__(self) -> str:
        return "<instance setting>"


_UNSET: Any = _Unset()


def _text(document: Any) -> Any:
    return document.page_content if isinstance(document, Document) else document


class Qwen3Rerank(BaseDocumentCompressor, Closing):
    """Qwen3-Reranker run locally as a LangChain document compressor.

    Each document is scored with the model card's prompt; its ``relevance_score`` is P(yes) in [0, 1].
    ``compress_documents`` returns NEW documents, best first, at most ``top_n`` of them, each a copy of
    the input (same ``id``, ``page_content`` and metadata) with ``metadata["relevance_score"]`` added;
    the input documents are never changed. Instances built with the same ``model``, ``device`` and
    ``dtype`` -- here, in ``llama_index_qwen3`` or in ``qwen3_rag`` -- share one loaded model. The fields
    that choose the model and how it runs are frozen (build a new object to change them); ``top_n``,
    ``score_threshold`` and ``instruction`` may be set later.

    Setup:
        Install ``qwen3-rag`` with the LangChain extra (install the torch build for your hardware first).

        ```bash
        pip install "qwen3-rag[langchain]"
        ```

    Key init args — rerank params:
        model: str
            Hub id (``Qwen/Qwen3-Reranker-0.6B``, ``-4B``, ``-8B``) or a local folder; alias ``model_name``.
        top_n: int | None
            Documents to keep, best first; ``None`` keeps all.
        score_threshold: float | None
            Drop documents whose relevance score is below this.
        instruction: str | None
            The ``<Instruct>:`` task; ``None`` is the card's web-search default.

    Key init args — runtime params:
        device: str | None
            ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``; ``None`` picks cuda > mps > cpu.
        dtype: str | None
            ``"bfloat16"``, ``"float32"``, ``"float16"``, ``"int8"`` (CPU only); ``None`` is bfloat16 on CUDA and
            on CPUs with native bf16, float32 elsewhere.
        batch_size: int
            (query, document) pairs per forward pass.
        max_length: int
            Tokens per pair, prompt included; a longer document loses its end.

    Instantiate:
        ```python
        from langchain_core.documents import Document
        from langchain_qwen3 import Qwen3Rerank

        reranker = Qwen3Rerank(model="Qwen/Qwen3-Reranker-0.6B", top_n=2)
        documents = [
            Document("Gravity is a force that attracts two bodies.", id="g"),
            Document("The capital of China is Beijing.", id="b"),
            Document("Beijing hosted the 2008 Summer Olympics.", id="o"),
        ]
        query = "What is the capital of China?"
        ```

    Rerank documents:
        ```python
        for doc in reranker.compress_documents(documents, query):
            print(doc.id, round(doc.metadata["relevance_score"], 3))
        ```

        ```txt
        b 0.998
        o 0.042
        ```

    Scores only:
        ```python
        print(reranker.rerank(documents, query))
        ```

        ```txt
        [{'index': 1, 'relevance_score': 0.998...}, {'index': 2, 'relevance_score': 0.042...}]
        ```

    In a retriever:
        ``ContextualCompressionRetriever`` lives in ``langchain-classic`` (``pip install langchain-classic``).

        ```python
        from langchain_classic.retrievers import ContextualCompressionRetriever
        from langchain_core.vectorstores import InMemoryVectorStore
        from langchain_qwen3 import Qwen3Embeddings

        store = InMemoryVectorStore.from_documents(documents, Qwen3Embeddings(model="Qwen/Qwen3-Embedding-0.6B"))
        retriever = ContextualCompressionRetriever(
            base_compressor=reranker, base_retriever=store.as_retriever(search_kwargs={"k": 3})
        )
        best = retriever.invoke(query)
        ```

    Async:
        The model runs in a worker thread, so the event loop stays free.

        ```python
        best = await reranker.acompress_documents(documents, query)
        ```
    """

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        protected_namespaces=(),
        use_attribute_docstrings=True,
        validate_assignment=True,
    )

    model: str = Field(default=DEFAULT_RERANKER_MODEL, alias="model_name", frozen=True)
    """Hub id (``Qwen/Qwen3-Reranker-0.6B``, ``-4B``, ``-8B``) or a local folder; also accepted as ``model_name``."""
    top_n: int | None = Field(default=3, ge=1)
    """Documents to return, best first; ``None`` returns every document."""
    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Drop documents whose relevance score (P(yes), 0..1) is below this; ``None`` keeps all."""
    instruction: str | None = DEFAULT_INSTRUCTION
    """The ``<Instruct>:`` task of the reranker prompt; ``None`` uses the card's web-search default."""
    device: str | None = Field(default=None, frozen=True)
    """Torch device (``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``); ``None`` picks cuda > mps > cpu."""
    dtype: str | None = Field(default=None, frozen=True)
    """``"bfloat16"``, ``"float32"``, ``"float16"`` or ``"int8"`` (the CPU int8 mode; refused on GPUs); ``None`` is
    bfloat16 on CUDA and on CPUs with native bf16 (AMX / AVX512-BF16), float32 elsewhere."""
    batch_size: int = Field(default=16, frozen=True)
    """(query, document) pairs per forward pass."""
    max_length: int = Field(default=8192, frozen=True)
    """Tokens per pair, prompt included; a longer document loses its end (and a warning is logged)."""
    max_batch_tokens: int | None = Field(default=None, frozen=True)
    """Padded tokens per forward pass; ``None`` picks a budget for the device."""
    show_progress: bool | None = Field(default=None, frozen=True)
    """Show a progress bar; ``None`` shows one only for long calls."""
    base_url: str | None = Field(default=None, frozen=True)
    """A vLLM server serving ``model`` (e.g. ``http://127.0.0.1:8000``) instead of local weights; see docs/vllm.md."""
    api_key: SecretStr | None = Field(default=None, frozen=True)
    """The server's ``--api-key``, if it has one."""

    _core: Qwen3Reranker = PrivateAttr()

    @field_validator("model", mode="before")
    @classmethod
    def _path_as_string(cls, value: Any) -> Any:
        return plain_path(value)

    @field_validator("device", "dtype", mode="before")
    @classmethod
    def _torch_objects_as_strings(cls, value: Any) -> Any:
        return plain_torch(value)

    def model_post_init(self, context: Any, /) -> None:
        """Build the core once, at construction. Assignments (``top_n``, ``instruction``, ...) go through
        ``validate_assignment`` but never rebuild it: the fields that define the model are frozen."""
        super().model_post_init(context)
        self._core = Qwen3Reranker(
            self.model,
            device=self.device,
            dtype=self.dtype,
            instruction=self.instruction,
            max_length=self.max_length,
            batch_size=self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
            show_progress=self.show_progress,
            base_url=self.base_url,
            api_key=self.api_key.get_secret_value() if self.api_key else None,
        )

    def close(self) -> None:
        """Close the connections to the vLLM server (``base_url``); local weights stay shared."""
        self._core.close()

    def rerank(
        self,
        documents: Sequence[str | Document],
        query: str,
        *,
        top_n: int | None = _UNSET,
        score_threshold: float | None = _UNSET,
    ) -> list[dict[str, Any]]:
        """Score documents against ``query``, best first.

        Args:
            documents: Texts or ``Document`` objects (their ``page_content`` is scored).
            query: The search query.
            top_n: Keep at most this many; defaults to the instance's ``top_n`` (``None``: all).
            score_threshold: Drop scores below this; defaults to the instance's ``score_threshold``.

        Returns:
            ``[{"index": i, "relevance_score": p}, ...]``: ``i`` indexes ``documents``, ``p`` is P(yes) in
            [0, 1]; equal scores keep input order.
        """
        top_n = self.top_n if top_n is _UNSET else top_n
        threshold = self.score_threshold if score_threshold is _UNSET else score_threshold
        texts = documents if isinstance(documents, str) else [_text(doc) for doc in documents]
        # Best first, so cutting to top_n before the threshold keeps the same documents.
        results = self._core.rerank(query, texts, top_n=top_n, instruction=self.instruction)
        if threshold is not None:
            results = [r for r in results if r.score >= threshold]
        return [{"index": r.index, "relevance_score": r.score} for r in results]

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query`` and keep the best.

        Args:
            documents: The retrieved documents; not modified.
            query: The search query.
            callbacks: Accepted for the interface; unused.

        Returns:
            New documents, best first, at most ``top_n``, none scoring under ``score_threshold``; each a copy
            of its input (``id`` kept, metadata deep-copied) with ``metadata["relevance_score"]`` = P(yes).
        """
        if not documents:
            return []
        return [
            documents[hit["index"]].model_copy(
                update={
                    "metadata": {
                        **deepcopy(documents[hit["index"]].metadata),
                        "relevance_score": hit["relevance_score"],
                    }
                }
            )
            for hit in self.rerank(documents, query)
        ]

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Like :meth:`compress_documents`, with the model run in a worker thread."""
        return await run_in_executor(None, self.compress_documents, documents, query, callbacks)
