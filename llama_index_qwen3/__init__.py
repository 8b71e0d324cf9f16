"""LlamaIndex adapters for Qwen3-Embedding and Qwen3-Reranker, run locally through the ``qwen3_rag`` core.

.. code-block:: python

    from llama_index_qwen3 import Qwen3Embedding, Qwen3Rerank
"""

from llama_index_qwen3.embeddings import DEFAULT_EMBED_BATCH_SIZE, Qwen3Embedding
from llama_index_qwen3.rerank import RETRIEVAL_SCORE_KEY, Qwen3Rerank

__all__ = [
    "DEFAULT_EMBED_BATCH_SIZE",
    "RETRIEVAL_SCORE_KEY",
    "Qwen3Embedding",
    "Qwen3Rerank",
]
