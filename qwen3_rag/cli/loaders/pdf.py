"""PDF: the text layer, page by page, with pypdf (BSD-3-Clause, pure Python; PyMuPDF is AGPL).

A page without text (a scanned image) is left out and named in the document's notes; a PDF where no page has text,
an encrypted PDF that needs a password, and a file pypdf cannot parse are skipped with the reason. A PDF encrypted
with an empty user password (only "owner" restrictions, common from office suites) is read.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

from qwen3_rag.cli.loaders.document import Document
from qwen3_rag.cli.loaders.errors import SkippedFile, missing_dependency
from qwen3_rag.cli.loaders.text import clean_extracted, read_bytes, title_of

PAGE_SEPARATOR = "\n\n"
"""Between the text of two pages: a paragraph break, so chunks prefer to end at a page's end."""


def read_pdf(path: Path) -> Document:
    try:
        import pypdf
        from pypdf.errors import DependencyError
    except ImportError:
        raise missing_dependency("PDF", "pypdf") from None
    data = read_bytes(path)
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings about sloppy files are not the user's business
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reader = pypdf.PdfReader(io.BytesIO(data))
            if reader.is_encrypted:
                try:
                    opened = reader.decrypt("")
                except DependencyError:
                    raise SkippedFile(
                        'encrypted with AES: reading it needs the cryptography package (pip install "pypdf[crypto]")'
                    ) from None
                if not opened:
                    raise SkippedFile("encrypted PDF (needs a password)")
            count = len(reader.pages)
            texts = []
            for number in range(1, count + 1):
                try:
                    texts.append(clean_extracted(reader.pages[number - 1].extract_text() or "").strip())
                except Exception:  # one broken page: the others are still read
                    texts.append("")
            title = _metadata_title(reader)
        except SkippedFile:
            raise
        except Exception as exc:  # pypdf raises many types (PdfReadError, ValueError, KeyError, ...) on bad files
            raise SkippedFile(f"not a readable PDF ({type(exc).__name__}: {str(exc)[:120]})") from None
    blank = [n for n, text in enumerate(texts, 1) if not text]
    if len(blank) == count:
        what = "no pages" if count == 0 else f"no text layer on any of its {count} pages (a scan? OCR it first)"
        raise SkippedFile(f"PDF with {what}", stale=True)
    parts, pages, offset = [], [], 0
    for number, text in enumerate(texts, 1):
        if text:
            if parts:
                parts.append(PAGE_SEPARATOR)
                offset += len(PAGE_SEPARATOR)
            pages.append((offset, number))
            parts.append(text)
            offset += len(text)
    text = "".join(parts)
    notes = ()
    if blank:
        notes = (f"{_pages(blank)} of {count} without a text layer (scanned?) not indexed",)
    return Document(text, title or title_of(text, path), pages=tuple(pages), notes=notes)


def _metadata_title(reader: Any) -> str:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:
        return ""
    title = title.strip() if isinstance(title, str) else ""
    return "" if title.lower() in _PLACEHOLDER_TITLES else title


_PLACEHOLDER_TITLES = frozenset({"untitled", "untitled document", "anonymous", "title"})
"""Titles that PDF writers put in by default (reportlab: "untitled"): the first line says more."""


def _pages(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:20]) + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")
    return ("page " if len(numbers) == 1 else "pages ") + shown
