"""``qwen3-rag index --ray``: the CLI embeds on a Ray actor pool (in a private network namespace, see
test_distributed.py) and writes the same vectors into Chroma as the in-process path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import chromadb
import numpy as np
from chromadb.config import Settings

from qwen3_rag.cli import main
from tests.scaleout.test_distributed import DOCS, UNSHARE, _require_ray, _write


def _vectors(db: Path) -> dict[str, np.ndarray]:
    client = chromadb.PersistentClient(path=str(db), settings=Settings(anonymized_telemetry=False))
    held = client.get_collection("qwen3_rag").get(include=["embeddings"])
    return dict(zip(held["ids"], np.asarray(held["embeddings"]), strict=True))


def test_index_with_ray_writes_the_in_process_vectors(tmp_path, tiny_embedding_path, monkeypatch):
    _require_ray()
    corpus = tmp_path / "corpus"
    _write(corpus, DOCS)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QWEN3_RAG_")},
        "QWEN3_RAG_EMBEDDING_MODEL": str(tiny_embedding_path),
        "QWEN3_RAG_DEVICE": "cpu",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    cli = Path(sys.executable).with_name("qwen3-rag")
    command = f"ip link set lo up && exec {cli} index {corpus} --db {tmp_path / 'ray-db'} -q --ray --ray-actors 2"
    proc = subprocess.run([*UNSHARE, "sh", "-c", command], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]

    for name in [n for n in os.environ if n.startswith("QWEN3_RAG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("QWEN3_RAG_EMBEDDING_MODEL", str(tiny_embedding_path))
    assert main(["index", str(corpus), "--db", str(tmp_path / "local-db"), "-q", "--device", "cpu"]) == 0

    ray_vectors, local_vectors = _vectors(tmp_path / "ray-db"), _vectors(tmp_path / "local-db")
    assert ray_vectors.keys() == local_vectors.keys() and len(ray_vectors) >= len(DOCS)
    for id_, vector in local_vectors.items():
        np.testing.assert_allclose(ray_vectors[id_], vector, atol=1e-5)
