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

CONTROL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
    "</tool_response>", "<think>", "</think>",
)  # fmt: skip
"""Qwen3's added tokens in id order (151643..151668). In the prompts' own strings (``RERANK_PREFIX``,
``RERANK_SUFFIX``) they are control tokens; in user text (queries, documents, instructions) they are
tokenized as the ordinary characters they are written with, so text cannot forge the prompt's structure."""


def format_query(query: str, instruction: str | None) -> str:
    """``Instruct: {instruction}\\nQuery:{query}`` -- no space after ``Query:``; no instruction -> the query as is."""
    return f"Instruct: {instruction}\nQuery:{query}" if instruction else query


def format_rerank_body(query: str, document: str, instruction: str) -> str:
    """The user turn of the reranker prompt, tokenized as ONE string (pieces would tokenize differently)."""
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
