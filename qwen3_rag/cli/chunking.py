"""Splitting a document's text into the chunks that are embedded, stored and retrieved. Pure Python."""

from __future__ import annotations

import re
from dataclasses import dataclass

from qwen3_rag.cli.errors import UsageError

DEFAULT_CHUNK_SIZE = 200
"""Words per chunk (about 260 Qwen tokens of English prose)."""
DEFAULT_CHUNK_OVERLAP = 40
"""Words of the previous chunk repeated at the start of the next, in whole sentences."""


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str


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
