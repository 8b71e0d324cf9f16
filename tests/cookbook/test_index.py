"""``qwen3-rag index`` on real collections, in process: PDFs and Word files with their pages in search and ask, the
index mirroring its folders (pruning, renames), batched writes, progress inside a large file, hostile entries."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import chromadb
import pytest
from chromadb.config import Settings

from qwen3_rag.cli import answer, indexing
from tests.cookbook.documents import CHINESE, JAPANESE, THAI, make_docx, make_pdf
from tests.cookbook.spies import count_document_embeddings

ENGLISH = "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the chloroplasts."


def held(db: Path) -> dict[str, list[dict]]:
    """source file name -> the metadata of its chunks, sorted by chunk number (a fresh client, closed after)."""
    with chromadb.PersistentClient(path=str(db), settings=Settings(anonymized_telemetry=False)) as client:
        got = client.get_collection("qwen3_rag").get(include=["metadatas"])
    out: dict[str, list[dict]] = {}
    for meta in got["metadatas"]:
        out.setdefault(Path(meta["source"]).name, []).append(meta)
    return {name: sorted(metas, key=lambda m: m["chunk"]) for name, metas in out.items()}


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A folder of real documents: a 3-page PDF (page 2 a scan), a Word file with a table, Chinese, Japanese and
    Thai text, a Python file."""
    root = tmp_path / "library"
    root.mkdir()
    make_pdf(
        root / "report.pdf", [ENGLISH * 3, None, CHINESE + "\n" + JAPANESE + " " + ENGLISH * 3], title="Annual report"
    )
    make_docx(root / "notes.docx", ["# Field notes", THAI, [["plant", "light"], ["fern", "shade"]]])
    (root / "tool.py").write_text("def area(r):\n    return 3.14159 * r * r\n", encoding="utf-8")
    return root


# ----------------------------------------------------------------------------------------------- provenance


def test_pdf_chunks_record_their_pages_and_offsets(qwen3_rag, library, cli_env):
    result = qwen3_rag("index", library, "--chunk-size", "32", "--chunk-overlap", "0")
    assert result.code == 0, result.err
    assert "report.pdf: page 2 of 3 without a text layer (scanned?) not indexed" in result.err
    pdf = held(cli_env)["report.pdf"]
    assert {m["page"] for m in pdf} == {1, 3}  # page 2 has no text
    assert all(m["title"] == "Annual report" and m["page_end"] >= m["page"] for m in pdf)
    assert all(0 <= m["start"] < m["end"] for m in pdf)
    assert [m["start"] for m in pdf] == sorted(m["start"] for m in pdf)
    code = held(cli_env)["tool.py"]
    assert [(m["line"], m["line_end"]) for m in code] == [(1, 2)] and "page" not in code[0]
    assert all("page" not in m and "line" not in m for m in held(cli_env)["notes.docx"])


def test_search_prints_the_page_and_json_carries_page_or_null(qwen3_rag, library):
    assert qwen3_rag("index", library, "--chunk-size", "4000").code == 0  # one chunk per file
    found = qwen3_rag("search", "where does sugar come from?", "--top-n", "3", "--json")
    assert found.code == 0, found.err
    results = {Path(r["source"]).name: r for r in json.loads(found.out)["results"]}
    assert set(results) == {"report.pdf", "notes.docx", "tool.py"}
    assert results["report.pdf"]["page"] == 1
    assert results["report.pdf"]["position"]["page_end"] == 3  # one chunk: pages 1 to 3
    assert results["notes.docx"]["page"] is None and results["tool.py"]["page"] is None
    code = (library / "tool.py").read_text(encoding="utf-8").rstrip()
    assert results["tool.py"]["position"] == {"start": 0, "end": len(code), "line": 1, "line_end": 2}
    text = qwen3_rag("search", "where does sugar come from?", "--top-n", "3")
    lines = [line for line in text.out.splitlines() if line.startswith("[")]
    assert any("report.pdf pp. 1-3  chunk 0  score" in line for line in lines)
    assert any("tool.py:1-2  chunk 0  score" in line for line in lines)


def two_pages(qwen3_rag, folder: Path) -> Path:
    """A two-page PDF indexed in small chunks, so that some chunks lie on one page only."""
    pdf = make_pdf(folder / "two.pdf", [ENGLISH + " " + ENGLISH, CHINESE])
    assert qwen3_rag("index", pdf, "--chunk-size", "32", "--chunk-overlap", "0").code == 0
    return pdf


