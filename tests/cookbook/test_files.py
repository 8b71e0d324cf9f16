"""Finding files: FIFOs, sockets and devices are never opened, symbolic link loops and dangling links are named,
links to folders are not followed, names that are not UTF-8 survive, an unreadable folder does not stop the walk."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from qwen3_rag.cli.console import display_path, printable
from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.files import find_files

DATA = Path(__file__).resolve().parents[2] / "cookbook" / "data"


def names(found, root: Path) -> list[str]:
    return [p.relative_to(root.resolve()).as_posix() for p in found.files]


def reasons(found, root: Path) -> dict[str, str]:
    return {Path(os.path.relpath(p, root)).as_posix(): r for p, r in found.skipped}


def test_folders_yield_supported_files_sorted_without_hidden_ones(tmp_path):
    for name in ["b.md", "a.txt", "sub/c.rst", "page.html", "data.json", ".hidden.md", ".git/x.md", "img.png",
                 "src/app.py", "src/lib.rs", "report.pdf", "letter.docx"]:  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    found = find_files([tmp_path])
    assert names(found, tmp_path) == [
        "a.txt", "b.md", "letter.docx", "page.html", "report.pdf", "src/app.py", "src/lib.rs", "sub/c.rst",
    ]  # fmt: skip
    assert found.skipped == [] and found.folders == [tmp_path.resolve()]


def test_a_file_named_explicitly_is_read_whatever_its_suffix_and_listed_once(tmp_path):
    notes = tmp_path / "NOTES"
    notes.write_text("plain text")
    (tmp_path / "a.md").write_text("x")
    found = find_files([notes, tmp_path / "a.md", tmp_path])
    assert found.files == [notes.resolve(), (tmp_path / "a.md").resolve()]
    assert found.folders == [tmp_path.resolve()]


def test_the_sample_corpus_is_found_without_its_questions_file():
    found = {p.name for p in find_files([DATA]).files}
    assert len(found) >= 15
    assert "questions.json" not in found
    assert {Path(n).suffix for n in found} == {".md", ".txt"}


def test_a_missing_path_is_a_usage_error_and_an_empty_folder_finds_nothing(tmp_path):
    with pytest.raises(UsageError, match="no such file or folder"):
        find_files([tmp_path / "missing"])
    assert find_files([tmp_path]).files == []


def test_fifos_sockets_and_devices_are_skipped_without_being_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.txt")  # opening it for reading would block for ever
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock.md"))
    try:
        (tmp_path / "real.md").write_text("x")
        found = find_files([tmp_path, "/dev/null"])
    finally:
        server.close()
    assert names(found, tmp_path) == ["real.md"]
    assert reasons(found, tmp_path) == {
        "pipe.txt": "a FIFO, not a regular file",
        "sock.md": "a socket, not a regular file",
        Path(os.path.relpath("/dev/null", tmp_path)).as_posix(): "a device, not a regular file",
    }


def test_symlink_loops_and_dangling_links_are_named_and_links_to_folders_not_followed(tmp_path):
    (tmp_path / "real.md").write_text("x")
    (tmp_path / "alias.md").symlink_to(tmp_path / "real.md")
    (tmp_path / "other.md").symlink_to(tmp_path / "elsewhere.md")  # points at nothing
    (tmp_path / "a.md").symlink_to(tmp_path / "b.md")
    (tmp_path / "b.md").symlink_to(tmp_path / "a.md")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to(tmp_path)  # a loop back to the top
    found = find_files([tmp_path, tmp_path / "a.md"])
    assert names(found, tmp_path) == ["real.md"]  # the link to it is the same file, listed once
    assert reasons(found, tmp_path) == {
        "a.md": "symbolic link loop",
        "b.md": "symbolic link loop",
        "other.md": f"dangling symbolic link (to {tmp_path / 'elsewhere.md'})",
        "sub/up": "a symbolic link to a folder, not followed (name it to index it)",
    }


def test_a_name_that_is_not_utf8_is_found_and_printable(tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9 \xff.md"
    with open(raw, "wb") as f:
        f.write(b"coffee")
    [path] = find_files([tmp_path]).files
    assert os.fsencode(path) == raw
    shown = printable(path)
    assert shown.endswith("/caf\\xe9 \\xff.md")
    shown.encode("utf-8")  # valid UTF-8: printable and storable
    assert display_path(path).encode("utf-8")


def test_a_folder_that_cannot_be_listed_is_reported_and_the_walk_goes_on(tmp_path, monkeypatch):
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "a.md").write_text("x")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "b.md").write_text("x")
    real_scandir = os.scandir

    def scandir(path="."):  # root ignores permission bits: refuse the listing the way the kernel would
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = find_files([tmp_path])
    assert names(found, tmp_path) == ["open/a.md"]
    assert reasons(found, tmp_path) == {"locked": "folder cannot be read (Permission denied)"}
