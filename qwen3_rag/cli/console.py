"""What the command line prints: status lines and warnings on stderr, results on stdout, paths as typed."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

PROG = "qwen3-rag"


class Console:
    """Status lines on stderr (silenced by --quiet); results on stdout."""

    def __init__(self, quiet: bool, out: TextIO, err: TextIO) -> None:
        self.quiet, self.out, self.err = quiet, out, err

    def status(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.err, flush=True)

    def warn(self, message: str) -> None:
        print(f"{PROG}: warning: {message}", file=self.err, flush=True)


def display_path(source: str | Path) -> str:
    """A source as the user would type it: relative to the working folder when inside it."""
    path = Path(source)
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()
