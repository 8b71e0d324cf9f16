"""``qwen3-rag index / search / ask`` end to end, in process, against the tiny checkpoints selected through the
QWEN3_RAG_* environment variables (see conftest)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import chromadb
from chromadb.config import Settings

from qwen3_rag import testing
from qwen3_rag.cli import indexing
from qwen3_rag.cli.chunking import chunk_text
from qwen3_rag.embedder import Qwen3Embedder
from qwen3_rag.prompts import DEFAULT_INSTRUCTION
from tests.cookbook.spies import count_document_embeddings


def open_collection(db: Path):
    client = chromadb.PersistentClient(path=str(db), settings=Settings(anonymized_telemetry=False))
    return client.get_collection("qwen3_rag")


def chunks_by_file(db: Path) -> dict[str, set[str]]:
    held = open_collection(db).get(include=["metadatas"])
    out: dict[str, set[str]] = {}
    for id_, meta in zip(held["ids"], held["metadatas"], strict=True):
        out.setdefault(Path(meta["source"]).name, set()).add(id_)
    return out


# ---------------------------------------------------------------------------------------------- index + search


def test_index_then_search_prints_source_chunk_and_score(qwen3_rag, corpus, cli_env):
    indexed = qwen3_rag("index", corpus)
    assert indexed.code == 0, indexed.err
    assert "Indexed 3 files (3 new chunks)" in indexed.err
    assert "Embedding: 100%" in indexed.err  # the progress bar

    found = qwen3_rag("search", "Why does the sun shine?", "--top-n", "2")
    assert found.code == 0, found.err
    lines = [line for line in found.out.splitlines() if line.startswith("[")]
    assert len(lines) == 2
    assert lines[0].startswith("[1] ")
    assert "  chunk 0  score " in lines[0]
    assert ", similarity " in lines[0]
    assert any(name in found.out for name in ("stars.md", "bread.txt", "tides.md"))


def test_search_json_returns_top_n_reranked_results_best_first(qwen3_rag, corpus):
    assert qwen3_rag("index", corpus).code == 0
    found = qwen3_rag("search", "How is bread made?", "--top-n", "3", "--json")
    assert found.code == 0, found.err
    payload = json.loads(found.out)
    results = payload["results"]
    assert payload["reranked"] is True
    assert [r["rank"] for r in results] == [1, 2, 3]
    scores = [r["rerank_score"] for r in results]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert [r["score"] for r in results] == scores
    assert {Path(r["source"]).name for r in results} == {"stars.md", "bread.txt", "tides.md"}
    assert all(r["text"] and r["chunk"] == 0 for r in results)


def test_no_rerank_keeps_the_top_n_by_similarity(qwen3_rag, corpus):
    assert qwen3_rag("index", corpus).code == 0
    found = qwen3_rag("search", "tides and the moon", "--no-rerank", "--top-n", "2", "--json")
    results = json.loads(found.out)["results"]
    assert len(results) == 2
    assert all(r["rerank_score"] is None for r in results)
    similarities = [r["similarity"] for r in results]
    assert similarities == sorted(similarities, reverse=True)
    assert [r["score"] for r in results] == similarities


def test_reranking_only_reorders_the_top_k_retrieved(qwen3_rag, corpus):
    assert qwen3_rag("index", corpus).code == 0
    plain = json.loads(qwen3_rag("search", "bread", "--no-rerank", "--top-n", "2", "--json").out)["results"]
    reranked = json.loads(qwen3_rag("search", "bread", "--top-k", "2", "--top-n", "2", "--json").out)["results"]
    assert {r["id"] for r in reranked} == {r["id"] for r in plain}


def test_top_n_above_top_k_is_a_usage_error(qwen3_rag, corpus):
    assert qwen3_rag("index", corpus).code == 0
    result = qwen3_rag("search", "bread", "--top-k", "2", "--top-n", "3")
    assert result.code == 2
    assert "--top-n (3) cannot exceed --top-k (2)" in result.err


# ------------------------------------------------------------------------------------ incremental indexing


def test_reindexing_unchanged_files_adds_and_embeds_nothing(qwen3_rag, corpus, cli_env, monkeypatch):
    assert qwen3_rag("index", corpus).code == 0
    before = chunks_by_file(cli_env)
    calls = count_document_embeddings(monkeypatch)
    again = qwen3_rag("index", corpus)
    assert again.code == 0
    assert "Indexed 0 files (0 new chunks); 3 unchanged" in again.err
    assert calls == []
    assert chunks_by_file(cli_env) == before


def test_a_changed_file_replaces_only_its_own_chunks(qwen3_rag, corpus, cli_env):
    assert qwen3_rag("index", corpus).code == 0
    before = chunks_by_file(cli_env)
    (corpus / "bread.txt").write_text("Rye bread is dense and dark. It keeps for a week.\n", encoding="utf-8")
    again = qwen3_rag("index", corpus)
    assert again.code == 0
    assert "Indexed 1 files (1 new chunks, 1 of them replacing an older version); 2 unchanged" in again.err
    after = chunks_by_file(cli_env)
    assert after["stars.md"] == before["stars.md"]
    assert after["tides.md"] == before["tides.md"]
    assert after["bread.txt"].isdisjoint(before["bread.txt"])
    texts = open_collection(cli_env).get(ids=sorted(after["bread.txt"]), include=["documents"])["documents"]
    assert texts == ["Rye bread is dense and dark. It keeps for a week."]


def stored_texts(db: Path, name: str) -> list[str]:
    """The chunks of the file called ``name``, in chunk order."""
    held = open_collection(db).get(include=["metadatas", "documents"])
    rows = zip(held["metadatas"], held["documents"], strict=True)
    return [text for _, text in sorted((m["chunk"], t) for m, t in rows if Path(m["source"]).name == name)]


def test_chunks_are_counted_in_the_embedders_tokens_and_new_settings_rechunk(
    qwen3_rag, tmp_path, cli_env, tiny_embedding_path
):
    doc = tmp_path / "long.md"
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    doc.write_text(text, encoding="utf-8")
    assert qwen3_rag("index", doc, "--chunk-size", "64", "--chunk-overlap", "0").code == 0
    coarse_ids, coarse = chunks_by_file(cli_env)["long.md"], stored_texts(cli_env, "long.md")
    assert qwen3_rag("index", doc, "--chunk-size", "32", "--chunk-overlap", "8").code == 0
    fine_ids, fine = chunks_by_file(cli_env)["long.md"], stored_texts(cli_env, "long.md")
    embedder = Qwen3Embedder(tiny_embedding_path, device="cpu")
    for size, overlap, texts in ((64, 0, coarse), (32, 8, fine)):
        expected = chunk_text(text, embedder.tokenizer, chunk_size=size, overlap=overlap, markdown=True)
        assert texts == [c.text for c in expected]
        assert max(len(ids) - 1 for ids in embedder.tokenize(texts)) <= size  # tokenize() adds <|endoftext|>
    assert 1 < len(coarse) < len(fine)
    assert fine_ids.isdisjoint(coarse_ids)


def test_an_interrupted_run_keeps_written_files_and_resumes(qwen3_rag, corpus, cli_env, monkeypatch):
    written = []
    original = indexing.write_group

    def interrupt_on_second_group(collection, group, vectors, **kwargs):
        if written:
            raise KeyboardInterrupt
        original(collection, group, vectors, **kwargs)
        written.extend(item.path.name for item in group)

    monkeypatch.setattr(indexing, "WRITE_CHUNKS", 1)  # one file per group: it counts as done once stored
    monkeypatch.setattr(indexing, "write_group", interrupt_on_second_group)
    stopped = qwen3_rag("index", corpus)
    assert stopped.code == 130
    assert "interrupted: 1 of 3 files were written and are kept" in stopped.err
    assert set(chunks_by_file(cli_env)) == set(written)

    monkeypatch.setattr(indexing, "write_group", original)
    calls = count_document_embeddings(monkeypatch)
    resumed = qwen3_rag("index", corpus)
    assert resumed.code == 0
    assert "Indexed 2 files (2 new chunks); 1 unchanged" in resumed.err
    assert sum(calls) == 2
    assert set(chunks_by_file(cli_env)) == {"stars.md", "bread.txt", "tides.md"}


def test_a_file_with_missing_chunks_is_completed_on_the_next_run(qwen3_rag, tmp_path, cli_env):
    doc = tmp_path / "long.txt"
    doc.write_text(" ".join(f"This is sentence {i}." for i in range(30)), encoding="utf-8")
    assert qwen3_rag("index", doc, "--chunk-size", "20", "--chunk-overlap", "0").code == 0
    full = chunks_by_file(cli_env)["long.txt"]
    open_collection(cli_env).delete(ids=[sorted(full)[0]])
    again = qwen3_rag("index", doc, "--chunk-size", "20", "--chunk-overlap", "0")
    assert "Indexed 1 files (1 new chunks)" in again.err
    assert chunks_by_file(cli_env)["long.txt"] == full


# --------------------------------------------------------------------------------------------- fingerprint


def test_the_collection_records_its_embedding_fingerprint(qwen3_rag, corpus, cli_env, tiny_embedding_path):
    assert qwen3_rag("index", corpus, "--dimensions", "32").code == 0
    metadata = open_collection(cli_env).metadata
    assert metadata["qwen3_rag:embedding_model"] == str(tiny_embedding_path)
    assert metadata["qwen3_rag:dimensions"] == 32
    assert metadata["qwen3_rag:instruction"] == DEFAULT_INSTRUCTION
    assert metadata["qwen3_rag:normalized"] is True
    assert len(json.loads(metadata["qwen3_rag:probe"])) == 16


def test_searching_with_other_dimensions_is_refused(qwen3_rag, corpus, monkeypatch):
    assert qwen3_rag("index", corpus, "--dimensions", "32").code == 0
    refused = qwen3_rag("search", "sun", "--dimensions", "48")
    assert refused.code == 2
    assert "was built with model" in refused.err and "32 dimensions" in refused.err
    assert "--dimensions asks for dimensions 48" in refused.err
    assert "Traceback" not in refused.err
    monkeypatch.setenv("QWEN3_RAG_DIMENSIONS", "48")
    refused = qwen3_rag("search", "sun")
    assert refused.code == 2
    assert "QWEN3_RAG_DIMENSIONS asks for dimensions 48" in refused.err
    monkeypatch.delenv("QWEN3_RAG_DIMENSIONS")
    assert qwen3_rag("search", "sun").code == 0  # unset: the index's own 32


def test_indexing_with_another_model_is_refused(qwen3_rag, corpus, cli_env, model_root, monkeypatch):
    other = testing.build_embedding_model(model_root / "tiny-embedding-seed1", seed=1)
    assert qwen3_rag("index", corpus).code == 0
    count = open_collection(cli_env).count()
    (corpus / "extra.md").write_text("Something new to index.", encoding="utf-8")
    monkeypatch.setenv("QWEN3_RAG_EMBEDDING_MODEL", str(other))
    refused = qwen3_rag("index", corpus)
    assert refused.code == 2
    assert f"QWEN3_RAG_EMBEDDING_MODEL asks for embedding model {str(other)!r}" in refused.err
    assert "index into a new --db or --collection" in refused.err
    assert open_collection(cli_env).count() == count
    assert qwen3_rag("search", "sun").code == 2


def test_the_same_weights_in_another_folder_are_accepted(qwen3_rag, corpus, tmp_path, tiny_embedding_path):
    assert qwen3_rag("index", corpus).code == 0
    copy = shutil.copytree(tiny_embedding_path, tmp_path / "offline-copy")
    found = qwen3_rag("search", "sun", "--embedding-model", copy)
    assert found.code == 0, found.err


def test_the_recorded_instruction_is_used_and_another_is_refused(qwen3_rag, corpus, monkeypatch):
    assert qwen3_rag("index", corpus, "--instruction", "Given a recipe question, retrieve recipes").code == 0
    used = []
    original = Qwen3Embedder.embed

    def spy(self, texts, **kwargs):
        used.append(kwargs.get("instruction"))
        return original(self, texts, **kwargs)

    monkeypatch.setattr(Qwen3Embedder, "embed", spy)
    assert qwen3_rag("search", "bread").code == 0
    assert used == ["Given a recipe question, retrieve recipes"]
    refused = qwen3_rag("search", "bread", "--instruction", "Given a web search query, retrieve passages")
    assert refused.code == 2
    assert "--instruction asks for instruction" in refused.err


# --------------------------------------------------------------------------------------------------- errors


def test_a_missing_path_is_a_usage_error(qwen3_rag, tmp_path, cli_env):
    result = qwen3_rag("index", tmp_path / "nope")
    assert result.code == 2
    assert f"qwen3-rag index: error: no such file or folder: {tmp_path / 'nope'}" in result.err
    assert "Traceback" not in result.err
    assert not cli_env.exists()


def test_an_empty_folder_is_a_usage_error(qwen3_rag, tmp_path, cli_env):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "data.json").write_text("{}")
    result = qwen3_rag("index", tmp_path / "empty")
    assert result.code == 2
    assert f"no files to index in {tmp_path / 'empty'} (looked for .adoc .asciidoc .docx .htm" in result.err
    assert "and source code; see `qwen3-rag index --help`)" in result.err
    assert not cli_env.exists()


def test_unreadable_binary_and_non_utf8_files_are_skipped_and_reported(qwen3_rag, corpus, cli_env, monkeypatch):
    (corpus / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (corpus / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me".encode("latin-1"))
    locked = corpus / "locked.md"
    locked.write_text("secret", encoding="utf-8")
    original = Path.read_bytes

    def read_bytes(self):
        if self.name == "locked.md":
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    result = qwen3_rag("index", corpus)
    assert result.code == 0
    assert "skipped image.txt: binary file" in result.err.replace(f"{corpus}/", "")
    assert "skipped latin1.txt: not UTF-8 text" in result.err.replace(f"{corpus}/", "")
    assert "skipped locked.md: unreadable (Permission denied)" in result.err.replace(f"{corpus}/", "")
    assert set(chunks_by_file(cli_env)) == {"stars.md", "bread.txt", "tides.md"}


def test_only_unindexable_files_is_an_error(qwen3_rag, tmp_path):
    (tmp_path / "empty.txt").write_text("   \n")
    result = qwen3_rag("index", tmp_path / "empty.txt")
    assert result.code == 2
    assert "skipped" in result.err and "empty file" in result.err
    assert "nothing was indexed: every file was skipped" in result.err


def test_searching_without_a_database_is_a_usage_error(qwen3_rag, cli_env):
    result = qwen3_rag("search", "anything")
    assert result.code == 2
    assert f"no index at {cli_env}: run `qwen3-rag index PATH --db {cli_env}` first" in result.err
    assert not cli_env.exists()
    assert qwen3_rag("ask", "anything").code == 2


def test_a_database_without_the_collection_is_a_usage_error(qwen3_rag, corpus):
    assert qwen3_rag("index", corpus).code == 0
    result = qwen3_rag("search", "sun", "--collection", "other")
    assert result.code == 2
    assert "no collection 'other'" in result.err and "it holds: qwen3_rag" in result.err


def test_a_model_that_cannot_load_exits_1_with_the_reason(qwen3_rag, corpus, tmp_path):
    result = qwen3_rag("index", corpus, "--embedding-model", tmp_path / "no-model-here")
    assert result.code == 1
    assert "Could not load the Qwen3 model" in result.err
    assert "Traceback" not in result.err


def test_bad_arguments_exit_2(qwen3_rag, corpus, monkeypatch):
    assert qwen3_rag("index").code == 2
    assert qwen3_rag("search", "q", "--top-k", "0").code == 2
    assert qwen3_rag("index", corpus, "--chunk-size", "20", "--chunk-overlap", "20").code == 2
    for flags, message in (
        (["--chunk-size", "8"], "--chunk-size must be at least 16 tokens"),
        (["--chunk-size", "600", "--max-length", "512"], "--chunk-size (600 tokens) must be at most --max-length - 1"),
        (["--chunk-size", "64", "--chunk-overlap", "64"], "--chunk-overlap must be between 0 and --chunk-size - 1"),
    ):
        refused = qwen3_rag("index", corpus, *flags)
        assert (refused.code, refused.err.count("\n")) == (2, 1)
        assert message in refused.err
    too_small = qwen3_rag("index", corpus, "--dimensions", "16")
    assert too_small.code == 2
    assert "--dimensions must be an integer between 32 and 64" in too_small.err
    monkeypatch.setenv("QWEN3_RAG_DIMENSIONS", "many")
    result = qwen3_rag("index", corpus)
    assert result.code == 2
    assert "QWEN3_RAG_DIMENSIONS must be an integer, got 'many'" in result.err
    assert qwen3_rag("--version").code == 0


# ---------------------------------------------------------------------------------------- configuration


def test_flags_beat_environment_variables(qwen3_rag, corpus, tmp_path, monkeypatch, tiny_embedding_path):
    monkeypatch.setenv("QWEN3_RAG_EMBEDDING_MODEL", str(tmp_path / "missing-model"))
    assert qwen3_rag("index", corpus).code == 1  # the variable is read
    flagged = qwen3_rag("index", corpus, "--embedding-model", tiny_embedding_path, "--db", tmp_path / "flag-db")
    assert flagged.code == 0, flagged.err
    assert (tmp_path / "flag-db" / "chroma.sqlite3").is_file()


def test_the_database_defaults_to_qwen3_rag_db_in_the_working_folder(qwen3_rag, corpus, tmp_path, monkeypatch):
    monkeypatch.delenv("QWEN3_RAG_DB")
    monkeypatch.chdir(tmp_path)
    assert qwen3_rag("index", corpus).code == 0
    assert (tmp_path / "qwen3-rag-db" / "chroma.sqlite3").is_file()
    found = qwen3_rag("search", "sun", "--json")
    assert json.loads(found.out)["results"][0]["source"].startswith("corpus/")  # shown relative to the cwd


def test_without_chromadb_the_cli_says_how_to_install_it(qwen3_rag, corpus, monkeypatch):
    for name in [m for m in sys.modules if m == "chromadb" or m.startswith("chromadb.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    result = qwen3_rag("index", corpus)
    assert result.code == 2
    assert 'pip install "qwen3-rag[chroma]"' in result.err


# -------------------------------------------------------------------------------------------------------- ask


def test_ask_answers_and_lists_numbered_sources(qwen3_rag, corpus):
    assert qwen3_rag("index", corpus).code == 0
    answered = qwen3_rag("ask", "Why does the sun shine?", "--top-n", "2", "--max-new-tokens", "8")
    assert answered.code == 0, answered.err
    head, sources = answered.out.split("\nSources:\n")
    assert head.strip()  # the answer, or a note that the model wrote nothing
    lines = sources.splitlines()
    assert lines[0].lstrip(" *").startswith("[1] ") and lines[1].lstrip(" *").startswith("[2] ")
    assert all(", chunk 0  (score " in line for line in lines[:2])


def test_ask_json_holds_answer_citations_and_sources(qwen3_rag, corpus, tiny_chat_path):
    assert qwen3_rag("index", corpus).code == 0
    answered = qwen3_rag("ask", "How is bread made?", "--top-n", "3", "--max-new-tokens", "8", "--json")
    payload = json.loads(answered.out)
    assert isinstance(payload["answer"], str)
    assert payload["llm"] == str(tiny_chat_path)
    assert [s["rank"] for s in payload["sources"]] == [1, 2, 3]
    assert all(1 <= n <= 3 for n in payload["cited"])


def test_the_answer_length_comes_from_the_flag_or_the_environment(qwen3_rag, corpus, monkeypatch):
    from qwen3_rag.cli import answer as _answer

    asked = []
    monkeypatch.setattr(_answer.ChatModel, "generate", lambda self, messages, **kw: asked.append(kw) or "ok [1]")
    assert qwen3_rag("index", corpus).code == 0
    monkeypatch.setenv("QWEN3_RAG_MAX_NEW_TOKENS", "7")
    assert qwen3_rag("ask", "bread?").code == 0
    answered = qwen3_rag("ask", "bread?", "--max-new-tokens", "3")
    assert [kw["max_new_tokens"] for kw in asked] == [7, 3]
    assert answered.out.startswith("ok [1]\n\nSources:\n *[1] ")  # the cited source is marked
