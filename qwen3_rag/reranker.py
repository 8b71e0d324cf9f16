"""Qwen3-Reranker, faithful to the model card: the card's chat prompt, document-end truncation, and
P(yes) from the ``yes``/``no`` logits at the last position -- computed from those two rows of the output
head only, with the query's shared prefix run once per call."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from qwen3_rag._batching import run_batches, token_budget
from qwen3_rag._forward import last_token_states, run_prefix
from qwen3_rag._loading import Closing, open_model
from qwen3_rag._tokenize import LocalTokens, TokenSource, check_rerank_max_length, rerank_rows
from qwen3_rag._validation import (
    check_instruction,
    check_positive,
    check_text,
    check_texts,
    non_finite_error,
    non_finite_rows,
)
from qwen3_rag.prompts import DEFAULT_INSTRUCTION, DEFAULT_RERANKER_MODEL

logger = logging.getLogger("qwen3_rag")


@dataclass(frozen=True, order=False)
class RerankResult:
    """One reranked document: its position in the input list and P(yes) in [0, 1]."""

    index: int
    score: float


class Qwen3Reranker(Closing):
    """Score (query, document) relevance with a local Qwen3-Reranker model.

    Args:
        model: Hub id (``Qwen/Qwen3-Reranker-0.6B``, ``-4B``, ``-8B``) or a local folder.
        device: ``None`` picks cuda > mps > cpu.
        dtype: ``None`` picks bfloat16 on CUDA and on CPUs with native bf16 (AMX / AVX512-BF16), float32 on other
            CPUs and MPS; ``"int8"`` is the CPU int8 mode (float32 compute, int8 linear layers; refused on GPUs);
            float16 only when asked. ``.dtype`` is the compute dtype, ``.quantization`` ``"int8"`` or ``None``.
        instruction: the ``<Instruct>:`` task; ``None`` is the card's default.
        max_length: tokens per pair, prompt included; a longer document loses its end (logged).
        batch_size: pairs per forward pass.
        max_batch_tokens: padded tokens per forward pass; ``None`` picks one for the device.
        reuse_prefix: run the tokens every pair shares (system prompt, instruction, query) once per call.
        show_progress: a progress bar; ``None`` shows one only for long calls.
        base_url: a vLLM server (``http://127.0.0.1:8001``) serving ``model`` as the card's classifier (see
            docs/vllm.md): the prompt is built, tokenized (by the server's tokenizer) and cut at ``max_length``
            here and sent as token ids, so scores equal the local model's. Nothing is sent before the first
            call; :meth:`close` (or ``with``) closes the connections.
        api_key: the server's ``--api-key``, if it has one.
        timeout: seconds per request to the server.

    Example:
        >>> rr = Qwen3Reranker("Qwen/Qwen3-Reranker-0.6B")
        >>> rr.rerank("capital of China?", ["Beijing is the capital.", "Gravity pulls."], top_n=1)
        [RerankResult(index=0, score=0.99...)]
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_RERANKER_MODEL,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        instruction: str | None = DEFAULT_INSTRUCTION,
        max_length: int = 8192,
        batch_size: int = 16,
        max_batch_tokens: int | None = None,
        reuse_prefix: bool = True,
        show_progress: bool | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = 60.0,
    ) -> None:
        self.max_length = check_positive(max_length, "max_length")
        self.batch_size = check_positive(batch_size, "batch_size")
        self.max_batch_tokens = check_positive(max_batch_tokens, "max_batch_tokens", allow_none=True)
        self.instruction = check_instruction(instruction) or DEFAULT_INSTRUCTION
        self.reuse_prefix = reuse_prefix
        self.show_progress = show_progress
        self._remote, self._loaded = open_model(
            model, kind="reranker", device=device, dtype=dtype, base_url=base_url, api_key=api_key, timeout=timeout,
            batch_size=self.batch_size,
        )  # fmt: skip
        if self._remote is not None:
            self.model_name, self.device, self.dtype, self.quantization = self._remote.model, None, None, None
            self._tokens: TokenSource = self._remote  # the prompt's length is checked on first use
            return
        self.model_name = self._loaded.name
        self.device = self._loaded.device
        self.dtype = self._loaded.dtype
        self.quantization = self._loaded.quantization  # "int8", or None
        self._tokens = LocalTokens(self._loaded)
        check_rerank_max_length(self.max_length, self._tokens)
        tokenizer = self._loaded.tokenizer
        yes_no = [_single_token_id(tokenizer, word, self.model_name) for word in ("no", "yes")]
        model = self._loaded.model
        self._decoder = model.get_decoder()
        # Only these two rows of the 151,669-row head are ever read: [no, yes].
        self._head = model.get_output_embeddings().weight[yes_no].detach().float()
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    # -- public API ----------------------------------------------------------------------------------

    def score(self, query: str, documents: Sequence[str], *, instruction: str | None = None) -> list[float]:
        """P(yes) in [0, 1] for each document, in input order. ``instruction=None`` uses the instance's."""
        query = check_text(query, "query")
        documents = check_texts(documents, "documents")
        if not documents:
            return []
        instruction = check_instruction(instruction) or self.instruction
        rows = self.tokenize(query, documents, instruction=instruction)
        if self._remote is not None:
            return self._remote.score_token_ids(rows)
        shared = _common_prefix_length(rows) if self.reuse_prefix else 0
        prefix = None
        if shared:
            with torch.inference_mode():
                prefix = run_prefix(self._decoder, rows[0][:shared], self.device)

        def forward(batch: list[int]) -> list[float]:
            with torch.inference_mode():
                states = last_token_states(
                    self._decoder,
                    [rows[i][shared:] for i in batch],
                    pad_id=self._pad_id,
                    device=self.device,
                    prefix=prefix,
                )
                logits = states.float() @ self._head.T
                bad = non_finite_rows(logits)
                if bad:  # float16 overflow: a NaN must never reach the sort in rerank()
                    indices = sorted(batch[i] for i in bad)
                    raise non_finite_error(
                        indices, len(rows), noun="document", model=self.model_name, dtype=self.dtype, device=self.device
                    )
                return torch.log_softmax(logits, dim=-1)[:, 1].exp().tolist()

        return run_batches(
            forward,
            [len(r) for r in rows],
            batch_size=self.batch_size,
            max_batch_tokens=token_budget(self.max_batch_tokens, self.device),
            device=self.device,
            show_progress=self.show_progress,
            desc="Reranking",
        )

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
    ) -> list[RerankResult]:
        """Documents best first as ``RerankResult(index, score)``, at most ``top_n`` of them."""
        top_n = check_positive(top_n, "top_n", allow_none=True)
        scores = self.score(query, documents, instruction=instruction)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep input order
        return [RerankResult(i, scores[i]) for i in order[:top_n]]

    def tokenize(self, query: str, documents: Sequence[str], *, instruction: str | None = None) -> list[list[int]]:
        """Token ids per pair, exactly as the card builds them: ``prefix + body + suffix``, the body one
        string cut at its end to ``max_length - len(prefix) - len(suffix)`` tokens.

        One deliberate difference: control-token strings in the query, the documents or the instruction
        (``<|im_end|>``, ``<|im_start|>``, ...) are tokenized as the ordinary characters they are written with,
        so a document cannot close the user turn and forge the answer. Only the prompt's own control tokens
        are control tokens. With ``base_url``, the server's tokenizer does the tokenizing.
        """
        query = check_text(query, "query")
        documents = check_texts(documents, "documents")
        instruction = check_instruction(instruction) or self.instruction
        return rerank_rows(self._tokens, query, documents, instruction=instruction, max_length=self.max_length)

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
        return f"{type(self).__name__}(model={self.model_name!r}, {where}, max_length={self.max_length})"


def _single_token_id(tokenizer, word: str, model_name: str) -> int:
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{word!r} is not a single token in the tokenizer of {model_name!r}: not a Qwen3 reranker")
    return ids[0]


def _common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving at least one token per row to run."""
    shortest = min(len(r) for r in rows)
    first = rows[0]
    n = 0
    while n < shortest - 1 and all(r[n] == first[n] for r in rows):
        n += 1
    return n
