"""A file's text as read for indexing, and where a piece of it came from (pages, lines)."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Document:
    """The text of one file, and what is needed to say where a piece of it came from.

    ``pages`` holds, for a paged format (PDF), ``(offset, number)`` for every page that has text: the character
    offset in ``text`` where that page's text starts and its 1-based page number. ``lines`` is true where the
    lines of ``text`` are the file's own lines (plain text and code), so a chunk can name its line range.
    ``notes`` are things the user should know about an indexed file (pages without a text layer).
    """

    text: str
    title: str
    pages: tuple[tuple[int, int], ...] = ()
    lines: bool = False
    notes: tuple[str, ...] = ()

    def page_at(self, offset: int) -> int | None:
        """The 1-based page holding ``text[offset]``; None for a file without pages."""
        if not self.pages:
            return None
        return self.pages[max(0, bisect.bisect_right(self._page_starts, offset) - 1)][1]

    def position(self, start: int, end: int) -> dict[str, int]:
        """Where ``text[start:end]`` lies, as Chroma metadata: its character offsets, and its pages (first and
        last) for a paged file, or its 1-based line range where the text's lines are the file's."""
        last = max(start, end - 1)
        where = {"start": start, "end": end}
        if self.pages:
            where["page"] = self.page_at(start)
            where["page_end"] = self.page_at(last)
        elif self.lines:
            where["line"] = bisect.bisect_left(self._newlines, start) + 1
            where["line_end"] = bisect.bisect_left(self._newlines, last) + 1
        return where

    @cached_property
    def _page_starts(self) -> list[int]:
        return [offset for offset, _ in self.pages]

    @cached_property
    def _newlines(self) -> list[int]:
        return [match.start() for match in re.finditer("\n", self.text)]
