"""Plain text, Markdown, reStructuredText and source code: bytes to text (UTF-8, or UTF-16/UTF-32 by their
byte-order mark), newlines normalised so that line numbers match the file's."""

from __future__ import annotations

import codecs
from pathlib import Path

from qwen3_rag.cli.loaders.errors import SkippedFile

TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".markdown", ".mdx", ".rst", ".adoc", ".asciidoc", ".org", ".tex"})
CODE_SUFFIXES = frozenset({
    ".py", ".pyi", ".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".vue", ".svelte", ".java", ".kt", ".kts",
    ".scala", ".groovy", ".c", ".h", ".cc", ".cpp", ".cxx", ".hh", ".hpp", ".hxx", ".cs", ".fs", ".go", ".rs",
    ".swift", ".m", ".mm", ".rb", ".php", ".pl", ".pm", ".lua", ".r", ".jl", ".dart", ".ex", ".exs", ".erl",
    ".hs", ".ml", ".clj", ".sh", ".bash", ".zsh", ".fish", ".ps1", ".sql", ".css", ".scss", ".proto", ".toml",
    ".yaml", ".yml", ".ini", ".cfg",
})  # fmt: skip
"""Source code and configuration, read as text (a chunk records its line range)."""

_BOMS = (  # UTF-32-LE's mark starts with UTF-16-LE's: test the longer ones first
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SkippedFile(f"unreadable ({exc.strerror or type(exc).__name__})") from exc


def decode(data: bytes) -> str:
    """Text from bytes: a byte-order mark chooses UTF-8, UTF-16 or UTF-32; without one the bytes must be UTF-8
    and hold no NUL (a NUL in the first 8 KiB marks a binary file)."""
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec)
            except UnicodeDecodeError as exc:
                raise SkippedFile(f"not {name} text despite its byte-order mark (byte {exc.start + len(bom)})") from exc
    if b"\x00" in data[:8192]:
        raise SkippedFile("binary file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SkippedFile(f"not UTF-8 text (byte {exc.start})") from exc


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def clean_extracted(text: str) -> str:
    """Text pulled out of a PDF or Word file, made storable: newlines normalised, NULs dropped, and lone surrogates
    (which no UTF-8 store accepts) replaced by U+FFFD."""
    text = normalise_newlines(text).replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in text)
    return text


def title_of(text: str, path: Path) -> str:
    """The first Markdown heading, else the first non-empty line (shortened), else the file name."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("#").strip() or path.stem
        if line:
            return line if len(line) <= 80 else line[:77].rstrip() + "..."
    return path.stem
