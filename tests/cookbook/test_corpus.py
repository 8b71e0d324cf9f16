"""What ``qwen3-rag index`` reads and how it names it: file discovery, text extraction, the ids (the chunker has
tests/cookbook/test_chunking.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen3_rag import testing
from qwen3_rag.cli.chunking import chunking_version
from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.indexing import chunk_id, file_version
from qwen3_rag.cli.loaders import SkippedFile, find_files, html_to_text, read_text, title_of

DATA = Path(__file__).resolve().parents[2] / "cookbook" / "data"


def test_folders_yield_supported_files_sorted_without_hidden_ones(tmp_path):
    for name in ["b.md", "a.txt", "sub/c.rst", "page.html", "data.json", ".hidden.md", ".git/x.md", "img.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    found = [p.relative_to(tmp_path.resolve()).as_posix() for p in find_files([tmp_path])]
    assert found == ["a.txt", "b.md", "page.html", "sub/c.rst"]


def test_a_file_named_explicitly_is_read_whatever_its_suffix_and_listed_once(tmp_path):
    notes = tmp_path / "NOTES"
    notes.write_text("plain text")
    (tmp_path / "a.md").write_text("x")
    assert find_files([notes, tmp_path / "a.md", tmp_path]) == [notes.resolve(), (tmp_path / "a.md").resolve()]


def test_the_sample_corpus_is_found_without_its_questions_file():
    names = {p.name for p in find_files([DATA])}
    assert len(names) >= 15
    assert "questions.json" not in names
    assert {Path(n).suffix for n in names} == {".md", ".txt"}


def test_missing_paths_and_empty_folders_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file or folder"):
        find_files([tmp_path / "missing"])
    with pytest.raises(UsageError, match="holds no files to index"):
        find_files([tmp_path])


def test_binary_non_utf8_and_empty_files_are_skipped_with_a_reason(tmp_path):
    cases = {"bin.txt": b"abc\x00def", "latin.txt": "d\xe9j\xe0".encode("latin-1"), "blank.md": b" \n\n "}
    reasons = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SkippedFile) as info:
            read_text(tmp_path / name)
        reasons[name] = str(info.value)
    assert reasons == {"bin.txt": "binary file", "latin.txt": "not UTF-8 text (byte 1)", "blank.md": "empty file"}


def test_text_is_decoded_with_bom_and_newlines_normalised(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfline one\r\nline two\r")
    assert read_text(tmp_path / "a.txt") == "line one\nline two\n"


def test_html_keeps_visible_text_in_paragraphs():
    html = "<html><head><title>T</title><style>p{}</style></head><body><h1>Head</h1><p>One &amp; two.</p>"
    html += "<script>alert(1)</script><p>Three</p></body></html>"
    assert html_to_text(html) == "Head\n\nOne & two.\n\nThree"


def test_title_is_the_first_heading_or_line():
    assert title_of("\n# Solar system\n\ntext", Path("x.md")) == "Solar system"
    assert title_of("Plain first line\nmore", Path("x.txt")) == "Plain first line"


def test_ids_depend_on_path_content_chunking_tokenizer_and_position(qwen_tokenizer):
    chunking = chunking_version(qwen_tokenizer, chunk_size=512, overlap=64)
    version = file_version("text", chunking=chunking)
    assert version == file_version("text", chunking=chunking_version(qwen_tokenizer, chunk_size=512, overlap=64))
    assert version != file_version("text!", chunking=chunking)
    others = [
        chunking_version(qwen_tokenizer, chunk_size=256, overlap=64),
        chunking_version(qwen_tokenizer, chunk_size=512, overlap=0),
        chunking_version(testing.build_tokenizer("tiny", append_endoftext=True), chunk_size=512, overlap=64),
    ]
    assert len({version, *(file_version("text", chunking=other) for other in others)}) == 4
    ids = {chunk_id("/a.md", version, 0), chunk_id("/b.md", version, 0), chunk_id("/a.md", version, 1)}
    assert len(ids) == 3
    assert chunk_id("/a.md", version, 0) == chunk_id("/a.md", version, 0)
