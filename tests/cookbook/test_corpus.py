"""What ``qwen3-rag index`` reads and how it names it: text extraction, the ids (the chunker has
tests/cookbook/test_chunking.py; file discovery test_files.py; PDF, Word and other formats test_loaders.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen3_rag import testing
from qwen3_rag.cli.chunking import chunking_version
from qwen3_rag.cli.indexing import chunk_id, file_version
from qwen3_rag.cli.loaders import SkippedFile, html_to_text, read_document, title_of

DATA = Path(__file__).resolve().parents[2] / "cookbook" / "data"


def test_binary_non_utf8_and_empty_files_are_skipped_with_a_reason(tmp_path):
    cases = {"bin.txt": b"abc\x00def", "latin.txt": "d\xe9j\xe0".encode("latin-1"), "blank.md": b" \n\n "}
    reasons = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SkippedFile) as info:
            read_document(tmp_path / name)
        reasons[name] = str(info.value)
    assert reasons == {"bin.txt": "binary file", "latin.txt": "not UTF-8 text (byte 1)", "blank.md": "empty file"}


def test_text_is_decoded_with_bom_and_newlines_normalised(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfline one\r\nline two\r")
    assert read_document(tmp_path / "a.txt").text == "line one\nline two\n"


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
