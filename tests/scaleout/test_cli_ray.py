"""``qwen3-rag index --ray``: the CLI embeds on a Ray actor pool (in a private network namespace, see
test_distributed.py) and writes the same vectors into Chroma as the in-process path -- into a folder, or into a
Chroma server (started inside the namespace: ray_server_script.py). The Ray job's own checks: ids promised
unique, documents decoded strictly, the CLI options it cannot honour refused."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings

from qwen3_rag import Qwen3Embedder
from qwen3_rag.cli import main
from qwen3_rag.distributed import embed_corpus
from tests.cookbook.chroma_server import chroma_executable
from tests.scaleout.test_distributed import DOCS, UNSHARE, _jsonl, _require_ray, _write

SERVER_SCRIPT = Path(__file__).with_name("ray_server_script.py")
SERVER_DOCS = {"guide.md": "# Guide\n\nInstall the package, then index a folder.", "sub/tides.txt": "Two tides a day."}
BAD_DOCS = {"latin1.txt": b"caf\xe9 au lait", "empty.md": b"  \n", "nul.txt": b"abc\x00def"}


def _vectors(db: Path, name: str = "qwen3_rag") -> dict[str, np.ndarray]:
    with chromadb.PersistentClient(path=str(db), settings=Settings(anonymized_telemetry=False)) as client:
        held = client.get_collection(name).get(include=["embeddings"])
    return dict(zip(held["ids"], np.asarray(held["embeddings"]), strict=True))


def _clean_env(tiny_embedding_path: Path) -> dict[str, str]:
    """No QWEN3_RAG_* or CHROMA_* setting from outside, but the suite's float32 CPU default (tests/conftest.py),
    which the 1e-5 comparisons with the in-process embedder need, in the actors too."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("QWEN3_RAG_", "CHROMA_"))},
        "QWEN3_RAG_CPU_DTYPE": os.environ.get("QWEN3_RAG_CPU_DTYPE", "float32"),
        "QWEN3_RAG_EMBEDDING_MODEL": str(tiny_embedding_path),
        "QWEN3_RAG_DEVICE": "cpu",
        "RAY_USAGE_STATS_ENABLED": "0",
    }


@pytest.fixture(scope="module")
def local_vectors(tmp_path_factory: pytest.TempPathFactory, tiny_embedding_path: Path) -> tuple[Path, dict]:
    """The corpus indexed in process, without Ray: what every --ray run must reproduce."""
    root = tmp_path_factory.mktemp("ray-local")
    _write(root / "corpus", DOCS)
    env = _clean_env(tiny_embedding_path)
    assert main(["index", str(root / "corpus"), "--db", str(root / "local-db"), "-q"], environ=env) == 0
    return root / "corpus", _vectors(root / "local-db")


def test_index_with_ray_writes_the_in_process_vectors(tmp_path, tiny_embedding_path, local_vectors):
    _require_ray()
    corpus, expected = local_vectors
    cli = Path(sys.executable).with_name("qwen3-rag")
    command = f"ip link set lo up && exec {cli} index {corpus} --db {tmp_path / 'ray-db'} -q --ray --ray-actors 2"
    env = _clean_env(tiny_embedding_path)
    proc = subprocess.run([*UNSHARE, "sh", "-c", command], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]

    ray_vectors = _vectors(tmp_path / "ray-db")
    assert ray_vectors.keys() == expected.keys() and len(ray_vectors) >= len(DOCS)
    for id_, vector in expected.items():
        np.testing.assert_allclose(ray_vectors[id_], vector, atol=1e-5)


# ------------------------------------------------------------------------------------- into a Chroma server