def test_a_one_page_chunk_is_printed_as_p_n(qwen3_rag, tmp_path, cli_env):
    two_pages(qwen3_rag, tmp_path)
    assert {m["page"] for m in held(cli_env)["two.pdf"]} == {1, 2}
    found = qwen3_rag("search", "太阳", "--no-rerank", "--top-k", "50", "--top-n", "50")
    assert "two.pdf p. 1  chunk 0  similarity" in found.out and "two.pdf p. 2  chunk " in found.out


def test_ask_cites_pages_to_the_model_and_the_reader(qwen3_rag, tmp_path, monkeypatch):
    two_pages(qwen3_rag, tmp_path)
    prompts = []
    monkeypatch.setattr(answer.ChatModel, "generate", lambda self, messages, **kw: prompts.append(messages) or "[1]")
    answered = qwen3_rag("ask", "What is the sun?", "--top-k", "50", "--top-n", "50")
    assert answered.code == 0, answered.err
    user = prompts[0][1]["content"]
    assert "two.pdf p. 1, chunk 0)\n" in user and "two.pdf p. 2, chunk " in user
    sources = answered.out.split("Sources:\n")[1]
    assert "two.pdf p. 1, chunk 0  (score" in sources and "two.pdf p. 2, chunk " in sources


# -------------------------------------------------------------------------------------- mirroring folders


def test_reindexing_a_folder_removes_files_that_are_gone_and_leaves_other_folders(qwen3_rag, corpus, tmp_path, cli_env):
    other = tmp_path / "other"
    other.mkdir()
    (other / "moon.md").write_text("The Moon orbits the Earth.", encoding="utf-8")
    assert qwen3_rag("index", corpus).code == 0
    assert qwen3_rag("index", other).code == 0
    (corpus / "bread.txt").unlink()
    shutil.rmtree(corpus / "notes")
    again = qwen3_rag("index", corpus)
    assert again.code == 0, again.err
    assert f"removed {(corpus / 'bread.txt').resolve()} (1 chunks): no longer in the folder" in again.err
    assert "tides.md (1 chunks): no longer in the folder" in again.err
    assert "Indexed 0 files (0 new chunks); 1 unchanged; 0 skipped; 2 removed." in again.err
    assert set(held(cli_env)) == {"stars.md", "moon.md"}  # moon.md was indexed from another folder
    found = json.loads(qwen3_rag("search", "bread", "--no-rerank", "--top-n", "2", "--json").out)["results"]
    assert {Path(r["source"]).name for r in found} == {"stars.md", "moon.md"}


def test_a_renamed_file_is_kept_once_and_not_embedded_again(qwen3_rag, corpus, cli_env, monkeypatch):
    assert qwen3_rag("index", corpus).code == 0
    before = held(cli_env)["bread.txt"]
    (corpus / "bread.txt").rename(corpus / "notes" / "baking.txt")
    calls = count_document_embeddings(monkeypatch)
    again = qwen3_rag("index", corpus)
    assert again.code == 0, again.err
    assert "Indexed 1 files (1 new chunks; 1 vectors reused from identical files)" in again.err
    assert "1 removed" in again.err
    assert calls == []  # the vector was copied from the old path's chunk
    after = held(cli_env)
    assert "bread.txt" not in after
    assert [m["file_version"] for m in after["baking.txt"]] == [m["file_version"] for m in before]
    with chromadb.PersistentClient(path=str(cli_env), settings=Settings(anonymized_telemetry=False)) as client:
        assert client.get_collection("qwen3_rag").count() == 3


def test_no_prune_keeps_the_chunks_of_files_that_are_gone(qwen3_rag, corpus, cli_env):
    assert qwen3_rag("index", corpus).code == 0
    (corpus / "bread.txt").unlink()
    kept = qwen3_rag("index", corpus, "--no-prune")
    assert kept.code == 0
    assert "0 removed" in kept.err
    assert set(held(cli_env)) == {"stars.md", "bread.txt", "tides.md"}


def test_a_file_that_cannot_be_read_now_keeps_its_chunks_and_an_emptied_one_loses_them(
    qwen3_rag, corpus, cli_env, monkeypatch
):
    assert qwen3_rag("index", corpus).code == 0
    (corpus / "bread.txt").write_text("  \n", encoding="utf-8")
    original = Path.read_bytes

    def read_bytes(self):
        if self.name == "stars.md":
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    again = qwen3_rag("index", corpus)
    assert again.code == 0, again.err
    assert "stars.md: unreadable (Permission denied) (its 1 chunks from an earlier run are kept)" in again.err
    assert "bread.txt: empty file" in again.err
    assert set(held(cli_env)) == {"stars.md", "tides.md"}


