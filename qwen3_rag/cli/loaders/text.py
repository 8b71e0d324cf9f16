"""Plain text, Markdown, reStructuredText and source code: bytes to text (UTF-8, or UTF-16/UTF-32 by their
byte-order mark), newlines normalised so that line numbers match the file's."""

from __future__ import annotations

from pathlib import Path

from qwen3_rag._text import UndecodableText, decode_text, normalise_newlines
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


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SkippedFile(f"unreadable ({exc.strerror or type(exc).__name__})") from exc


def decode(data: bytes) -> str:
    """Text from bytes, decoded as :func:`qwen3_rag._text.decode_text` decodes them (the Ray job too), or
    SkippedFile with its reason."""
    try:
        return decode_text(data)
    except UndecodableText as exc:
        raise SkippedFile(str(exc)) from exc


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
