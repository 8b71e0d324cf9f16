"""The README's quickstart snippets run (on the tiny checkpoints), its two commands exist, and ``make demo`` calls
the CLI in a shape the CLI accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from qwen3_rag.cli.options import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, flags=re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_the_sections_the_project_promises():
    for title in ["Two commands", "Models", "Instructions", "Matryoshka dimensions", "LangChain", "LlamaIndex",
                  "Chroma", "GPU", "Offline use", "Cookbook", "Benchmarks", "Scale-out (vLLM, Ray)"]:  # fmt: skip
        section(title)
    commands = section("Two commands")
    assert "make demo" in commands and "make test" in commands
    assert "benchmarks/RESULTS.md" in section("Benchmarks")


@pytest.mark.parametrize("title", ["LangChain", "LlamaIndex", "Chroma"])
def test_quickstart_snippets_run(title, tiny_embedding_path, tiny_reranker_path, tmp_path, monkeypatch):
    blocks = python_blocks(section(title))
    assert blocks
    monkeypatch.chdir(tmp_path)  # the Chroma snippet writes ./chroma-db
    for code in blocks:
        code = code.replace('"Qwen/Qwen3-Embedding-0.6B"', repr(str(tiny_embedding_path)))
        code = code.replace('"Qwen/Qwen3-Reranker-0.6B"', repr(str(tiny_reranker_path)))
        exec(compile(code, f"README.md ({title})", "exec"), {"__name__": "readme"})


def demo_commands() -> list[list[str]]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert recipe, "the Makefile has a demo target"
    question = re.search(r"^QUESTION \?= (.*)$", makefile, flags=re.M).group(1)
    lines = recipe.group(1).replace("$(QUESTION)", question).replace("$(VENV)", ".venv").replace("$(BIN)/", "")
    return [shlex.split(line) for line in lines.strip().splitlines()]


def test_make_demo_indexes_the_sample_corpus_and_asks_with_the_cli():
    commands = demo_commands()
    assert [c[:2] for c in commands] == [["qwen3-rag", "index"], ["qwen3-rag", "ask"]]
    parser = build_parser()
    index, ask = (parser.parse_args(c[1:]) for c in commands)
    assert index.paths == ["cookbook/data"]
    assert index.db == ask.db
    assert ask.query == "How does Matryoshka truncation change an embedding?"


def test_the_cli_section_names_only_suffixes_the_cli_reads_and_every_kind_it_reads():
    from qwen3_rag.cli.loaders import SUPPORTED_SUFFIXES

    cli = section("The command line: a local RAG in three commands")
    named = set(re.findall(r"`(\.[a-z0-9]+)`", cli)) | set(re.findall(r"`\.[a-z]+`/`(\.[a-z]+)`", cli))
    assert named and named <= SUPPORTED_SUFFIXES, named - SUPPORTED_SUFFIXES
    assert {".pdf", ".docx", ".html", ".md", ".py"} <= named
    for promise in ["--no-prune", "mirrors the folders given", "One `index` run per database at a time", "p. 3"]:
        assert promise in cli


def test_index_help_describes_formats_provenance_pruning_and_locking(capsys):
    from qwen3_rag.cli import main

    assert main(["index", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for promise in [".pdf", ".docx", ".py", 'pip install "qwen3-rag[documents]"', "pages (PDF) or lines",
                    "--no-prune", "a second waits for the first", "search and ask keep working"]:  # fmt: skip
        assert promise in text, promise