def test_a_folder_emptied_of_documents_empties_its_part_of_the_index(qwen3_rag, corpus, cli_env):
    assert qwen3_rag("index", corpus).code == 0
    for path in [corpus / "stars.md", corpus / "bread.txt", corpus / "notes" / "tides.md"]:
        path.unlink()
    again = qwen3_rag("index", corpus)
    assert again.code == 0, again.err
    assert "3 removed" in again.err and "holds 0 chunks" in again.err


# ---------------------------------------------------------------------------------------------------- speed


def test_the_chunks_of_many_files_are_written_in_one_upsert(qwen3_rag, tmp_path, monkeypatch):
    from chromadb.api.models.Collection import Collection

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(40):
        (folder / f"doc{i:02}.txt").write_text(f"Document number {i} talks about topic {i % 7}.", encoding="utf-8")
    upserts = []
    original = Collection.upsert

    def spy(self, *args, **kwargs):
        upserts.append(len(kwargs["ids"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "upsert", spy)
    calls = count_document_embeddings(monkeypatch)
    result = qwen3_rag("index", folder)
    assert result.code == 0, result.err
    assert upserts == [40]
    assert calls == [1, 40]  # the new index's fingerprint probe, then every chunk in one call


class FakeCollection:
    """Records what :func:`indexing.write` stores."""

    def __init__(self):
        self.upserts: list[list[str]] = []

    def upsert(self, ids, embeddings, documents, metadatas):
        assert len(ids) == len(embeddings) == len(documents) == len(metadatas)
        self.upserts.append(list(ids))

    def delete(self, ids):
        raise AssertionError("nothing is stale")


def planned_file(name: str, n: int) -> indexing.PlannedFile:
    from qwen3_rag.cli.chunking import Chunk

    chunks = [Chunk(i, f"{name} chunk {i} " + "word " * (i % 5), 0, 1) for i in range(n)]
    ids = [f"{name}-{i}" for i in range(n)]
    return indexing.PlannedFile(Path(name), name, name, "v", chunks, [{}] * n, ids, list(range(n)), [])


def test_a_large_file_reports_progress_inside_it_and_files_count_only_once_stored():
    steps: list[tuple[int, int]] = []
    embedded: list[int] = []
    collection = FakeCollection()
    report = indexing.IndexReport()
    indexing.write(
        collection,
        lambda texts: embedded.append(len(texts)) or [[0.0]] * len(texts),
        [planned_file("big", 300), planned_file("small", 2)],
        report=report,
        progress=lambda n: steps.append((n, len(report.indexed))),
        write_chunks=100,
        embed_chunks=128,
    )
    assert steps == [(128, 0), (128, 0), (44, 0), (2, 1)]  # the bar moves thrice before the big file is stored
    assert embedded == [128, 128, 44, 2]
    assert [p.name for p, _ in report.indexed] == ["big", "small"]
    assert [len(ids) for ids in collection.upserts] == [300, 2]


def test_many_small_files_share_upserts_and_a_slow_model_still_stores_every_few_seconds():
    files = [planned_file(f"f{i}", 1) for i in range(10)]
    fast = FakeCollection()
    indexing.write(fast, lambda texts: [[0.0]] * len(texts), files, report=indexing.IndexReport(), embed_chunks=2)
    assert [len(ids) for ids in fast.upserts] == [10]  # one upsert for all ten files

    now = [0.0]

    def slow_embed(texts):
        now[0] += 4.0  # four seconds per embedding call
        return [[0.0]] * len(texts)

    slow = FakeCollection()
    report = indexing.IndexReport()
    indexing.write(slow, slow_embed, files, report=report, embed_chunks=2, write_seconds=10.0, clock=lambda: now[0])
    assert [len(ids) for ids in slow.upserts] == [6, 4]  # stored after 12 s of embedding, then the rest
    assert len(report.indexed) == 10


def test_every_write_to_the_index_happens_under_the_write_lock(qwen3_rag, corpus, cli_env, monkeypatch):
    from chromadb.api.models.Collection import Collection
    from filelock import ReadWriteLock, Timeout

    from qwen3_rag.cli.lock import ACCESS_LOCK

    writes: list[tuple[str, bool]] = []

    def guarded(name: str) -> None:
        original = getattr(Collection, name)

        def spy(self, *args, **kwargs):
            probe = ReadWriteLock(cli_env / ACCESS_LOCK, is_singleton=False)
            try:
                probe.acquire_read(timeout=0)  # what a search would try
            except Timeout:
                writes.append((name, True))
            else:
                probe.release()
                writes.append((name, False))
            finally:
                probe.close()
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Collection, name, spy)

    for name in ["add", "upsert", "update", "delete"]:
        guarded(name)
    assert qwen3_rag("index", corpus).code == 0
    (corpus / "bread.txt").write_text("Rye bread is dense.", encoding="utf-8")  # a stale chunk to delete
    (corpus / "stars.md").unlink()  # a file to prune
    assert qwen3_rag("index", corpus).code == 0
    assert [name for name, _ in writes] == ["upsert", "upsert", "delete", "delete"]
    assert all(locked for _, locked in writes), writes


# ----------------------------------------------------------------------------------------- hostile folders


def test_fifos_loops_dangling_links_and_non_utf8_names_neither_hang_nor_abort(qwen3_rag, corpus, cli_env):
    os.mkfifo(corpus / "pipe.md")
    (corpus / "loop.md").symlink_to(corpus / "loop.md")
    (corpus / "gone.md").symlink_to(corpus / "nowhere.md")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(corpus / "sock.txt"))
    raw = os.fsencode(corpus) + b"/caf\xe9.md"
    with open(raw, "wb") as f:
        f.write(b"Espresso is brewed under pressure.")
    try:
        result = qwen3_rag("index", corpus)
    finally:
        server.close()
    assert result.code == 0, result.err
    err = result.err.replace(f"{corpus.resolve()}/", "").replace(f"{corpus}/", "")
    assert "skipped pipe.md: a FIFO, not a regular file" in err
    assert "skipped sock.txt: a socket, not a regular file" in err
    assert "skipped loop.md: symbolic link loop" in err
    assert "skipped gone.md: dangling symbolic link" in err
    assert "caf\\xe9.md: the name is not valid UTF-8: indexed as" in err
    assert "Traceback" not in err
    sources = {m["source"] for metas in held(cli_env).values() for m in metas}
    assert f"{corpus.resolve()}/caf\\xe9.md" in sources
    found = qwen3_rag("search", "espresso", "--no-rerank", "--top-n", "4", "--json")
    assert found.code == 0 and "caf\\\\xe9.md" in found.out


