"""What ``qwen3-rag index`` reads and how it cuts it: text extraction, the chunker, the ids (file discovery:
test_files.py; PDF, Word and other formats: test_loaders.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from qwen3_rag.cli.chunking import split_text
from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.indexing import chunk_id, file_version
from qwen3_rag.cli.loaders import SkippedFile, html_to_text, read_document, title_of

DATA = Path(__file__).resolve().parents[2] / "cookbook" / "data"


def words(text: str) -> int:
    return len(text.split())


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


def test_chunks_respect_the_size_end_at_sentences_and_overlap():
    sentences = [f"Sentence {i} has exactly six words." for i in range(30)]
    text = " ".join(sentences[:15]) + "\n\n" + " ".join(sentences[15:])
    chunks = split_text(text, chunk_size=40, overlap=12)
    assert all(words(c) <= 40 for c in chunks)
    assert all(c.endswith(".") for c in chunks)
    for previous, current in itertools.pairwise(chunks):
        first = current.replace("\n\n", " ").split(". ")
        carried = ". ".join(first[:2]) + "."  # overlap 12 words = the last two six-word sentences
        assert previous.replace("\n\n", " ").endswith(carried)
        assert first[2] not in previous
    covered = " ".join(chunks)
    assert all(s in covered for s in sentences)


def test_paragraph_breaks_survive_inside_chunks():
    chunks = split_text("First paragraph.\n\nSecond paragraph.", chunk_size=50, overlap=0)
    assert chunks == ["First paragraph.\n\nSecond paragraph."]


def test_a_sentence_longer_than_a_chunk_is_cut_into_pieces():
    chunks = split_text(" ".join(["word"] * 25), chunk_size=10, overlap=0)
    assert [words(c) for c in chunks] == [10, 10, 5]


def test_chunking_is_deterministic():
    text = (DATA / "matryoshka_embeddings.md").read_text(encoding="utf-8")
    assert split_text(text, chunk_size=60, overlap=15) == split_text(text, chunk_size=60, overlap=15)


def test_overlap_must_be_smaller_than_the_chunk():
    with pytest.raises(UsageError, match="--chunk-overlap"):
        split_text("a b c", chunk_size=5, overlap=5)


def test_ids_depend_on_path_content_chunking_and_position():
    version = file_version("text", chunk_size=200, overlap=40)
    assert version == file_version("text", chunk_size=200, overlap=40)
    assert version != file_version("text!", chunk_size=200, overlap=40)
    assert version != file_version("text", chunk_size=100, overlap=40)
    ids = {chunk_id("/a.md", version, 0), chunk_id("/b.md", version, 0), chunk_id("/a.md", version, 1)}
    assert len(ids) == 3
    assert chunk_id("/a.md", version, 0) == chunk_id("/a.md", version, 0)
