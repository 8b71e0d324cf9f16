"""The public names of langchain_qwen3: adding or removing one must be a deliberate change; and the unrelated
PyPI distribution that ships an import package of the same name is detected."""

import importlib
import warnings

import pytest

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


def _install_fake_distribution(root, name: str, files: list[str]) -> None:
    """A distribution's installed metadata, as pip writes it (``*.dist-info`` with METADATA and RECORD)."""
    info = root / f"{name.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (info / "RECORD").write_text("".join(f"{path},,\n" for path in files))


def test_the_unrelated_langchain_qwen3_distribution_is_named_in_a_warning(tmp_path, monkeypatch):
    _install_fake_distribution(tmp_path, "langchain-qwen3", ["langchain_qwen3/__init__.py", "langchain_qwen3/x.py"])
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    expected = r"unrelated distribution 'langchain-qwen3' 0.0.1 .* `pip uninstall langchain-qwen3`"
    with pytest.warns(UserWarning, match=expected):
        importlib.reload(langchain_qwen3)


def test_no_warning_without_it_or_when_it_ships_another_package(tmp_path, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(langchain_qwen3)
        _install_fake_distribution(tmp_path, "langchain-qwen3", ["something_else/__init__.py"])
        monkeypatch.syspath_prepend(str(tmp_path))
        importlib.invalidate_caches()
        importlib.reload(langchain_qwen3)
