"""Reading the files the CLI indexes: one :class:`Document` (text, title, pages) out of each supported file.

One module per format -- ``text`` (plain text, Markdown, reStructuredText, source code; UTF-8, or UTF-16/UTF-32
with a byte-order mark), ``html`` (visible text), ``pdf`` (the text layer, page by page, with pypdf) and ``word``
(.docx paragraphs and tables, with python-docx). The PDF and Word readers need the optional ``documents`` extra;
without it, such a file is skipped with the ``pip install`` that fixes it. No model, no database here.
"""

from __future__ import annotations

from pathlib import Path

from qwen3_rag.cli.loaders.document import Document
from qwen3_rag.cli.loaders.errors import SkippedFile
from qwen3_rag.cli.loaders.html import HTML_SUFFIXES, html_to_text
from qwen3_rag.cli.loaders.text import CODE_SUFFIXES, TEXT_SUFFIXES, decode, normalise_newlines, read_bytes, title_of

PDF_SUFFIXES = frozenset({".pdf"})
WORD_SUFFIXES = frozenset({".docx"})
DOCUMENT_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | WORD_SUFFIXES
SUPPORTED_SUFFIXES = DOCUMENT_SUFFIXES | CODE_SUFFIXES
"""Suffixes picked up when walking a folder. A file named explicitly is read as text whatever its suffix."""

__all__ = [
    "CODE_SUFFIXES",
    "DOCUMENT_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "Document",
    "SkippedFile",
    "html_to_text",
    "read_document",
    "title_of",
]


def read_document(path: Path) -> Document:
    """The :class:`Document` in ``path``, chosen by its suffix (anything unknown is read as text), or SkippedFile
    saying why it cannot be indexed."""
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        from qwen3_rag.cli.loaders.pdf import read_pdf

        return read_pdf(path)
    if suffix in WORD_SUFFIXES:
        from qwen3_rag.cli.loaders.word import read_docx

        return read_docx(path)
    text = decode(read_bytes(path))
    is_html = suffix in HTML_SUFFIXES
    text = html_to_text(text) if is_html else normalise_newlines(text)
    if not text.strip():
        raise SkippedFile("empty file", stale=True)
    title = path.name if suffix in CODE_SUFFIXES else title_of(text, path)
    return Document(text, title, lines=not is_html)