def test_names_a_terminal_cannot_show_are_printed_escaped_not_raised(tmp_path, cli_env, monkeypatch):
    import io
    import sys

    from qwen3_rag.cli import main

    folder = tmp_path / "报告"
    folder.mkdir()
    (folder / "年度报告.md").write_text(CHINESE, encoding="utf-8")
    os.mkfifo(folder / "管道.md")  # a warning that prints the name
    err = io.TextIOWrapper(io.BytesIO(), encoding="ascii")  # a terminal that only knows ASCII
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["index", str(folder)]) == 0
    err.flush()
    printed = err.buffer.getvalue().decode("ascii")
    assert "\\u7ba1\\u9053.md: a FIFO, not a regular file" in printed
    assert "Indexed 1 files" in printed


def test_unsegmented_and_cjk_text_is_indexed_and_found(qwen3_rag, tmp_path, cli_env):
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "zh.txt").write_text(CHINESE, encoding="utf-8")
    (folder / "ja.md").write_text(JAPANESE, encoding="utf-8")
    (folder / "th.txt").write_text(THAI, encoding="utf-8")
    (folder / "blob.txt").write_text("x" * 3000, encoding="utf-8")
    assert qwen3_rag("index", folder).code == 0
    stored = held(cli_env)
    assert set(stored) == {"zh.txt", "ja.md", "th.txt", "blob.txt"}
    with chromadb.PersistentClient(path=str(cli_env), settings=Settings(anonymized_telemetry=False)) as client:
        got = client.get_collection("qwen3_rag").get(include=["documents", "metadatas"])
    for text, meta in zip(got["documents"], got["metadatas"], strict=True):
        source = Path(meta["source"]).read_text(encoding="utf-8")
        assert source[meta["start"] : meta["end"]] == text  # the offsets name the chunk's text in the file
