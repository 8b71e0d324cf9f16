"""Every cookbook notebook runs top to bottom in a fresh ``python3`` kernel against the tiny checkpoints, selected
through the QWEN3_RAG_* variables a user would set, offline; and the notebooks are stored without outputs."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

COOKBOOK = Path(__file__).resolve().parents[2] / "cookbook"
NOTEBOOKS = sorted(COOKBOOK.glob("*.ipynb"))
EXPECTED = [
    "cli_documents.ipynb",
    "instructions.ipynb",
    "langchain_rag.ipynb",
    "llama_index_rag.ipynb",
    "matryoshka_dimensions.ipynb",
]


def run_notebook(path: Path, sockets: Path) -> nbformat.NotebookNode:
    """Execute ``path`` in its own kernel, in cookbook/, over IPC sockets under ``sockets`` (no TCP port opens)."""
    notebook = nbformat.read(path, as_version=4)
    kernel = KernelManager(kernel_name="python3", transport="ipc", ip=str(sockets / "kernel"))
    client = NotebookClient(notebook, km=kernel, timeout=600, resources={"metadata": {"path": str(COOKBOOK)}})
    client.execute()
    return notebook


def text_output(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def test_the_cookbook_holds_its_notebooks():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_are_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip the outputs"
    assert notebook.metadata["kernelspec"]["name"] == "python3"


@pytest.fixture
def sockets(monkeypatch, tiny_models_env):
    """Set the tiny-model variables for the kernel; yield a short folder for its IPC socket files."""
    for name, value in tiny_models_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders the plot
    folder = Path(tempfile.mkdtemp(prefix="qwen3-nb-"))  # short: unix socket paths are limited to ~100 bytes
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


MARKERS = {
    "cli_documents": [
        "solar_system.pdf: page 2 of 3 without a text layer",
        "solar_system.pdf p. ",
        "page None",  # the Word and Markdown files have no pages
        "moon_phases.md (1 chunks): no longer in the folder",
    ],
    "langchain_rag": ["25 documents", "[1] ", "relevant document ranked first: retriever"],
    "llama_index_rag": ["25 documents", "[1] ", "relevant document ranked first"],
    "matryoshka_dimensions": ["largest difference, by hand vs dimensions=32", "exact search over the", "GiB per 1M"],
    "instructions": ["Instruct: Given a shopping query", "shopping queries", "code:"],
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_on_tiny_models(path, sockets):
    executed = run_notebook(path, sockets)
    text = text_output(executed)
    for marker in MARKERS[path.stem]:
        assert marker in text, f"{path.name}: expected {marker!r} in the outputs"
    if path.stem == "matryoshka_dimensions":
        images = [o for c in executed.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(images) == 1, "the size/agreement plot"
