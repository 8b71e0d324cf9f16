"""Why a file is not indexed."""

from __future__ import annotations


class SkippedFile(Exception):
    """A file that cannot be indexed (unreadable, binary, corrupt, encrypted, a missing optional dependency); the
    other files still are.

    ``stale`` is true when the file was read and holds no text (an empty file, a PDF with no text layer at all):
    chunks of an earlier version of it are then out of date and are removed. A file that could not be read at all
    keeps the chunks of its last readable version.
    """

    def __init__(self, reason: str, *, stale: bool = False) -> None:
        super().__init__(reason)
        self.stale = stale


def missing_dependency(kind: str, package: str) -> SkippedFile:
    """The SkippedFile for a format whose optional reader is not installed, with the command that installs it."""
    return SkippedFile(f'reading {kind} files needs {package}: pip install "qwen3-rag[documents]" (or {package})')
