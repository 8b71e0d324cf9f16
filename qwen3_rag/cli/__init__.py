"""The ``qwen3-rag`` command-line application: a local RAG built on the core (``Qwen3Embedder``, ``Qwen3Reranker``).

One module per job -- ``options`` (the parser and environment variables), ``loaders`` (files to text),
``chunking`` (text to chunks), ``store`` (the Chroma database), ``fingerprint`` (which embedder matches an index),
``indexing``, ``search`` and ``answer`` (the three commands), ``console`` (what is printed) and ``main`` (dispatch and
error reporting). The core never imports this package.
"""

from qwen3_rag.cli.main import main

__all__ = ["main"]
