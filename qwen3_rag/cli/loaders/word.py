"""Word (.docx): paragraphs and tables in document order, with python-docx (MIT).

Each paragraph becomes a paragraph of the text; a table becomes one line per row, its cells separated by `` | ``
(a merged cell once), nested tables inside their cell. Headers, footers and comments are left out.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from qwen3_rag.cli.loaders.document import Document
from qwen3_rag.cli.loaders.errors import SkippedFile, missing_dependency
from qwen3_rag.cli.loaders.text import clean_extracted, read_bytes, title_of


def read_docx(path: Path) -> Document:
    try:
        import docx
        from docx.table import Table
    except ImportError:
        raise missing_dependency("Word .docx", "python-docx") from None
    data = read_bytes(path)
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = [_block(item, Table) for item in document.iter_inner_content()]
        title = (document.core_properties.title or "").strip()
        heading = next(
            (
                item.text.strip()
                for item in document.paragraphs
                if item.text.strip() and (item.style is not None and item.style.name.startswith(("Heading", "Title")))
            ),
            "",
        )
    except Exception as exc:  # python-docx raises zipfile, lxml and KeyError types on damaged or foreign files
        hint = " -- an encrypted or legacy .doc file?" if data[:4] == b"\xd0\xcf\x11\xe0" else ""
        raise SkippedFile(f"not a readable .docx file ({type(exc).__name__}: {str(exc)[:120]}){hint}") from None
    text = clean_extracted("\n\n".join(block for block in blocks if block.strip()))
    if not text.strip():
        raise SkippedFile("empty document", stale=True)
    return Document(text, title or heading or title_of(text, path))


def _block(item: Any, table_type: type) -> str:
    if isinstance(item, table_type):
        return _table(item, table_type)
    return item.text.strip()


def _table(table: Any, table_type: type) -> str:
    rows = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            if id(cell._tc) in seen:  # a merged cell is repeated once per grid column it spans
                continue
            seen.add(id(cell._tc))
            parts = [_block(inner, table_type) for inner in cell.iter_inner_content()]
            cells.append(" ".join(" ".join(p.split()) for p in parts if p.strip()))
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)
