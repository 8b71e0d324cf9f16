"""LangChain adapters for Qwen3-Embedding and Qwen3-Reranker, run locally through ``qwen3_rag``."""

from langchain_qwen3.embeddings import Qwen3Embeddings
from langchain_qwen3.rerank import Qwen3Rerank

__all__ = ["Qwen3Embeddings", "Qwen3Rerank"]
