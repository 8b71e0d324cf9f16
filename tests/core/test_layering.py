"""The core stands alone: importing it loads neither the frameworks nor the command-line application."""

from __future__ import annotations

import subprocess
import sys

CORE_MODULES = ["qwen3_rag", "qwen3_rag.embedder", "qwen3_rag.reranker", "qwen3_rag.prompts", "qwen3_rag.testing"]
FORBIDDEN = ["qwen3_rag.cli", "langchain_core", "langchain", "llama_index", "chromadb", "ray"]


def test_the_core_never_imports_the_application_or_the_frameworks():
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in CORE_MODULES)
        + f"top = {FORBIDDEN!r}\n"
        + "loaded = sorted(m for m in sys.modules if m.split('.')[0] in top or m.startswith('qwen3_rag.cli'))\n"
        + "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_the_embedder_exposes_the_tokenizer_it_counts_with(tiny_embedding_path):
    from qwen3_rag import Qwen3Embedder

    embedder = Qwen3Embedder(tiny_embedding_path)
    ids = embedder.tokenizer("hello world", add_special_tokens=False)["input_ids"]
    assert embedder.tokenize(["hello world"], instruction=None)[0][:-1] == ids
