"""Real PDF and Word files for the loader and CLI tests, built on the spot: PDFs with reportlab (BSD; its built-in
CID fonts carry Chinese and Japanese without any font file), encrypted with pypdf's writer, Word files with
python-docx."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

CHINESE = (
    "太阳是一颗恒星，它的能量来自核聚变。氢原子在高温高压下结合成氦，释放出巨大的能量。"
    "地球绕着太阳公转，一年转一圈。月亮的引力使海洋每天出现两次潮汐。"
)
JAPANESE = "東京は日本の首都です。富士山は日本で一番高い山で、その高さは三七七六メートルです。桜は春に咲きます。"
THAI = "ประเทศไทยมีอากาศร้อนชื้นตลอดทั้งปีและมีฤดูฝนที่ยาวนานข้าวเป็นอาหารหลักของคนไทยทุกภาค"


def _font_for(text: str) -> str:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont

    if any("\u3040" <= ch <= "\u30ff" for ch in text):  # kana: Japanese
        name = "HeiseiMin-W3"
    elif any("\u4e00" <= ch <= "\u9fff" or "\u3000" <= ch <= "\u303f" or "\uff00" <= ch <= "\uffef" for ch in text):
        name = "STSong-Light"
    else:
        return "Helvetica"
    if name not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(name))
    return name


def _lines(text: str) -> list[str]:
    """Lines that fit a page: wrapped at words for Latin text, every 30 characters for CJK."""
    out = []
    for paragraph in text.split("\n"):
        if _font_for(paragraph) == "Helvetica":
            out.extend(textwrap.wrap(paragraph, 90) or [""])
        else:
            out.extend(paragraph[i : i + 30] for i in range(0, max(len(paragraph), 1), 30))
    return out


def make_pdf(path: Path, pages: list[str | None], *, title: str | None = None) -> Path:
    """A PDF with one page per entry: its text in a text layer, or (None) only a drawn shape, like a scan."""
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path))
    if title:
        pdf.setTitle(title)
    for text in pages:
        if text is None:
            pdf.rect(72, 300, 300, 300, fill=1)  # no text at all: what a scanned page looks like to a text reader
        else:
            obj = pdf.beginText(72, 760)
            obj.setFont(_font_for(text), 11)
            for line in _lines(text):
                obj.textLine(line)
            pdf.drawText(obj)
        pdf.showPage()
    pdf.save()
    return path


def encrypt_pdf(source: Path, target: Path, *, user_password: str, owner_password: str = "owner") -> Path:
    """``source`` encrypted (RC4-128, which pypdf reads without extra packages)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    target.write_bytes(buffer.getvalue())
    return target


def make_docx(path: Path, blocks: list[str | list[list[str]]], *, title: str | None = None) -> Path:
    """A Word file: each block a paragraph (a ``# `` prefix makes it a heading) or a table (rows of cells)."""
    import docx

    document = docx.Document()
    if title:
        document.core_properties.title = title
    for block in blocks:
        if isinstance(block, list):
            table = document.add_table(rows=len(block), cols=len(block[0]))
            for r, row in enumerate(block):
                for c, cell in enumerate(row):
                    table.cell(r, c).text = cell
        elif block.startswith("# "):
            document.add_heading(block[2:], level=1)
        else:
            document.add_paragraph(block)
    document.save(str(path))
    return path
