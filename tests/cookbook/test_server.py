"""``qwen3-rag`` on a real Chroma server (``--db http://127.0.0.1:PORT``, ``chroma run`` from the chromadb wheel),
and the database cases refused in one line before any model loads (a folder under a file, a damaged or foreign
folder, a read-only folder, a name Chroma refuses, a failed first run).

One server per module (``chroma_server``); each test gets its own database on it (``server_db``), selected the way
chromadb's own clients select one: ``CHROMA_DATABASE``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings

from qwen3_rag import Qwen3Embedder
from qwen3_rag.cli.fingerprint import Fingerprint, FingerprintMismatch
from tests.cookbook import chroma_server as server_fixtures
from tests.cookbook.chroma_server import free_port, server_client, serving
from tests.cookbook.spies import count_document_embeddings
from tests.cookbook.test_processes import Run, write_corpus

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])  # the Chroma server, on loopback only (pytest-socket)
chroma_server = server_fixtures.chroma_server  # the fixtures, used here
server_db = server_fixtures.server_db


def server_collection(server, name: str = "qwen3_rag"):
    return server_client(server, os.environ["CHROMA_DATABASE"]).get_collection(name)


def chunks_by_file(collection) -> dict[str, set[str]]:
    held = collection.get(include=["metadatas"])
    out: dict[str, set[str]] = {}
    for id_, meta in zip(held["ids"], held["metadatas"], strict=True):
        out.setdefault(Path(meta["source"]).name, set()).add(id_)
    return out


def one_line(err: str) -> str:
    """The CLI's error line: exactly one, and no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to build an embedder fails the test: what is checked here must be refused before that."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("a model was loaded before the problem was reported")

    monkeypatch.setattr(Qwen3Embedder, "__init__", refuse)


# ------------------------------------------------------------------------------------------ on a server


def test_index_search_and_ask_work_against_a_chroma_server(qwen3_rag, corpus, server_db, chroma_server, cli_env):
    indexed = qwen3_rag("index", corpus)
    assert indexed.code == 0, indexed.err
    assert "Indexed 3 files (3 new chunks)" in indexed.err
    assert f"The index at {server_db} (collection 'qwen3_rag') holds 3 chunks." in indexed.err

    collection = server_collection(chroma_server)
    assert collection.count() == 3
    assert Fingerprint.from_metadata(collection.metadata).dimensions == 64  # the fingerprint lives on the server

    found = qwen3_rag("search", "Why does the sun shine?", "--top-n", "2")
    assert found.code == 0, found.err
    assert len([line for line in found.out.splitlines() if line.startswith("[")]) == 2
    as_json = qwen3_rag("search", "How is bread made?", "--top-n", "3", "--json")
    assert as_json.code == 0, as_json.err
    results = json.loads(as_json.out)["results"]
    assert len(results) == 3 and {Path(r["source"]).name for r in results} == {"stars.md", "bread.txt", "tides.md"}
    answered = qwen3_rag("ask", "How is bread made?", "--top-n", "2", "--max-new-tokens", "4", "--json")
    assert answered.code == 0, answered.err
    assert [s["rank"] for s in json.loads(answered.out)["sources"]] == [1, 2]
    questions = corpus.parent / "questions.json"
    questions.write_text(json.dumps([{"question": "How is bread made?", "relevant": ["bread.txt"]}]), "utf-8")
    measured = qwen3_rag("eval", questions, "--no-rerank", "--json")
    assert measured.code == 0, measured.err
    assert json.loads(measured.out)["questions"] == 1
    assert not cli_env.exists()  # nothing was written locally: no folder, no lock files


def test_reindexing_replacing_and_pruning_on_a_server(qwen3_rag, corpus, server_db, chroma_server, monkeypatch):
    assert qwen3_rag("index", corpus).code == 0
    before = chunks_by_file(server_collection(chroma_server))
    calls = count_document_embeddings(monkeypatch)
    again = qwen3_rag("index", corpus)
    assert again.code == 0, again.err
    assert "Indexed 0 files (0 new chunks); 3 unchanged" in again.err
    assert calls == []  # idempotent: nothing embedded

    (corpus / "bread.txt").write_text("Rye bread is dense and dark. It keeps for a week.\n", encoding="utf-8")
    (corpus / "stars.md").unlink()
    changed = qwen3_rag("index", corpus)
    assert changed.code == 0, changed.err
    assert "Indexed 1 files (1 new chunks, 1 of them replacing an older version); 1 unchanged" in changed.err
    assert "removed" in changed.err and "stars.md" in changed.err
    after = chunks_by_file(server_collection(chroma_server))
    assert set(after) == {"bread.txt", "tides.md"}
    assert after["tides.md"] == before["tides.md"] and after["bread.txt"].isdisjoint(before["bread.txt"])


