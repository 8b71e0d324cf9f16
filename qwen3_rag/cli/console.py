"""What the command line prints: status lines and warnings on stderr, results on stdout, paths as typed."""

from __future__ import annotations

import contextlib
import os
import sys
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


def printable(name: str | os.PathLike) -> str:
    """A file name as valid UTF-8 text: bytes that are not UTF-8 (kept by Python as lone surrogates) become
    ``\\xNN`` escapes, so the name can be printed on any terminal and stored in Chroma's metadata."""
    text = os.fspath(name)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return text


def display_path(source: str | Path) -> str:
    """A source as the user would type it: relative to the working folder when inside it."""
    path = Path(printable(source))
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def safe_streams() -> None:
    """Characters the terminal's encoding cannot show (a Chinese file name under a Latin-1 locale) are printed as
    escapes instead of raising UnicodeEncodeError in the middle of a run."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):  # a stream that cannot change its error handler
                reconfigure(errors="backslashreplace")
