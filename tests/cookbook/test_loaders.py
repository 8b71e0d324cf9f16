"""Reading files into Documents: real PDFs (reportlab, encrypted with pypdf) and Word files (python-docx) built in
the tests, in English, Chinese and Japanese; UTF-16/UTF-32 text; source code; what is skipped and why."""

from __future__ import annotations

import codecs
import sys
from pathlib import Path

import pytest

from qwen3_rag.cli.loaders import Document, SkippedFile, read_document
from tests.cookbook.documents import CHINESE, JAPANESE, THAI, encrypt_pdf, make_docx, make_pdf

ENGLISH = "The sun is a star. Stars shine because nuclear fusion turns hydrogen into helium."


def squeeze(text: str) -> str:
    """Text without whitespace: PDF extraction breaks lines where the page did."""
    return "".join(text.split())


def skip_reason(path: Path) -> SkippedFile:
    with pytest.raises(SkippedFile) as info:
        read_document(path)
    return info.value


# ------------------------------------------------------------------------------------------------------ PDF


def test_pdf_text_is_read_page_by_page_and_each_offset_knows_its_page(tmp_path):
    pdf = make_pdf(tmp_path / "report.pdf", [ENGLISH, CHINESE, JAPANESE])
    doc = read_document(pdf)
    assert [number for _, number in doc.pages] == [1, 2, 3]
    for (offset, number), expected in zip(doc.pages, [ENGLISH, CHINESE, JAPANESE], strict=True):
        end = next((o for o, _ in doc.pages if o > offset), len(doc.text))
        assert squeeze(doc.text[offset:end]) == squeeze(expected)
        assert doc.page_at(offset) == number
        assert doc.page_at(end - 1) == number
    chinese = doc.text.index("太阳")
    assert doc.position(chinese, chinese + 10) == {"start": chinese, "end": chinese + 10, "page": 2, "page_end": 2}
    spanning = doc.position(0, len(doc.text))
    assert (spanning["page"], spanning["page_end"]) == (1, 3)
    assert "line" not in spanning  # a PDF's extracted lines are not lines of the file


def test_pdf_pages_without_a_text_layer_are_left_out_and_named(tmp_path):
    pdf = make_pdf(tmp_path / "scanned.pdf", [ENGLISH, None, CHINESE, None])
    doc = read_document(pdf)
    assert [number for _, number in doc.pages] == [1, 3]
    assert doc.notes == ("pages 2, 4 of 4 without a text layer (scanned?) not indexed",)
    assert squeeze(CHINESE) in squeeze(doc.text)


def test_a_pdf_with_no_text_at_all_is_skipped_and_its_old_chunks_are_stale(tmp_path):
    reason = skip_reason(make_pdf(tmp_path / "scan.pdf", [None, None]))
    assert str(reason) == "PDF with no text layer on any of its 2 pages (a scan? OCR it first)"
    assert reason.stale


def test_an_encrypted_pdf_is_skipped_unless_its_user_password_is_empty(tmp_path):
    plain = make_pdf(tmp_path / "plain.pdf", [ENGLISH])
    locked = encrypt_pdf(plain, tmp_path / "locked.pdf", user_password="secret")
    reason = skip_reason(locked)
    assert str(reason) == "encrypted PDF (needs a password)"
    assert not reason.stale  # an unreadable file keeps what an earlier run indexed
    restricted = encrypt_pdf(plain, tmp_path / "restricted.pdf", user_password="")
    assert squeeze(read_document(restricted).text) == squeeze(ENGLISH)


