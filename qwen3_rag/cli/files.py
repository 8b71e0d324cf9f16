"""Finding the files to index: walking folders without ever blocking, looping or aborting on what is found there.

Only regular files are returned. FIFOs, sockets and devices are never opened (opening a FIFO for reading blocks
until a writer comes); symbolic links to files are followed, links that loop or dangle are reported, links to
folders are reported and not followed (a walk that follows them can loop or leave the folder); hidden entries and
unsupported suffixes are passed over silently; a folder that cannot be listed is reported and the walk goes on.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from qwen3_rag.cli.console import printable
from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.loaders import SUPPORTED_SUFFIXES


@dataclass
class FoundFiles:
    """What :func:`find_files` found: the files to read, what it passed over and why, and the folders walked."""

    files: list[Path] = field(default_factory=list)
    """Absolute, symlink-free paths of regular files, in a stable order, each once."""
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """Entries that are not indexed, with the reason (a FIFO, a symlink loop, an unreadable folder, ...)."""
    folders: list[Path] = field(default_factory=list)
    """The folders named, resolved: the index mirrors what is under them."""


def find_files(paths: list[str | os.PathLike]) -> FoundFiles:
    """Every file named, plus the supported files under every folder named. A path that does not exist is a
    UsageError; everything else that cannot be indexed is listed in ``skipped``."""
    found = FoundFiles()
    seen: set[Path] = set()

    def add(path: Path, canonical: bool = False) -> None:
        resolved = path if canonical else path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            found.files.append(resolved)

    for raw in paths:
        path = Path(raw).expanduser()
        try:
            os.lstat(path)
        except OSError:
            raise UsageError(f"no such file or folder: {printable(raw)}") from None
        problem, mode, _ = _check(path)
        if problem:
            found.skipped.append((path, problem))
        elif stat.S_ISDIR(mode):
            folder = path.resolve()
            found.folders.append(folder)
            _walk(folder, add, found.skipped)
        elif stat.S_ISREG(mode):
            add(path)
        else:
            found.skipped.append((path, _special(mode)))
    return found


def _check(path: Path) -> tuple[str, int, bool]:
    """('', mode, is a link) for an entry that can be looked at, else (the reason it cannot, 0, True). Never
    opens the entry; a symbolic link is followed."""
    try:
        mode = os.lstat(path).st_mode
        if not stat.S_ISLNK(mode):
            return "", mode, False
        return "", os.stat(path).st_mode, True
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop", 0, True
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return f"dangling symbolic link (to {printable(os.readlink(path))})", 0, True
        return f"cannot be read ({exc.strerror or type(exc).__name__})", 0, True


def _special(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file"
    return "not a regular file"


def _walk(folder: Path, add, skipped: list[tuple[Path, str]]) -> None:
    def unreadable(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else folder
        skipped.append((where, f"folder cannot be read ({exc.strerror or type(exc).__name__})"))

    for root, dirs, names in os.walk(folder, onerror=unreadable):
        kept = []
        for name in sorted(dirs):
            if name.startswith("."):
                continue
            if os.path.islink(os.path.join(root, name)):
                skipped.append((Path(root, name), "a symbolic link to a folder, not followed (name it to index it)"))
            else:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(names):
            if name.startswith(".") or Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            path = Path(root, name)
            problem, mode, link = _check(path)
            if problem:
                skipped.append((path, problem))
            elif stat.S_ISREG(mode):
                add(path, canonical=not link)  # under a resolved folder, through no link: already canonical
            else:
                skipped.append((path, _special(mode)))
