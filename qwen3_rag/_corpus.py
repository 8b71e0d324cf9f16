"""Finding, reading and chunking the files the CLI indexes. Pure Python: no model, no database."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".markdown", ".mdx", ".rst"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES
"""Suffixes picked up when walking a folder. A file named explicitly is read whatever its suffix."""

DEFAULT_CHUNK_SIZE = 200
"""Words per chunk (about 260 Qwen tokens of English prose)."""
DEFAULT_CHUNK_OVERLAP = 40
"""Words of the previous chunk repeated at the start of the next, in whole sentences."""


class UsageError(Exception):
    """A mistake in what the user asked for: reported as one line, exit status 2."""


class SkippedFile(Exception):
    """A file that cannot be indexed (unreadable, binary, not UTF-8, empty); the others still are."""


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str


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


# ------------------------------------------------------------------------------------------------ chunking

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_WORD = re.compile(r"\S+\s*")


def _units(text: str, chunk_size: int) -> list[tuple[str, int, bool]]:
    """Sentences as (text, words, starts a paragraph); a sentence longer than a chunk is cut into pieces."""
    units = []
    for paragraph in _PARAGRAPH.split(text.strip()):
        first = True
        for sentence in _SENTENCE_END.split(paragraph.strip()):
            words = _WORD.findall(sentence)
            for start in range(0, len(words), chunk_size):
                piece = "".join(words[start : start + chunk_size]).strip()
                if piece:
                    units.append((piece, min(chunk_size, len(words) - start), first))
                    first = False
    return units


def split_text(text: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE, overlap: int = DEFAULT_CHUNK_OVERLAP) -> list[str]:
    """Deterministic chunks of at most ``chunk_size`` words, cut between sentences and preferably between
    paragraphs; each chunk after the first starts with up to ``overlap`` words of whole sentences that end the
    previous one. Paragraph breaks survive inside chunks."""
    if chunk_size < 1:
        raise UsageError(f"--chunk-size must be at least 1 word, got {chunk_size}")
    if not 0 <= overlap < chunk_size:
        raise UsageError(f"--chunk-overlap must be between 0 and chunk size - 1 ({chunk_size - 1}), got {overlap}")
    units = _units(text, chunk_size)
    chunks: list[str] = []
    current: list[tuple[str, int, bool]] = []
    fresh = 0  # units in `current` not carried over from the previous chunk
    for unit in units:
        size = sum(u[1] for u in current)
        if current and fresh and size + unit[1] > chunk_size:
            chunks.append(_join(current))
            carried: list[tuple[str, int, bool]] = []
            for prev in reversed(current):
                if sum(u[1] for u in carried) + prev[1] > overlap or len(carried) + 1 == len(current):
                    break
                carried.insert(0, prev)
            while carried and sum(u[1] for u in carried) + unit[1] > chunk_size:
                carried.pop(0)
            current, fresh = carried, 0
        current.append(unit)
        fresh += 1
    if current and fresh:
        chunks.append(_join(current))
    return chunks


def _join(units: list[tuple[str, int, bool]]) -> str:
    out = units[0][0]
    for text, _, new_paragraph in units[1:]:
        out += ("\n\n" if new_paragraph else " ") + text
    return out


def chunk_file(text: str, *, chunk_size: int, overlap: int) -> list[Chunk]:
    return [Chunk(i, t) for i, t in enumerate(split_text(text, chunk_size=chunk_size, overlap=overlap))]


# -------------------------------------------------------------------------------------------------- hashes


def file_version(text: str, *, chunk_size: int, overlap: int) -> str:
    """A hash of the text and the chunking settings: a new value means new chunks."""
    digest = hashlib.sha256(f"chunking:{chunk_size}:{overlap}\n".encode())
    digest.update(text.encode("utf-8"))
    return digest.hexdigest()


def source_key(path: Path) -> str:
    """How a file is identified in the index: its absolute path, with forward slashes."""
    return path.resolve().as_posix()


def chunk_id(source: str, version: str, index: int) -> str:
    """``{hash of the path}-{hash of the file version}-{chunk index}``: stable across runs."""
    return f"{hashlib.sha256(source.encode()).hexdigest()[:16]}-{version[:16]}-{index}"