def test_a_corrupt_or_truncated_pdf_is_skipped_with_the_reason(tmp_path):
    whole = make_pdf(tmp_path / "whole.pdf", [ENGLISH, CHINESE]).read_bytes()
    (tmp_path / "garbage.pdf").write_bytes(b"%PDF-1.4\n\x00\x01 this is not a pdf at all")
    (tmp_path / "cut.pdf").write_bytes(whole[: len(whole) // 3])
    (tmp_path / "empty.pdf").write_bytes(b"")
    for name in ["garbage.pdf", "cut.pdf", "empty.pdf"]:
        reason = str(skip_reason(tmp_path / name))
        assert reason.startswith(("not a readable PDF (", "PDF with no")), (name, reason)


def test_the_pdf_title_comes_from_its_metadata_else_its_first_line(tmp_path):
    assert read_document(make_pdf(tmp_path / "a.pdf", [ENGLISH], title="Annual report")).title == "Annual report"
    assert read_document(make_pdf(tmp_path / "b.pdf", [ENGLISH])).title.startswith("The sun is a star. Stars")


# ----------------------------------------------------------------------------------------------------- Word


def test_docx_paragraphs_and_tables_are_read_in_order(tmp_path):
    table = [["城市", "人口"], ["北京", "2189万"], ["東京", "1400万"]]
    docx = make_docx(tmp_path / "cities.docx", ["# 城市概况", CHINESE, table, JAPANESE, THAI])
    doc = read_document(docx)
    assert doc.title == "城市概况"
    assert doc.text == "\n\n".join(["城市概况", CHINESE, "城市 | 人口\n北京 | 2189万\n東京 | 1400万", JAPANESE, THAI])
    assert doc.pages == () and doc.position(0, 4) == {"start": 0, "end": 4}


def test_docx_merged_cells_are_read_once_and_the_core_title_wins(tmp_path):
    import docx

    path = tmp_path / "merged.docx"
    document = docx.Document()
    document.core_properties.title = "Merged"
    table = document.add_table(rows=2, cols=3)
    table.cell(0, 0).merge(table.cell(0, 2)).text = "Header across three columns"
    for c, text in enumerate(["a", "b", "c"]):
        table.cell(1, c).text = text
    document.save(str(path))
    doc = read_document(path)
    assert doc.title == "Merged"
    assert doc.text == "Header across three columns\na | b | c"


def test_a_damaged_or_legacy_word_file_is_skipped_with_the_reason(tmp_path):
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "old.docx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512))
    assert str(skip_reason(tmp_path / "broken.docx")).startswith("not a readable .docx file (")
    assert str(skip_reason(tmp_path / "old.docx")).endswith("-- an encrypted or legacy .doc file?")
    empty = make_docx(tmp_path / "empty.docx", [])
    assert skip_reason(empty).stale


@pytest.mark.parametrize(
    ("module", "name", "package"), [("pypdf", "a.pdf", "pypdf"), ("docx", "a.docx", "python-docx")]
)
def test_without_the_optional_reader_a_file_is_skipped_with_the_pip_install(
    tmp_path, monkeypatch, module, name, package
):
    (tmp_path / name).write_bytes(b"whatever")
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    reason = str(skip_reason(tmp_path / name))
    assert reason.endswith(f'needs {package}: pip install "qwen3-rag[documents]" (or {package})')


# ------------------------------------------------------------------------------------------------ text, code


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-8"])
def test_text_with_a_byte_order_mark_is_decoded(tmp_path, codec):
    bom = {
        "utf-16-le": codecs.BOM_UTF16_LE,
        "utf-16-be": codecs.BOM_UTF16_BE,
        "utf-32-le": codecs.BOM_UTF32_LE,
        "utf-32-be": codecs.BOM_UTF32_BE,
        "utf-8": codecs.BOM_UTF8,
    }[codec]
    text = f"# 标题\r\n\r\n{CHINESE}\r\n{JAPANESE}\n{THAI}\n"
    (tmp_path / "notes.md").write_bytes(bom + text.encode(codec))
    doc = read_document(tmp_path / "notes.md")
    assert doc.text == text.replace("\r\n", "\n")
    assert doc.title == "标题"


def test_utf16_without_a_mark_is_binary_and_bad_bytes_after_a_mark_are_named(tmp_path):
    (tmp_path / "nomark.txt").write_bytes("hello".encode("utf-16-le"))
    assert str(skip_reason(tmp_path / "nomark.txt")) == "binary file"
    (tmp_path / "bad.txt").write_bytes(codecs.BOM_UTF16_LE + b"h\x00\x00\xd8")  # a lone high surrogate
    assert str(skip_reason(tmp_path / "bad.txt")) == "not UTF-16 text despite its byte-order mark (byte 4)"


def test_source_code_is_text_titled_by_its_name_with_line_ranges(tmp_path):
    code = "import os\n\n\ndef main():\n    return os.getcwd()\n"
    (tmp_path / "tool.py").write_text(code, encoding="utf-8")
    doc = read_document(tmp_path / "tool.py")
    assert doc.text == code and doc.title == "tool.py"
    start = code.index("def main")
    assert doc.position(start, len(code)) == {"start": start, "end": len(code), "line": 4, "line_end": 5}
    assert doc.position(0, 9) == {"start": 0, "end": 9, "line": 1, "line_end": 1}


def test_html_is_reduced_to_its_visible_text_without_line_numbers(tmp_path):
    (tmp_path / "page.html").write_text(
        "<html><head><title>T</title></head><body><h1>Head</h1><table><tr><td>a</td><td>b</td></tr></table>"
        "<script>x()</script></body></html>",
        encoding="utf-8",
    )
    doc = read_document(tmp_path / "page.html")
    assert doc.text == "Head\n\na b"
    assert "line" not in doc.position(0, 4)


def test_lines_of_a_chunk_are_the_lines_of_the_file():
    text = "one\ntwo\nthree\nfour\n"
    doc = Document(text, "t", lines=True)
    assert doc.position(text.index("two"), text.index("four") + 4) == {
        "start": 4,
        "end": 18,
        "line": 2,
        "line_end": 4,
    }


def test_the_cookbook_sample_documents_read_as_the_notebook_says():
    folder = Path(__file__).resolve().parents[2] / "cookbook" / "documents"
    pdf = read_document(folder / "solar_system.pdf")
    assert pdf.title == "The Solar System"
    assert [number for _, number in pdf.pages] == [1, 3]
    assert pdf.notes == ("page 2 of 3 without a text layer (scanned?) not indexed",)
    assert "一年相当于地球" in squeeze(pdf.text)
    word = read_document(folder / "garden_notes.docx")
    assert "tomato | full sun | deep, twice a week" in word.text
    assert read_document(folder / "moon_phases.md").title == "Moon phases"
