"""langchain-tests' standard suites for Qwen3Embeddings, run against the session's tiny checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from langchain_qwen3 import Qwen3Embeddings


class _TinyCheckpoint:
    """Points the suites' ``embedding_model_params`` at the tiny model built by the session fixture."""

    _model_path: Path

    @pytest.fixture(autouse=True)
    def _use_tiny_checkpoint(self, tiny_embedding_path: Path) -> None:
        self._model_path = tiny_embedding_path

    @property
    def embeddings_class(self) -> type[Qwen3Embeddings]:
        return Qwen3Embeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": str(self._model_path), "device": "cpu"}


class TestQwen3EmbeddingsStandardUnit(_TinyCheckpoint, EmbeddingsUnitTests):
    pass


class TestQwen3EmbeddingsStandardIntegration(_TinyCheckpoint, EmbeddingsIntegrationTests):
    pass