def test_the_fingerprint_is_enforced_on_a_server(qwen3_rag, corpus, server_db, chroma_server):
    assert qwen3_rag("index", corpus).code == 0
    assert server_collection(chroma_server).count() == 3
    refused = qwen3_rag("search", "sun", "--dimensions", "32")
    assert refused.code == 2
    assert f"the index at {server_db} (collection 'qwen3_rag') was built with" in one_line(refused.err)
    other = qwen3_rag("index", corpus, "--instruction", "Find recipes")
    assert other.code == 2 and "asks for instruction 'Find recipes'" in one_line(other.err)


def test_an_unreachable_server_is_one_line_naming_the_url(qwen3_rag, corpus, cli_env, no_model_loads):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["index", corpus], ["search", "sun"], ["ask", "sun"]):
        result = qwen3_rag(*args, "--db", url)
        assert result.code == 2, result.err
        assert f"cannot reach the Chroma server at {url}" in one_line(result.err)


def test_a_server_that_refuses_is_one_line_naming_the_url(qwen3_rag, corpus, server_db, monkeypatch, no_model_loads):
    monkeypatch.setenv("CHROMA_TENANT", "no_such_tenant")
    for args in (["index", corpus], ["search", "sun"]):
        result = qwen3_rag(*args)
        assert result.code == 2, result.err
        assert f"the Chroma server at {server_db} has no tenant 'no_such_tenant'" in one_line(result.err)
    monkeypatch.delenv("CHROMA_TENANT")
    with_password = server_db.replace("http://", "http://admin:secret@")
    result = qwen3_rag("search", "sun", "--db", with_password)
    assert result.code == 2 and "not in the URL" in one_line(result.err) and "secret" not in result.err


def test_a_server_that_goes_away_mid_run_is_one_line(tmp_path, cli_env):
    from qwen3_rag.cli import store
    from qwen3_rag.cli.errors import UsageError

    with serving(tmp_path / "data", tmp_path / "short-lived.log") as server:  # noqa: SIM117
        with pytest.raises(UsageError, match=f"lost the Chroma server at {server.url}"):
            with store.connected(server.url, create=False) as client:  # what search and ask read through
                server.stop()
                client.list_collections()


def test_moving_an_index_to_a_server_is_serving_its_folder(qwen3_rag, corpus, cli_env, tmp_path):
    assert qwen3_rag("index", corpus).code == 0
    query = ["search", "Why do coasts see two tides?", "--top-k", "3", "--top-n", "3", "--json"]
    embedded = qwen3_rag(*query)
    assert embedded.code == 0, embedded.err
    with serving(cli_env, tmp_path / "migrated.log") as server:  # `chroma run --path FOLDER`: the one step
        served = qwen3_rag(*query, "--db", server.url)
    assert served.code == 0, served.err
    local, remote = json.loads(embedded.out)["results"], json.loads(served.out)["results"]
    assert [(r["id"], r["source"], r["text"]) for r in remote] == [(r["id"], r["source"], r["text"]) for r in local]
    for a, b in zip(local, remote, strict=True):
        assert b["similarity"] == pytest.approx(a["similarity"], abs=1e-5)
        assert b["rerank_score"] == pytest.approx(a["rerank_score"], abs=1e-5)


