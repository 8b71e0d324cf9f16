"""The Ray corpus job (qwen3_rag.distributed), end to end on a local 2-CPU Ray with 2 actors.

Ray's processes listen on every network interface even when told not to, so Ray runs only inside a private
network namespace: a subprocess ``unshare --net --pid --fork --mount-proc --kill-child sh -c 'ip link set lo
up && exec python ray_job_script.py ...'`` (root, util-linux and iproute2 needed); the PID namespace makes
sure no Ray process outlives the job. The vectors it writes are then read here, without Ray, and compared
with the in-process ``Qwen3Embedder``. Without Ray, pyarrow, ``unshare`` or the right to use it, the Ray
tests are skipped with the reason -- or fail when ``QWEN3_RAG_REQUIRE_RAY=1`` (set it in CI).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from qwen3_rag import Qwen3Embedder
from qwen3_rag.distributed import (
    MANIFEST_NAME,
    embed_corpus,
    iter_embedded,
    iter_embeddings,
    main,
    write_to_chroma,
)

SCRIPT = Path(__file__).with_name("ray_job_script.py")
STS_INSTRUCTION = "Retrieve semantically similar text"
TOLERANCE = 1e-5
UNSHARE = ("unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child")
"""A private network namespace (Ray listens on every interface) and a private PID namespace: when the job's
process ends -- or is killed on a timeout -- the kernel ends every Ray process it started."""

_SENTENCES = [
    "An embedding model turns a piece of text into a vector of numbers.",
    "The quick brown fox jumps over the lazy dog.",
    "Water boils at one hundred degrees Celsius at sea level, and it freezes at zero degrees.",
    "Photosynthesis is the process by which green plants use sunlight to make food.",
    "Which planet is the largest in the solar system? Jupiter is the largest planet.",
    "The library opens at nine in the morning and closes at six in the evening.",
    "Matryoshka representation learning keeps most of the meaning in the first dimensions.",
]


def _text(i: int) -> str:
    # Lengths from one sentence to ~40, so that length sorting and the token budget matter.
    words = [_SENTENCES[(i + k) % len(_SENTENCES)] for k in range(1 + (i * 7) % 40)]
    return f"Document {i}.\n" + " ".join(words)


DOCS = {f"doc-{i:02d}.txt" if i % 3 else f"notes/sub/doc-{i:02d}.md": _text(i) for i in range(24)}
EXTRA_DOCS = {f"notes/added-{i}.md": _text(100 + i) for i in range(5)}
ROWS = [{"doc_id": i, "body": _text(200 + i), "group": f"g{i % 3}"} for i in range(20)]
MORE_ROWS = ROWS + [{"doc_id": 20 + i, "body": _text(300 + i), "group": "g9"} for i in range(6)]


# ------------------------------------------------------------------------------------------ environment


@cache
def _ray_problem() -> str | None:
    """Why the Ray job cannot run here, or None."""
    for module in ("ray", "pyarrow"):
        if importlib.util.find_spec(module) is None:
            return f'{module} is not installed: pip install "qwen3-rag[ray]"'
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (util-linux / iproute2): Ray must run in a private network namespace"
    probe = subprocess.run([*UNSHARE, "sh", "-c", "ip link set lo up"], capture_output=True, text=True, timeout=30)
    if probe.returncode:
        return f"`{' '.join(UNSHARE)}` is not permitted here (needs root): {probe.stderr.strip()}"
    return None


def _require_ray() -> None:
    problem = _ray_problem()
    if problem is None:
        return
    if os.environ.get("QWEN3_RAG_REQUIRE_RAY") == "1":
        pytest.fail(f"QWEN3_RAG_REQUIRE_RAY=1 but {problem}")
    pytest.skip(problem)


def _write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, tiny_embedding_path: Path) -> dict:
    """Runs ray_job_script.py once (one Ray start, six job runs) in a private network namespace."""
    _require_ray()
    work = tmp_path_factory.mktemp("ray-job")
    _write(work / "docs", DOCS)
    _write(work / "extra", EXTRA_DOCS)
    _jsonl(work / "rows.jsonl", ROWS)
    _jsonl(work / "more_rows.jsonl", MORE_ROWS)
    script = shlex.join([sys.executable, str(SCRIPT), "--work", str(work), "--model", str(tiny_embedding_path)])
    command = f"ip link set lo up && exec {script}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = time.perf_counter()
    proc = subprocess.run(
        [*UNSHARE, "sh", "-c", command], capture_output=True, text=True, timeout=600, env=env, check=False
    )
    wall = time.perf_counter() - started
    if proc.returncode:
        pytest.fail(f"the Ray job failed (rc={proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    report = json.loads((work / "report.json").read_text(encoding="utf-8"))
    report["work"] = work
    report["subprocess_seconds"] = wall
    runs = ", ".join(f"{name} {run['seconds']:.1f} s" for name, run in report["runs"].items())
    print(f"Ray {report['ray_version']}: start {report['ray_start_seconds']:.1f} s; {runs}; subprocess {wall:.1f} s")
    return report


@pytest.fixture(scope="module")
def embedder(tiny_embedding_path: Path) -> Qwen3Embedder:
    return Qwen3Embedder(tiny_embedding_path, device="cpu")


def _read(folder: Path) -> dict[str, tuple[str | None, np.ndarray, dict | None]]:
    rows: dict[str, tuple[str | None, np.ndarray, dict | None]] = {}
    for batch in iter_embeddings(folder):
        for i, row_id in enumerate(batch.ids):
            assert row_id not in rows, f"id {row_id} written twice"
            rows[row_id] = (
                None if batch.texts is None else batch.texts[i],
                batch.vectors[i],
                None if batch.metadatas is None else batch.metadatas[i],
            )
    return rows


def _ids_in(files: list[str]) -> set[str]:
    import pyarrow.parquet as pq

    return {i for f in files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}


# ------------------------------------------------------------------------------------------ end to end


def test_folder_job_vectors_equal_the_in_process_embedder(job: dict, embedder: Qwen3Embedder) -> None:
    run = job["runs"]["docs_first"]
    assert (run["embedded"], run["existing"], run["dimension"]) == (len(DOCS), 0, embedder.hidden_size)
    corpus = {**DOCS, **EXTRA_DOCS}
    rows = _read(job["work"] / "out-docs")
    assert set(rows) == set(corpus)  # ids are the paths relative to the folder, nested ones included
    ids = sorted(rows)
    expected = embedder.embed_documents([corpus[i] for i in ids])
    got = np.stack([rows[i][1] for i in ids])
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() <= TOLERANCE
    assert [rows[i][0] for i in ids] == [corpus[i] for i in ids]


def test_second_run_embeds_nothing(job: dict) -> None:
    run = job["runs"]["docs_again"]
    assert (run["embedded"], run["existing"], run["new_files"]) == (0, len(DOCS), [])


def test_run_with_added_documents_embeds_only_those(job: dict) -> None:
    run = job["runs"]["docs_added"]
    assert (run["embedded"], run["existing"], run["total"]) == (len(EXTRA_DOCS), len(DOCS), len(DOCS) + len(EXTRA_DOCS))
    assert _ids_in(run["new_files"]) == set(EXTRA_DOCS)
    first = job["runs"]["docs_first"]["new_files"]
    assert all(Path(f).exists() for f in first), "a resumed run must not replace earlier files"


def test_table_job_resumes_on_a_longer_file_embedding_only_new_rows(job: dict) -> None:
    first, more = job["runs"]["table_first"], job["runs"]["table_more"]  # a Dataset, then a JSONL file
    assert (first["embedded"], first["existing"], first["dimension"]) == (len(ROWS), 0, 32)
    assert (more["embedded"], more["existing"]) == (len(MORE_ROWS) - len(ROWS), len(ROWS))
    assert _ids_in(more["new_files"]) == {str(r["doc_id"]) for r in MORE_ROWS[len(ROWS) :]}


def test_table_vectors_follow_instruction_and_matryoshka_settings(job: dict, embedder: Qwen3Embedder) -> None:
    rows = _read(job["work"] / "out-table")
    assert set(rows) == {str(r["doc_id"]) for r in MORE_ROWS}  # integer ids are written as strings
    expected = embedder.embed([r["body"] for r in MORE_ROWS], instruction=STS_INSTRUCTION, dimensions=32)
    got = np.stack([rows[str(r["doc_id"])][1] for r in MORE_ROWS])
    assert np.abs(got - expected).max() <= TOLERANCE
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # re-normalised after truncation
    assert all(rows[str(r["doc_id"])][0] is None for r in MORE_ROWS)  # store_text=False
    assert all(rows[str(r["doc_id"])][2] == {"group": r["group"]} for r in MORE_ROWS)


def test_streamed_rows_come_back_with_their_vectors_and_metadata(job: dict, embedder: Qwen3Embedder) -> None:
    streamed = json.loads((job["work"] / "streamed.json").read_text(encoding="utf-8"))
    vectors = np.load(job["work"] / "streamed.npy")
    assert sorted(streamed["ids"], key=int) == [str(r["doc_id"]) for r in ROWS]
    assert streamed["batches"] >= 3  # rows_per_call=8: 20 rows come back in pieces, not all at once
    by_id = {r["doc_id"]: r for r in ROWS}
    rows = [by_id[int(i)] for i in streamed["ids"]]
    assert streamed["texts"] == [r["body"] for r in rows]
    assert streamed["metadatas"] == [{"group": r["group"]} for r in rows]
    assert np.abs(vectors - embedder.embed_documents([r["body"] for r in rows])).max() <= TOLERANCE


def test_output_is_plain_parquet_readable_without_ray(job: dict) -> None:
    folder = job["work"] / "out-docs"
    code = (
        "import sys; sys.modules['ray'] = None\n"  # any `import ray` now fails
        "import pyarrow as pa, pyarrow.parquet as pq\n"
        f"table = pq.read_table({str(folder)!r})\n"
        "assert table.schema.field('id').type == pa.string(), table.schema\n"
        "assert table.schema.field('text').type == pa.string(), table.schema\n"
        "assert table.schema.field('vector').type == pa.list_(pa.float32()), table.schema\n"
        "from qwen3_rag.distributed import iter_embeddings\n"
        f"print(sum(len(b.ids) for b in iter_embeddings({str(folder)!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == len(DOCS) + len(EXTRA_DOCS)
    manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert (manifest["dimensions"], manifest["instruction"]) == (None, None)


def test_ray_start_and_job_time_stay_modest(job: dict) -> None:
    # Generous bounds for a loaded 2-core machine; the report prints the real numbers.
    assert job["ray_start_seconds"] < 60
    assert job["subprocess_seconds"] < 300


# ------------------------------------------------------------------------------- without starting Ray


def _fake_output(folder: Path, *, dimensions: int | None = None, ids: tuple[str, str] = ("a", "b")) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    vectors = pa.array([[0.6, 0.8], [1.0, 0.0]], pa.list_(pa.float32()))
    pq.write_table(pa.table({"id": list(ids), "text": ["x", "y"], "vector": vectors}), folder / "part-0.parquet")
    manifest = {"format": 1, "model": "m", "dimensions": dimensions, "instruction": None, "max_length": 8192}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")


def test_resuming_with_other_settings_is_refused_before_ray_starts(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    _fake_output(tmp_path / "out")
    _write(tmp_path / "docs", {"a.txt": "x"})
    with pytest.raises(ValueError, match=r"dimensions: folder has None, this run 64"):
        embed_corpus(tmp_path / "docs", tmp_path / "out", model="m", dimensions=64)
    with pytest.raises(FileExistsError, match="resume=True"):
        embed_corpus(tmp_path / "docs", tmp_path / "out", model="m", resume=False)


def test_nothing_to_embed_does_not_start_ray(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    assert list(iter_embedded([], model="m")) == []
    assert not ray.is_initialized()


def test_command_line_prints_the_run_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ray = pytest.importorskip("ray")
    _write(tmp_path / "docs", {"a.txt": "x", "sub/b.md": "y"})
    _fake_output(tmp_path / "out", ids=("a.txt", "sub/b.md"))  # everything embedded: Ray is not started
    main([str(tmp_path / "docs"), "--output", str(tmp_path / "out"), "--model", "m"])
    summary = json.loads(capsys.readouterr().out)
    assert (summary["embedded"], summary["existing"], summary["new_files"], summary["dimension"]) == (0, 2, [], 2)
    assert not ray.is_initialized()


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install \"qwen3-rag\[ray\]\""):
        embed_corpus(tmp_path, tmp_path / "out", model="m")


def test_mixed_source_files_are_refused(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    (tmp_path / "a.parquet").write_bytes(b"")
    (tmp_path / "b.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"all \.parquet or all \.jsonl"):
        embed_corpus([tmp_path / "a.parquet", tmp_path / "b.jsonl"], tmp_path / "out", model="m")


def test_write_to_chroma_upserts_every_row(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    chromadb = pytest.importorskip("chromadb")
    _fake_output(tmp_path / "out")
    client = chromadb.EphemeralClient(settings=chromadb.config.Settings(anonymized_telemetry=False))
    collection = client.create_collection("corpus", embedding_function=None)
    assert write_to_chroma(tmp_path / "out", collection) == 2
    assert write_to_chroma(tmp_path / "out", collection) == 2  # idempotent
    got = collection.get(ids=["a", "b"], include=["embeddings", "documents"])
    assert got["documents"] == ["x", "y"]
    np.testing.assert_allclose(np.asarray(got["embeddings"]), [[0.6, 0.8], [1.0, 0.0]], atol=1e-7)
    assert collection.count() == 2
