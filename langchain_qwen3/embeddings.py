"""LangChain ``Embeddings`` over a local Qwen3-Embedding model (a thin layer on :class:`qwen3_rag.Qwen3Embedder`)."""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator

from qwen3_rag import DEFAULT_EMBEDDING_MODEL, DEFAULT_INSTRUCTION, Qwen3Embedder
from qwen3_rag._loading import Closing
from qwen3_rag._validation import plain_path, plain_torch


class Qwen3Embeddings(BaseModel, Embeddings, Closing):
    """Qwen3-Embedding run locally, with the model card's query instruction.

    Queries are embedded as ``Instruct: {query_instruction}\\nQuery:{text}`` (newline kept, no space after
    ``Query:``); documents get no instruction. Vectors are L2-normalised, so cosine similarity is a dot
    product. Instances built with the same ``model``, ``device`` and ``dtype`` -- here, in
    ``llama_index_qwen3`` or in ``qwen3_rag`` -- share one loaded model. The fields that choose the model
    and how it runs are frozen (build a new object to change them); ``query_instruction`` may be set later.

    Setup:
        Install ``qwen3-rag`` with the LangChain extra (install the torch build for your hardware first).

        ```bash
        pip install "qwen3-rag[langchain]"
        ```

    Key init args — embedding params:
        model: str
            Hub id (``Qwen/Qwen3-Embedding-0.6B``, ``-4B``, ``-8B``) or a local folder; alias ``model_name``.
        dimensions: int | None
            Matryoshka size, 32 up to the hidden size; ``None`` keeps the full vector.
        query_instruction: str | None
            The retrieval task written in front of every query; ``None`` embeds queries as they are.

    Key init args — runtime params:
        device: str | None
            ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``; ``None`` picks cuda > mps > cpu.
        dtype: str | None
            ``"bfloat16"``, ``"float32"``, ``"float16"``, ``"int8"`` (CPU only); ``None`` is bfloat16 on CUDA and
            on CPUs with native bf16, float32 elsewhere.
        batch_size: int
            Texts per forward pass.
        max_length: int
            Tokens per text; longer texts lose their end.

    Instantiate:
        ```python
        from langchain_qwen3 import Qwen3Embeddings

        embeddings = Qwen3Embeddings(
            model="Qwen/Qwen3-Embedding-0.6B",  # or a local folder
            # dimensions=256,  # Matryoshka: any size from 32 to 1024 (the 0.6B's hidden size)
            # query_instruction="Given a web search query, retrieve relevant passages that answer the query",
            # device="cuda", dtype="bfloat16", batch_size=32, max_length=8192,
        )
        ```

    Embed single text:
        ```python
        vector = embeddings.embed_query("What is the capital of China?")
        print(len(vector))
        ```

        ```txt
        1024
        ```

    Embed multiple texts:
        ```python
        vectors = embeddings.embed_documents(
            ["The capital of China is Beijing.", "Gravity is a force that attracts two bodies."]
        )
        print(len(vectors), len(vectors[0]))
        ```

        ```txt
        2 1024
        ```

    Async:
        The model runs in a worker thread, so the event loop stays free.

        ```python
        query_vector = await embeddings.aembed_query("What is the capital of China?")
        document_vectors = await embeddings.aembed_documents(["The capital of China is Beijing."])
        ```
    """

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        protected_namespaces=(),
        use_attribute_docstrings=True,
        validate_assignment=True,
    )

    model: str = Field(default=DEFAULT_EMBEDDING_MODEL, alias="model_name", frozen=True)
    """Hub id (``Qwen/Qwen3-Embedding-0.6B``, ``-4B``, ``-8B``) or a local folder; also accepted as ``model_name``."""
    dimensions: int | None = Field(default=None, frozen=True)
    """Matryoshka output size, 32 up to the model's hidden size (1024 for 0.6B); ``None`` keeps the full vector."""
    query_instruction: str | None = DEFAULT_INSTRUCTION
    """Task written as ``Instruct: {query_instruction}\\nQuery:{query}`` before each query; ``None`` for none."""
    device: str | None = Field(default=None, frozen=True)
    """Torch device (``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``); ``None`` picks cuda > mps > cpu."""
    dtype: str | None = Field(default=None, frozen=True)
    """``"bfloat16"``, ``"float32"``, ``"float16"`` or ``"int8"`` (the CPU int8 mode; refused on GPUs); ``None`` is
    bfloat16 on CUDA and on CPUs with native bf16 (AMX / AVX512-BF16), float32 elsewhere."""
    batch_size: int = Field(default=32, frozen=True)
    """Texts per forward pass."""
    max_length: int = Field(default=8192, frozen=True)
    """Tokens per text, ``<|endoftext|>`` included; a longer text loses its end (and a warning is logged)."""
    max_batch_tokens: int | None = Field(default=None, frozen=True)
    """Padded tokens per forward pass; ``None`` picks a budget for the device."""
    show_progress: bool | None = Field(default=None, frozen=True)
    """Show a progress bar; ``None`` shows one only for long calls."""
    base_url: str | None = Field(default=None, frozen=True)
    """A vLLM server serving ``model`` (e.g. ``http://127.0.0.1:8000``) instead of local weights; see docs/vllm.md."""
    api_key: SecretStr | None = Field(default=None, frozen=True)
    """The server's ``--api-key``, if it has one."""

    _core: Qwen3Embedder = PrivateAttr()

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
        self._core = Qwen3Embedder(
            self.model,
            device=self.device,
            dtype=self.dtype,
            dimensions=self.dimensions,
            instruction=self.query_instruction,
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

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents as they are (no instruction).

        Args:
            texts: The documents.

        Returns:
            One unit vector per text, in input order.
        """
        return self._core.embed_documents(texts, dimensions=self.dimensions).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed a search query, formatted ``Instruct: {query_instruction}\\nQuery:{text}``.

        Args:
            text: The query.

        Returns:
            A unit vector.
        """
        if not isinstance(text, str):  # a list would otherwise be embedded as several queries
            msg = f"text must be a str, got {type(text).__name__}"
            raise TypeError(msg)
        return self._core.embed_queries([text], instruction=self.query_instruction, dimensions=self.dimensions)[
            0
        ].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Like :meth:`embed_documents`, with the model run in a worker thread."""
        return await run_in_executor(None, self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Like :meth:`embed_query`, with the model run in a worker thread."""
        return await run_in_executor(None, self.embed_query, text)
