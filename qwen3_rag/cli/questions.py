"""The questions file of ``qwen3-rag eval``: reading it, and matching each question's relevant files to the
indexed sources. No model, no database.

The format is the cookbook's ``questions.json``: a JSON list of objects, or JSONL (one object per line), each with
``"question"`` (the text), ``"relevant"`` (file names or paths; a single string is one file) and optionally
``"task"`` (a label the results are also broken down by). Other keys are ignored.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen3_rag.cli.errors import UsageError


@dataclass(frozen=True)
class Question:
    text: str
    relevant: tuple[str, ...]
    task: str | None = None
    where: str = ""
    """Where the question is in its file (``question 3``, ``line 3``), for messages."""


@dataclass(frozen=True)
class Matched:
    """A question with the indexed files its relevant entries name."""

    question: Question
    relevant: frozenset[str]
    """The indexed sources (absolute paths) the entries match: the files that count as relevant."""
    missing: tuple[str, ...] = ()
    """Entries that match no indexed file (not counted: reported)."""
    ambiguous: tuple[tuple[str, int], ...] = ()
    """Entries that match several indexed files, with how many (all of them count as relevant)."""


# ------------------------------------------------------------------------------------------------- reading


def load_questions(path: str | os.PathLike) -> list[Question]:
    """The questions of a JSON or JSONL file, or a UsageError that says what is wrong and where."""
    name = os.fspath(path)
    file = Path(path).expanduser()
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"no such questions file: {name}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or type(exc).__name__}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"{name} is a folder, not a questions file")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):  # a pipe: `qwen3-rag eval <(...)`
        raise UsageError(f"{name} is not a regular file")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or type(exc).__name__}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name} is not UTF-8 text (byte {exc.start})") from None
    return parse_questions(text, name)


def parse_questions(text: str, name: str = "the questions file") -> list[Question]:
    """Questions from the text of a JSON list, a single JSON object, or JSONL."""
    if not text.strip():
        raise UsageError(f"{name} is empty: expected a JSON list (or JSONL) of questions")
    items: list[tuple[str, Any]]
    if text.lstrip().startswith("["):
        data = _loads(text, name)
        if not isinstance(data, list):  # pragma: no cover - a text starting with "[" parses to a list or fails
            raise UsageError(f"{name}: expected a list of questions")
        items = [(f"question {i}", item) for i, item in enumerate(data, 1)]
    else:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            items = _jsonl(text, name)
        else:
            if not isinstance(data, dict):
                raise UsageError(f"{name}: expected a JSON list of questions, or one question object per line")
            items = [("question 1", data)]
    if not items:
        raise UsageError(f"{name} holds no questions")
    return [_question(item, where, name) for where, item in items]


def _loads(text: str, name: str, where: str = "") -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = where or f"line {exc.lineno} column {exc.colno}"
        raise UsageError(f"{name} is not valid JSON ({at}: {exc.msg})") from None
    except RecursionError:
        raise UsageError(f"{name} is not a questions file: its JSON is nested too deeply") from None


def _jsonl(text: str, name: str) -> list[tuple[str, Any]]:
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            items.append((f"line {number}", _loads(line, name, f"line {number}")))
    return items


def _question(item: Any, where: str, name: str) -> Question:
    at = f"{name}: {where}"
    if not isinstance(item, dict):
        raise UsageError(f'{at}: expected an object with "question" and "relevant", got {_kind(item)}')
    text = item.get("question")
    if not isinstance(text, str) or not text.strip():
        got = "nothing" if text is None else repr(text) if isinstance(text, str) else _kind(text)
        raise UsageError(f'{at}: "question" must be a non-empty string, got {got}')
    if "relevant" not in item or item["relevant"] is None:
        raise UsageError(f'{at} ({_short(text)}) has no "relevant" list: name the files that answer it')
    relevant = item["relevant"]
    if isinstance(relevant, str):
        relevant = [relevant]
    if not isinstance(relevant, list) or not all(isinstance(r, str) for r in relevant):
        raise UsageError(f'{at} ({_short(text)}): "relevant" must be a list of file names, got {_kind(relevant)}')
    entries = tuple(dict.fromkeys(normalise_entry(r) for r in relevant))
    if not entries or "" in entries:
        raise UsageError(f'{at} ({_short(text)}): "relevant" must name at least one file, and no empty ones')
    task = item.get("task")
    if task is not None and not isinstance(task, str):
        raise UsageError(f'{at} ({_short(text)}): "task" must be a string, got {_kind(task)}')
    return Question(text, entries, task or None, where)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def _short(text: str, width: int = 50) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 3] + "...")


# ------------------------------------------------------------------------------------------------ matching


def normalise_entry(entry: str) -> str:
    """A relevant entry as it is matched: trimmed, without leading ``./`` or trailing ``/``."""
    entry = entry.strip()
    while entry.startswith("./"):
        entry = entry[2:].lstrip("/")
    return entry.rstrip("/") if entry != "/" else entry


class SourceIndex:
    """Indexed sources by every ``/``-bounded tail of their path: ``a/b/c.md`` is found as ``c.md``, ``b/c.md``
    and ``a/b/c.md``, never as ``/c.md`` or ``b/c``."""

    def __init__(self, sources: Iterable[str]) -> None:
        self._by_tail: dict[str, set[str]] = {}
        for source in set(sources):
            parts = source.split("/")
            for start in range(len(parts)):
                tail = "/".join(parts[start:])
                if tail:
                    self._by_tail.setdefault(tail, set()).add(source)

    def match(self, entry: str) -> set[str]:
        """The sources equal to ``entry`` or ending with ``/`` + ``entry``."""
        return set(self._by_tail.get(normalise_entry(entry), ()))


def match_questions(questions: Sequence[Question], sources: Iterable[str]) -> list[Matched]:
    """Each question with the indexed files its entries name, and the entries that name none or several."""
    index = SourceIndex(sources)
    matched = []
    for question in questions:
        relevant: set[str] = set()
        missing, ambiguous = [], []
        for entry in question.relevant:
            files = index.match(entry)
            if not files:
                missing.append(entry)
            elif len(files) > 1:
                ambiguous.append((entry, len(files)))
            relevant |= files
        matched.append(Matched(question, frozenset(relevant), tuple(missing), tuple(ambiguous)))
    return matched
