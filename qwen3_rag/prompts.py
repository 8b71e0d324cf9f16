"""The exact prompt strings of the Qwen3-Embedding and Qwen3-Reranker model cards, in one place.

Every adapter, the CLI and the Chroma embedding function format text through these functions, so a
query instruction cannot be dropped or reformatted on the way to the model.
"""

from __future__ import annotations

DEFAULT_EMBEDDING_MODEL = "Qwen/Qwen3-Embedding-0.6B"
DEFAULT_RERANKER_MODEL = "Qwen/Qwen3-Reranker-0.6B"

DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
"""The task the models were trained with for web-search retrieval; the default for queries and reranking."""

STS_INSTRUCTION = "Retrieve semantically similar text"
"""Qwen's instruction for symmetric tasks (STS, clustering): use it on both sides."""

RERANK_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
RERANK_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"

ENDOFTEXT = "<|endoftext|>"
"""The token every embedding input must end with (id 151643); NOT ``tokenizer.eos_token``."""


def format_query(query: str, instruction: str | None) -> str:
    """``Instruct: {instruction}\\nQuery:{query}`` -- no space after ``Query:``; no instruction -> the query as is."""
    return f"Instruct: {instruction}\nQuery:{query}" if instruction else query


def format_rerank_body(query: str, document: str, instruction: str) -> str:
    """The user turn of the reranker prompt, tokenized as ONE string (pieces would tokenize differently)."""
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