def test_two_index_runs_at_once_on_one_server_both_complete(chroma_server, server_db, tmp_path, tiny_models_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3_RAG_")}
    env.update(tiny_models_env, QWEN3_RAG_DB=server_db)
    first = Run(["index", write_corpus(tmp_path / "planets", 150, "planet")], env)
    first.wait_for("150 files: 150 to index")  # its collection was looked up: none yet
    first.pause()
    try:  # the second run creates the collection and writes while the first one is stopped
        second = Run(["index", write_corpus(tmp_path / "rivers", 150, "river")], env)
        assert second.finish() == 0, second.err
    finally:
        first.resume()
    assert first.finish() == 0, first.err
    assert "Indexed 150 files (150 new chunks)" in first.err and "Indexed 150 files (150 new chunks)" in second.err
    assert "Traceback" not in first.err + second.err
    collection = server_collection(chroma_server)
    stored = collection.get(include=["embeddings", "metadatas"])
    assert len(stored["ids"]) == collection.count() == 300
    # Every chunk reachable by search: a query with its own vector finds it. (One query for all 300 at once is
    # approximate in HNSW: it missed one chunk in 1 of ~20 runs of this test, so it is not the check.)
    found = collection.query(query_embeddings=stored["embeddings"], n_results=3, include=[])["ids"]
    assert [i for i, hits in zip(stored["ids"], found, strict=True) if i not in hits] == []
    assert {Path(m["source"]).parent.name for m in stored["metadatas"]} == {"planets", "rivers"}


def test_a_collection_created_meanwhile_is_used_if_it_matches_and_refused_if_not(
    chroma_server, server_db, tiny_embedding_path
):
    from qwen3_rag.cli import store

    embedder = Qwen3Embedder(tiny_embedding_path, device="cpu")
    ours = Fingerprint(str(tiny_embedding_path), 64, "web search", True, (0.1, 0.2))
    client = server_client(chroma_server, os.environ["CHROMA_DATABASE"])
    first, created = store.create_collection(client, "shared", ours, embedder)
    again, created_again = store.create_collection(client, "shared", ours, embedder)  # a concurrent first run
    assert (created, created_again) == (True, False) and again.id == first.id
    with pytest.raises(FingerprintMismatch, match="just created by another run"):
        store.create_collection(client, "shared", Fingerprint(ours.model, 32, "web search"), embedder)


def test_a_failed_first_run_leaves_no_collection_on_a_server(qwen3_rag, corpus, server_db, chroma_server, monkeypatch):
    original = Qwen3Embedder.embed_documents
    calls = []

    def interrupted(self, texts, **kwargs):
        calls.append(len(texts))
        if len(calls) > 1:  # after the fingerprint probe: the first chunks
            raise KeyboardInterrupt
        return original(self, texts, **kwargs)

    monkeypatch.setattr(Qwen3Embedder, "embed_documents", interrupted)
    assert qwen3_rag("index", corpus).code == 130
    assert server_client(chroma_server, os.environ["CHROMA_DATABASE"]).list_collections() == []


# ------------------------------------------------------------------------- the folder: refused in one line


def test_a_database_under_a_file_is_refused(qwen3_rag, corpus, tmp_path, no_model_loads):
    (tmp_path / "notes.txt").write_text("a file", encoding="utf-8")
    db = tmp_path / "notes.txt" / "db"
    for args in (["index", corpus], ["search", "sun"]):
        result = qwen3_rag(*args, "--db", db)
        assert result.code == 2
        line = one_line(result.err)
        assert str(tmp_path / "notes.txt") in line and ("is a file" in line or "no index at" in line)


def test_a_damaged_or_truncated_database_is_one_line(qwen3_rag, corpus, cli_env, tmp_path, monkeypatch):
    assert qwen3_rag("index", corpus).code == 0
    sqlite = cli_env / "chroma.sqlite3"
    sqlite.write_bytes(sqlite.read_bytes()[: sqlite.stat().st_size // 2])  # truncated
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "chroma.sqlite3").write_bytes(os.urandom(8192))  # not a database at all
    monkeypatch.setattr(Qwen3Embedder, "__init__", lambda *a, **k: pytest.fail("a model was loaded"))
    for db in (cli_env, garbage):
        for args in (["search", "sun"], ["index", corpus]):
            result = qwen3_rag(*args, "--db", db)
            assert result.code == 2, result.err
            assert f"{db} is not a readable Chroma database" in one_line(result.err)


def test_a_folder_that_is_not_a_chroma_database_is_not_written_into(qwen3_rag, corpus, tmp_path, no_model_loads):
    folder = tmp_path / "my-documents"
    folder.mkdir()
    (folder / "thesis.md").write_text("# My thesis", encoding="utf-8")
    result = qwen3_rag("index", corpus, "--db", folder)
    assert result.code == 2
    assert "holds other files (thesis.md) but no Chroma database" in one_line(result.err)
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.md"]  # no database, no lock file


@pytest.mark.parametrize("name", ["my docs", "a", "ab..c", "10.0.0.1"])
def test_a_collection_name_chroma_refuses_is_refused_before_models_load(qwen3_rag, corpus, cli_env, name):
    assert qwen3_rag("index", corpus).code == 0
    for args in (["index", corpus], ["search", "sun"]):
        result = qwen3_rag(*args, "--collection", name)
        assert result.code == 2
        assert f"Chroma refuses the collection name {name!r}" in one_line(result.err)


def test_a_failed_first_run_leaves_no_empty_collection(qwen3_rag, corpus, cli_env, tmp_path, monkeypatch):
    def collections(db: Path) -> list[str]:
        if not (db / "chroma.sqlite3").exists():
            return []
        with chromadb.PersistentClient(path=str(db), settings=Settings(anonymized_telemetry=False)) as client:
            return [c.name for c in client.list_collections()]

    assert qwen3_rag("index", corpus, "--embedding-model", tmp_path / "no-model").code == 1  # cannot load
    assert qwen3_rag("index", corpus, "--dimensions", "7").code == 2  # an invalid size, found after loading
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    assert qwen3_rag("index", tmp_path / "empty.txt").code == 2  # nothing indexable
    assert collections(cli_env) == []
    assert not (cli_env / "chroma.sqlite3").exists()  # not even a database was created

    from chromadb.api.models.Collection import Collection

    def interrupted(self, *args, **kwargs):  # Ctrl-C during the very first write
        raise KeyboardInterrupt

    monkeypatch.setattr(Collection, "upsert", interrupted)
    assert qwen3_rag("index", corpus).code == 130
    assert collections(cli_env) == []
    monkeypatch.undo()


def _read_only(db: Path) -> list[str]:
    """A command prefix that runs a command with ``db`` read-only: for root (whom permission bits do not stop), a
    private mount namespace in which ``db`` is a read-only bind mount; for anyone else, ``chmod -w`` suffices."""
    if os.geteuid() != 0:
        for path in [db, *db.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        return []
    if shutil.which("unshare") is None:
        pytest.fail("`unshare` (util-linux) is needed to make a read-only folder for root")
    script = f'mount --bind "{db}" "{db}" && mount -o remount,bind,ro "{db}" && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, "sh"]


def test_a_read_only_database_can_be_searched_and_not_indexed(qwen3_rag, corpus, cli_env, tiny_models_env):
    assert qwen3_rag("index", corpus).code == 0
    query = ["search", "Why does the sun shine?", "--no-rerank", "--json", "--db", str(cli_env)]
    before = qwen3_rag(*query)
    cli = str(Path(sys.executable).with_name("qwen3-rag"))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("QWEN3_RAG_")}, **tiny_models_env}
    prefix = _read_only(cli_env)
    try:
        probe = subprocess.run([*prefix, "touch", str(cli_env / "probe")], capture_output=True, text=True)
        assert probe.returncode != 0, "the folder is not read-only"
        searched = subprocess.run([*prefix, cli, *query], capture_output=True, text=True, env=env, timeout=300)
        indexed = subprocess.run([*prefix, cli, "index", str(corpus), "--db", str(cli_env)], capture_output=True,
                                 text=True, env=env, timeout=300)  # fmt: skip
    finally:
        if not prefix:
            for path in [cli_env, *cli_env.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)
    assert searched.returncode == 0, searched.stderr
    assert json.loads(searched.stdout)["results"] == json.loads(before.out)["results"]
    assert "Traceback" not in searched.stderr
    assert indexed.returncode == 2
    assert f"cannot write to the database folder {cli_env}" in one_line(indexed.stderr)


def test_vectors_on_a_server_equal_the_embedded_ones(qwen3_rag, corpus, server_db, chroma_server, cli_env, tmp_path):
    assert qwen3_rag("index", corpus).code == 0
    assert qwen3_rag("index", corpus, "--db", tmp_path / "local").code == 0
    remote = server_collection(chroma_server).get(include=["embeddings"])
    with chromadb.PersistentClient(path=str(tmp_path / "local"), settings=Settings(anonymized_telemetry=False)) as c:
        local = c.get_collection("qwen3_rag").get(include=["embeddings"])
    assert sorted(remote["ids"]) == sorted(local["ids"])
    by_id = dict(zip(local["ids"], local["embeddings"], strict=True))
    for id_, vector in zip(remote["ids"], remote["embeddings"], strict=True):
        np.testing.assert_allclose(vector, by_id[id_], atol=1e-6)


def test_the_server_guide_snippets_run_against_a_server(chroma_server, tiny_embedding_path, monkeypatch, tmp_path):
    guide = (Path(__file__).resolve().parents[2] / "docs" / "chroma-server.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", guide, flags=re.S)
    runnable = [b for b in blocks if "qwen3_rag.distributed" not in b]  # the Ray one: tests/scaleout/test_cli_ray.py
    assert len(runnable) == 3
    monkeypatch.chdir(tmp_path)
    for code in runnable:
        code = code.replace("port=8000", f"port={chroma_server.port}")
        code = code.replace('"Qwen/Qwen3-Embedding-0.6B"', repr(str(tiny_embedding_path)))
        exec(compile(code, "docs/chroma-server.md", "exec"), {"__name__": "guide"})
    names = {c.name for c in server_client(chroma_server).list_collections()}
    assert {"docs-python", "docs-langchain", "docs-llamaindex"} <= names