@pytest.fixture(scope="module")
def server_job(tmp_path_factory: pytest.TempPathFactory, tiny_embedding_path: Path, local_vectors) -> dict:
    """ray_server_script.py once: a Chroma server and one Ray session inside a private network namespace."""
    _require_ray()
    work = tmp_path_factory.mktemp("ray-server")
    corpus, _ = local_vectors
    os.symlink(corpus, work / "corpus")  # the same files (and so the same chunk ids) as the in-process run
    _write(work / "docs", SERVER_DOCS)
    for name, data in BAD_DOCS.items():
        (work / "docs" / name).write_bytes(data)
    _jsonl(work / "dups.jsonl", [{"id": 1, "text": "one"}, {"id": 2, "text": "two"}, {"id": "1", "text": "uno"}])
    script = shlex.join([sys.executable, str(SERVER_SCRIPT), "--work", str(work), "--model", str(tiny_embedding_path),
                         "--chroma", chroma_executable()])  # fmt: skip
    env = _clean_env(tiny_embedding_path)
    proc = subprocess.run([*UNSHARE, "sh", "-c", f"ip link set lo up && exec {script}"], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip
    if proc.returncode or not (work / "report.json").exists():
        pytest.fail(f"the Ray server job failed (rc={proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    report = json.loads((work / "report.json").read_text(encoding="utf-8"))
    report["work"] = work
    return report


def test_index_with_ray_into_a_server_writes_the_in_process_ids_and_vectors(server_job, local_vectors):
    assert (server_job["index"], server_job["index_again"], server_job["search"]) == (0, 0, 0)
    _, expected = local_vectors
    served = _vectors(server_job["work"] / "served")  # the server's folder, read after it stopped
    assert served.keys() == expected.keys()
    for id_, vector in expected.items():
        np.testing.assert_allclose(served[id_], vector, atol=1e-5)
    results = server_job["search_json"]["results"]
    assert results and all(r["id"] in expected for r in results)


def test_the_python_api_writes_a_named_collection_on_a_server(server_job, tiny_embedding_path):
    assert server_job["api"]["embedded"] == len(SERVER_DOCS)
    served = _vectors(server_job["work"] / "served", "corpus")
    assert set(served) == set(SERVER_DOCS)
    embedder = Qwen3Embedder(tiny_embedding_path, device="cpu")
    for name, text in SERVER_DOCS.items():
        np.testing.assert_allclose(served[name], embedder.embed_documents([text])[0], atol=1e-5)
    with chromadb.PersistentClient(
        path=str(server_job["work"] / "served"), settings=Settings(anonymized_telemetry=False)
    ) as client:
        config = client.get_collection("corpus").configuration_json["embedding_function"]
    assert (config["name"], config["config"]["model"]) == ("qwen3_rag", str(tiny_embedding_path))


def test_documents_that_are_not_text_are_skipped_and_reported_not_replaced(server_job):
    skipped = dict(map(tuple, server_job["api"]["skipped"]))
    assert skipped == {"latin1.txt": "not UTF-8 text (byte 3)", "empty.md": "empty file", "nul.txt": "binary file"}
    assert server_job["streamed_ids"] == sorted(SERVER_DOCS)  # streamed: the same files left out ...
    assert server_job["warnings"].count("skipped") >= 2 * len(BAD_DOCS)  # ... and named, both times
    assert "latin1.txt: not UTF-8 text (byte 3)" in server_job["warnings"]


def test_ids_that_repeat_are_refused_before_anything_is_embedded(server_job):
    assert "ids must be unique, but 1 occur more than once in column 'id' of the source: '1'" in (
        server_job["duplicates"] or ""
    )
    assert not list((server_job["work"] / "out-dups").glob("*.parquet"))


# ----------------------------------------------------------------------------------- without starting Ray


def test_repeated_ids_among_rows_are_refused_before_ray_starts(tmp_path):
    ray = pytest.importorskip("ray")
    rows = [{"id": 7, "text": "a"}, {"id": "7", "text": "b"}, {"id": 8, "text": "c"}]  # ids are written as strings
    with pytest.raises(ValueError, match=r"ids must be unique, but 1 occur more than once .*: '7'"):
        embed_corpus(rows, tmp_path / "out", model="m")
    assert not ray.is_initialized()
    assert not list((tmp_path / "out").glob("*.parquet"))


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        (["--embedding-url", "http://127.0.0.1:9"], {}, "--embedding-url and --ray both say where to embed"),
        ([], {"QWEN3_RAG_EMBEDDING_URL": "http://127.0.0.1:9"}, "QWEN3_RAG_EMBEDDING_URL and --ray both say"),
        (["--device", "cuda"], {}, "--device cuda does not match --ray, whose actors embed on the CPU"),
        (["--device", "cpu", "--ray-gpus", "1"], {}, "--device cpu does not match --ray, whose actors embed on 1 GPU"),
        (["--device", "cuda:1", "--ray-gpus", "1"], {}, "each actor uses the GPU that Ray assigns it"),
        (["--device", "mps"], {}, "--device mps does not match --ray"),
        (["--ray-gpus", "1"], {"QWEN3_RAG_DTYPE": "int8"}, "QWEN3_RAG_DTYPE int8 is a CPU mode"),
    ],
)
def test_ray_refuses_the_options_it_cannot_honour(tmp_path, capsys, flags, environ, message):
    (tmp_path / "a.txt").write_text("some text", encoding="utf-8")
    env = {"QWEN3_RAG_EMBEDDING_MODEL": str(tmp_path / "never-loaded"), **environ}
    code = main(["index", str(tmp_path / "a.txt"), "--db", str(tmp_path / "db"), "--ray", *flags], environ=env)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "db").exists()  # refused before anything was created or loaded


def test_write_to_chroma_creates_a_named_collection_with_the_outputs_embedding_function(tmp_path):
    from qwen3_rag.distributed import write_to_chroma
    from tests.scaleout.test_distributed import _fake_output

    _fake_output(tmp_path / "out", dimensions=None)
    assert write_to_chroma(tmp_path / "out", "corpus", db=tmp_path / "db") == 2
    assert write_to_chroma(tmp_path / "out", "corpus", db=tmp_path / "db") == 2  # idempotent
    with chromadb.PersistentClient(path=str(tmp_path / "db"), settings=Settings(anonymized_telemetry=False)) as c:
        collection = c.get_collection("corpus")
        assert collection.count() == 2
        config = collection.configuration_json
    function = config["embedding_function"]
    assert (function["name"], function["config"]["model"], config["hnsw"]["space"]) == ("qwen3_rag", "m", "cosine")
    with pytest.raises(TypeError, match="needs db="):
        write_to_chroma(tmp_path / "out", "corpus")
    with pytest.raises(ValueError, match="Chroma refuses the collection name 'a'"):
        write_to_chroma(tmp_path / "out", "a", db=tmp_path / "db")
