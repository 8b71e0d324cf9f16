"""TEMPORARY, until the token-counted chunker lands on main: the shape it will have -- ``Chunk(index, text, start,
end)`` with ``text == source[start:end]`` (character offsets) -- made from the current word-based
:func:`~qwen3_rag.cli.chunking.split_text`, whose chunks are runs of the source's whitespace-separated words (it
rejoins them with its own whitespace, so the offsets are found by matching the words forward in the source)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from qwen3_rag.cli.chunking import split_text


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int
    end: int


def chunk_text(text: str, tokenizer: Any = None, *, chunk_size: int, overlap: int) -> list[Chunk]:
    """Chunks of ``text`` with their character offsets; ``tokenizer`` is unused here (the word chunker's sizes are
    in words)."""
    spans = [match.span() for match in re.finditer(r"\S+", text)]
    words = [text[a:b] for a, b in spans]
    chunks, cursor = [], 0
    for index, piece in enumerate(split_text(text, chunk_size=chunk_size, overlap=overlap)):
        wanted = piece.split()
        first = cursor
        while words[first] != wanted[0] or words[first : first + len(wanted)] != wanted:
            first += 1
        start, end = spans[first][0], spans[first + len(wanted) - 1][1]
        chunks.append(Chunk(index, text[start:end], start, end))
        cursor = first + 1
    return chunks
