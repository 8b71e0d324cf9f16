"""LangChain adapters for Qwen3-Embedding and Qwen3-Reranker, run locally through ``qwen3_rag``.

Installed by the ``qwen3-rag`` distribution (``pip install "qwen3-rag[langchain]"``). PyPI also has an unrelated
distribution named ``langchain-qwen3`` that ships an import package of the same name; with both installed, the
one installed last overwrites the other's files, so importing this package warns when it finds the other one.
"""

import warnings
from importlib import metadata

from langchain_qwen3.embeddings import Qwen3Embeddings
from langchain_qwen3.rerank import Qwen3Rerank

__all__ = ["Qwen3Embeddings", "Qwen3Rerank"]

_OTHER_DISTRIBUTION = "langchain-qwen3"
"""The unrelated PyPI distribution that also installs an import package called ``langchain_qwen3``."""


def _warn_if_the_other_distribution_is_installed() -> None:
    try:
        other = metadata.distribution(_OTHER_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return
    files = [str(path) for path in (other.files or [])]
    top_level = (other.read_text("top_level.txt") or "").split()
    if "langchain_qwen3" not in top_level and not any(path.startswith("langchain_qwen3/") for path in files):
        return
    warnings.warn(
        f"the unrelated distribution {_OTHER_DISTRIBUTION!r} {other.version} is installed next to qwen3-rag and ships "
        "the same import package, langchain_qwen3: whichever was installed last has overwritten the other's files. "
        f"Run `pip uninstall {_OTHER_DISTRIBUTION}` and then `pip install --force-reinstall qwen3-rag`.",
        UserWarning,
        stacklevel=2,
    )


_warn_if_the_other_distribution_is_installed()
