"""Qwen3-Embedding, faithful to the model card: instruction-formatted queries, ``<|endoftext|>``-terminated
inputs, last-token pooling, Matryoshka truncation followed by re-normalisation."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from qwen3_rag._batching import run_batches, token_budget
from qwen3_rag._forward import PrefixCache, last_token_states, run_prefix
from qwen3_rag._loading import Closing, open_model
from qwen3_rag._tokenize import LocalTokens, TokenSource, embedding_rows
from qwen3_rag._validation import (
    MIN_DIMENSIONS,
    check_dimensions,
    check_instruction,
    check_positive,
    check_texts,
    non_finite_error,
    non_finite_rows,
)
from qwen3_rag.prompts import DEFAULT_EMBEDDING_MODEL, DEFAULT_INSTRUCTION, ENDOFTEXT, format_query

logger = logging.getLogger("qwen3_rag")

__all__ = ["MIN_DIMENSIONS", "Qwen3Embedder"]

_DEFAULT = object()  # "use the instance's setting", distinct from an explicit None


class Qwen3Embedder(Closing):
    """Embed queries and documents with a local Qwen3-Embedding model.

    Args:
        model: Hub id (``Qwen/Qwen3-Embedding-0.6B``, ``-4B``, ``-8B``) or a local folder.
        device: ``None`` picks cuda > mps > cpu.
        dtype: ``None`` picks bfloat16 on CUDA and on CPUs with native bf16 (AMX / AVX512-BF16), float32 on other
            CPUs and MPS; ``"int8"`` is the CPU int8 mode (float32 compute, int8 linear layers; refused on GPUs);
            float16 only when asked. ``.dtype`` is the compute dtype, ``.quantization`` ``"int8"`` or ``None``.
        dimensions: Matryoshka output size (32..hidden size) for every call; ``None`` keeps the full vector.
        instruction: the task for queries (``Instruct: {instruction}\\nQuery:{query}``); ``None``/``""`` for none.
        max_length: tokens per input, ``<|endoftext|>`` included; longer inputs are cut (and logged).
        batch_size: inputs per forward pass.
        max_batch_tokens: padded tokens per forward pass; ``None`` picks one for the device.
        show_progress: a progress bar; ``None`` shows one only for long calls.
        base_url: a vLLM server (``http://127.0.0.1:8000``) serving ``model`` instead of local weights: the
            text is formatted, tokenized (by the server's tokenizer) and cut at ``max_length`` here, exactly as
            locally, and the server gets token ids; ``device``, ``dtype`` and batching are the server's.
            Nothing is sent before the first call; :meth:`close` (or ``with``) closes the connections.
        api_key: the server's ``--api-key``, if it has one.
        timeout: seconds per request to the server.

    Example:
        >>> emb = Qwen3Embedder("Qwen/Qwen3-Embedding-0.6B", dimensions=256)
        >>> q = emb.embed_queries(["What is the capital of China?"])
        >>> d = emb.embed_documents(["The capital of China is Beijing."])
        >>> float(q @ d.T)  # cosine similarity: vectors are unit length
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_EMBEDDING_MODEL,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        dimensions: int | None = None,
        instruction: str | None = DEFAULT_INSTRUCTION,
        max_length: int = 8192,
        batch_size: int = 32,
        max_batch_tokens: int | None = None,
        show_progress: bool | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = 60.0,
    ) -> None:
        self.max_length = check_positive(max_length, "max_length")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 (one text token and <|endoftext|>), got {max_length}")
        self.batch_size = check_positive(batch_size, "batch_size")
        self.max_batch_tokens = check_positive(max_batch_tokens, "max_batch_tokens", allow_none=True)
        self.instruction = check_instruction(instruction)
        self.show_progress = show_progress
        self._remote, self._loaded = open_model(
            model, kind="embedding", device=device, dtype=dtype, base_url=base_url, api_key=api_key, timeout=timeout,
            batch_size=self.batch_size,
        )  # fmt: skip
        self._endoftext: int | None = None
        if self._remote is not None:
            self.model_name, self.device, self.dtype, self.quantization = self._remote.model, None, None, None
            self._tokens: TokenSource = self._remote
            # The server's hidden size is asked on first use, not here: construction sends nothing.
            self._dimensions = check_dimensions(dimensions, model=self.model_name)
            return
        self.model_name = self._loaded.name
        self.device = self._loaded.device
        self.dtype = self._loaded.dtype
        self.quantization = self._loaded.quantization  # "int8", or None
        self._tokens = LocalTokens(self._loaded)
        self._dimensions = self._check_dimensions(dimensions)
        self._endoftext = self._find_endoftext_id()  # a tokenizer without it is refused here, not on first use

    # -- public API ----------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        """The model's Hugging Face tokenizer (for counting tokens the way this embedder does, e.g. to chunk)."""
        if self._remote is not None:
            raise NotImplementedError("this embedder talks to a server and holds no local tokenizer")
        return self._loaded.tokenizer

    @property
    def hidden_size(self) -> int:
        """The model's full vector size (the largest ``dimensions``)."""
        if self._remote is not None:
            return self._remote.hidden_size
        return self._loaded.model.config.hidden_size

    @property
    def _endoftext_id(self) -> int:
        """The id of ``<|endoftext|>`` (151643 for Qwen3); a server is asked on first use."""
        if self._endoftext is None:
            self._endoftext = self._find_endoftext_id()
        return self._endoftext

    def _find_endoftext_id(self) -> int:
        token_id = self._tokens.token_id(ENDOFTEXT)
        if token_id is None:
            raise ValueError(f"the tokenizer of {self.model_name!r} has no {ENDOFTEXT} token: not a Qwen3 tokenizer")
        return token_id

    @property
    def dimension(self) -> int:
        """The size of the vectors returned when a call does not pass ``dimensions``."""
        return self._dimensions or self.hidden_size

    @property
    def dimensions(self) -> int | None:
        """The default Matryoshka size (``None``: the full hidden size)."""
        return self._dimensions

    def embed_queries(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = _DEFAULT,
        dimensions: int | None = None,  # type: ignore[assignment]
    ) -> np.ndarray:
        """Unit vectors for search queries, each formatted ``Instruct: {instruction}\\nQuery:{text}``.

        ``instruction`` overrides the instance's task for this call; ``None`` or ``""`` means none.
        Returns float32, shape (len(texts), dimensions).
        """
        instruction = self.instruction if instruction is _DEFAULT else check_instruction(instruction)
        return self.embed(texts, instruction=instruction, dimensions=dimensions)

    def embed_documents(self, texts: Sequence[str], *, dimensions: int | None = None) -> np.ndarray:
        """Unit vectors for documents (no instruction, as in the card). float32, shape (len(texts), dimensions)."""
        return self.embed(texts, instruction=None, dimensions=dimensions, name="texts")

    def embed(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        dimensions: int | None = None,
        name: str = "texts",
    ) -> np.ndarray:
        """Unit vectors with ``instruction`` applied to every text (symmetric tasks put it on both sides)."""
        texts = check_texts(texts, name)
        # The default is checked again: a served model's hidden size is only known from its first answer.
        dims = self._check_dimensions(self._dimensions if dimensions is None else dimensions) or self.hidden_size
        if not texts:
            return np.zeros((0, dims), dtype=np.float32)
        instruction = check_instruction(instruction)
        rows = self.tokenize(texts, instruction=instruction)
        if self._remote is not None:
            return self._remote.embed_token_ids(rows, dimensions=None if dims == self.hidden_size else dims)
        prefix_ids, prefix = self._instruction_prefix(instruction)
        shared = [
            bool(prefix_ids) and row[: len(prefix_ids)] == prefix_ids and len(row) > len(prefix_ids) for row in rows
        ]

        def forward(batch: list[int]) -> torch.Tensor:
            with torch.inference_mode():
                if all(shared[i] for i in batch):
                    states = last_token_states(
                        self._loaded.model,
                        [rows[i][len(prefix_ids) :] for i in batch],
                        pad_id=self._endoftext_id,
                        device=self.device,
                        prefix=prefix,
                    )
                else:
                    states = last_token_states(
                        self._loaded.model,
                        [rows[i] for i in batch],
                        pad_id=self._endoftext_id,
                        device=self.device,
                    )
                bad = non_finite_rows(states)
                if bad:  # float16 overflow: a NaN must never reach an index or a ranking
                    indices = sorted(batch[i] for i in bad)
                    raise non_finite_error(
                        indices, len(rows), noun="input", model=self.model_name, dtype=self.dtype, device=self.device
                    )
                return _normalise(states.float()[:, :dims]).cpu()

        lengths = [len(r) for r in rows]
        vectors = run_batches(
            forward,
            lengths,
            batch_size=self.batch_size,
            max_batch_tokens=token_budget(self.max_batch_tokens, self.device),
            device=self.device,
            show_progress=self.show_progress,
            desc="Embedding",
        )
        return torch.stack(vectors).numpy()

    def tokenize(self, texts: Sequence[str], *, instruction: str | None = None) -> list[list[int]]:
        """Token ids as the model sees them: the formatted text cut to ``max_length - 1`` tokens, then exactly one
        ``<|endoftext|>`` -- whichever tokenizer generation is installed (today's appends it, the first did not).

        Control-token strings in the text or the instruction (``<|im_end|>``, ...) are tokenized as the ordinary
        characters they are written with. With ``base_url``, the server's tokenizer does the tokenizing.
        """
        formatted = _formatted(texts, instruction)
        return embedding_rows(self._tokens, formatted, max_length=self.max_length, endoftext_id=self._endoftext_id)

    def count_tokens(self, texts: Sequence[str], *, instruction: str | None = None) -> list[int]:
        """Tokens each formatted text takes before any cut to ``max_length``, ``<|endoftext|>`` not counted
        (``qwen3-rag search`` refuses a question that would be cut)."""
        return [len(ids) for ids in self._tokens.encode(_formatted(texts, instruction))]

    def close(self) -> None:
        """Close the connections to the server (``base_url``); local weights stay shared with other users."""
        if self._remote is not None:
            self._remote.close()

    def __repr__(self) -> str:
        where = (
            f"base_url={self._remote.base_url!r}"
            if self._remote
            else f"device={str(self.device)!r}, dtype={self._loaded.quantization or self.dtype}"
        )
        return (
            f"{type(self).__name__}(model={self.model_name!r}, {where}, "
            f"dimensions={self._dimensions}, max_length={self.max_length})"
        )

    # -- internals -----------------------------------------------------------------------------------

    def _check_dimensions(self, dimensions: int | None) -> int | None:
        return check_dimensions(dimensions, hidden_size=self.hidden_size, model=self.model_name)

    def _instruction_prefix(self, instruction: str | None) -> tuple[list[int], PrefixCache | None]:
        """The key/value cache of ``Instruct: {instruction}\\nQuery``, computed once per instruction.

        The prefix stops before ``:`` because the tokenizer merges that colon with the query's first word;
        a query whose ids do not start with these ids is run in full instead.
        """
        if not instruction:
            return [], None
        with self._loaded.lock:
            hit = self._loaded.cache.get(("instruction", instruction))
            if hit is not None:
                return hit
            ids = self._tokens.encode([format_query("", instruction)])[0][:-1]
            with torch.inference_mode():
                entry = (ids, run_prefix(self._loaded.model, ids, self.device))
            if len(self._loaded.cache) >= _MAX_CACHED_PREFIXES:
                self._loaded.cache.pop(next(iter(self._loaded.cache)))
            self._loaded.cache[("instruction", instruction)] = entry
            return entry


_MAX_CACHED_PREFIXES = 32


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, p=2, dim=-1)


def _formatted(texts: Sequence[str], instruction: str | None) -> list[str]:
    """The checked texts as the model reads them: ``Instruct: ...\nQuery:`` before each with an instruction."""
    return [format_query(t, check_instruction(instruction)) for t in check_texts(texts)]
