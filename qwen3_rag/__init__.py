"""qwen3-rag: Qwen3-Embedding and Qwen3-Reranker, faithful to the model cards and fast, on your own hardware.

The shared core: torch + transformers only. The LangChain adapters live in ``langchain_qwen3``, the
LlamaIndex adapters in ``llama_index_qwen3``, the Chroma embedding function in ``qwen3_rag.chroma``.
"""

from qwen3_rag._loading import ModelLoadError
from qwen3_rag._validation import NonFiniteError
from qwen3_rag.embedder import Qwen3Embedder
from qwen3_rag.prompts import (
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_INSTRUCTION,
    DEFAULT_RERANKER_MODEL,
    STS_INSTRUCTION,
    format_query,
)
from qwen3_rag.reranker import Qwen3Reranker, RerankResult

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_INSTRUCTION",
    "DEFAULT_RERANKER_MODEL",
    "STS_INSTRUCTION",
    "ModelLoadError",
    "NonFiniteError",
    "Qwen3Embedder",
    "Qwen3Reranker",
    "RerankResult",
    "__version__",
    "format_query",
]
