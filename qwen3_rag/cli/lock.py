"""Who may touch an embedded index at once. Chroma's embedded database is not safe for two writing processes (one
overwrites the other's vector index: vectors unreachable by search, ``get(include=["embeddings"])`` failing), nor
for a process that reads while another writes. Two locks, both files in the database folder (filelock,
Unlicense, already a dependency of huggingface_hub):

- the *index lock* (``qwen3-rag-index.lock``, exclusive, an OS file lock released when its process ends, even
  killed): one ``qwen3-rag index`` run at a time. A second run waits for the first and says so -- waiting rather
  than failing, so that two scheduled runs both succeed, the second finding the first's files unchanged;
- the *access lock* (``qwen3-rag-access.lock``, a reader/writer lock): ``index`` holds it exclusively only while it
  writes a group of chunks (milliseconds to seconds), ``search`` and ``ask`` hold it shared while they read. So they
  keep working while a long ``index`` run embeds, and never see a half-written index.

A database folder the user cannot write to cannot be indexed into; it is read without the access lock (nothing
can be writing to it).

A Chroma server (``--db http://...``) takes no locks here: concurrency is the server's job (``db`` is None).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qwen3_rag.cli.console import Console, printable
from qwen3_rag.cli.errors import UsageError

INDEX_LOCK = "qwen3-rag-index.lock"
ACCESS_LOCK = "qwen3-rag-access.lock"
_NOTICE_AFTER = 1.0
"""Seconds a reader waits quietly for a write to finish before it says what it waits for."""


@contextmanager
def index_run(db: Path | None, console: Console) -> Iterator[None]:
    """Hold the index lock of ``db`` (created if needed) for the body: waits, with a message, for another run.
    ``None`` (a server) holds nothing."""
    from filelock import FileLock, Timeout

    if db is None:
        yield
        return
    try:
        db.mkdir(parents=True, exist_ok=True)
        lock = FileLock(db / INDEX_LOCK)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            console.status(f"another qwen3-rag index run is writing to {printable(db)}: waiting for it to finish ...")
            lock.acquire()
    except OSError as exc:
        raise UsageError(f"cannot write to the database folder {printable(db)} ({exc.strerror or exc})") from None
    try:
        yield
    finally:
        lock.release()


class AccessLock:
    """The reader/writer lock of one database folder (see the module's docstring); for ``None`` (a server), a lock
    that holds nothing."""

    def __init__(self, db: Path | None) -> None:
        self.path = None if db is None else db / ACCESS_LOCK
        self._lock: Any = None

    def _get(self) -> Any:
        if self._lock is None:
            try:
                from filelock import ReadWriteLock
            except ImportError:  # filelock < 3.21
                raise UsageError(
                    'the qwen3-rag CLI needs filelock 3.21 or later: pip install "filelock>=3.21"'
                ) from None
            self._lock = ReadWriteLock(self.path, is_singleton=False)
        return self._lock

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Exclusive: no reader and no other writer while the body runs."""
        if self.path is None:
            yield
            return
        with self._get().write_lock():
            yield

    @contextmanager
    def reading(self, console: Console | None = None) -> Iterator[None]:
        """Shared with other readers; waits for a write in progress (saying so after a second)."""
        from filelock import Timeout

        if self.path is None:
            yield
            return
        try:
            lock = self._get()
            try:
                lock.acquire_read(timeout=_NOTICE_AFTER)
            except Timeout:
                if console is not None:
                    console.status("waiting for a qwen3-rag index run to finish writing ...")
                lock.acquire_read()
        except (OSError, sqlite3.Error):  # a folder we cannot write to: nobody can be writing to it either
            yield
            return
        try:
            yield
        finally:
            lock.release()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
