"""The public names of langchain_qwen3: adding or removing one must be a deliberate change."""

import langchain_qwen3
from langchain_qwen3.embeddings import Qwen3Embeddings
from langchain_qwen3.rerank import Qwen3Rerank


def test_all_lists_exactly_the_public_classes():
    assert langchain_qwen3.__all__ == ["Qwen3Embeddings", "Qwen3Rerank"]


def test_public_names_are_the_module_classes():
    assert langchain_qwen3.Qwen3Embeddings is Qwen3Embeddings
    assert langchain_qwen3.Qwen3Rerank is Qwen3Rerank
    namespace: dict = {}
    exec("from langchain_qwen3 import *", namespace)
    assert {name for name in namespace if not name.startswith("__")} == set(langchain_qwen3.__all__)
