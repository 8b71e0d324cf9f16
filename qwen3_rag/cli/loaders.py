"""Finding and reading the files the CLI indexes: text out of each supported file. No model, no database."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

from qwen3_rag.cli.errors import UsageError

TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".markdown", ".mdx", ".rst"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES
"""Suffixes picked up when walking a folder. A file named explicitly is read whatever its suffix."""


class SkippedFile(Exception):
    """A file that cannot be indexed (unreadable, binary, not UTF-8, empty); the others still are."""


# ------------------------------------------------------------------------------------------------- finding


def find_files(paths: list[str | os.PathLike]) -> list[Path]:
    """Every file named, plus the supported files under every folder named (hidden entries skipped), in a
    stable order and without duplicates. A missing path or a folder without supported files is a UsageError."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise UsageError(f"no such file or folder: {os.fspath(raw)}")
        if path.is_dir():
            files = _walk(path)
            if not files:
                suffixes = ", ".join(sorted(SUPPORTED_SUFFIXES))
                raise UsageError(f"folder {os.fspath(raw)} holds no files to index (looked for {suffixes})")
            found.update(dict.fromkeys(files))
        else:
            found[path.resolve()] = None
    return list(found)


def _walk(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(
            Path(root, name).resolve()
            for name in sorted(names)
            if not name.startswith(".") and Path(name).suffix.lower() in SUPPORTED_SUFFIXES
        )
    return files


# ------------------------------------------------------------------------------------------------- reading


def read_text(path: Path) -> str:
    """The text of ``path`` (HTML reduced to its visible text), or SkippedFile saying why not."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SkippedFile(f"unreadable ({exc.strerror or type(exc).__name__})") from exc
    if b"\x00" in data[:8192]:
        raise SkippedFile("binary file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkippedFile(f"not UTF-8 text (byte {exc.start})") from exc
    if path.suffix.lower() in HTML_SUFFIXES:
        text = html_to_text(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise SkippedFile("empty file")
    return text


class _TextExtractor(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "noscript", "template"})
    _BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section",
                        "article", "blockquote", "table", "ul", "ol", "header", "footer"})  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML page, one paragraph per block element."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\s*\n\s*\n\s*", "\n\n", text).strip()


def title_of(text: str, path: Path) -> str:
    """The first Markdown heading, else the first non-empty line (shortened), else the file name."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("#").strip() or path.stem
        if line:
            return line if len(line) <= 80 else line[:77].rstrip() + "..."
    return path.stem
