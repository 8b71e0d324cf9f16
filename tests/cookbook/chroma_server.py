"""A real Chroma server for the tests: ``chroma run`` from the installed chromadb wheel, on a free port of
127.0.0.1, stopped afterwards. No mock stands in for it.

``chroma_server`` (module-scoped: one server per test module) serves a fresh folder; ``server_db`` gives each test
its own database on that server (created through chromadb's ``AdminClient``) and points the CLI at it through
``QWEN3_RAG_DB`` and ``CHROMA_DATABASE``, the variable chromadb's own clients read. Test modules that use them
import them and mark themselves ``pytest.mark.allow_hosts(["127.0.0.1"])`` (pytest-socket).
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

HOST = "127.0.0.1"
START_TIMEOUT = 120.0
"""Seconds ``chroma run`` may take to answer its heartbeat (well under one on an idle machine)."""
_databases = itertools.count()


def chroma_executable() -> str:
    """The ``chroma`` command installed with chromadb, next to this Python (or on PATH)."""
    beside = Path(sys.executable).with_name("chroma")
    found = str(beside) if beside.exists() else shutil.which("chroma")
    if found is None:
        pytest.fail("the `chroma` command of the chromadb wheel is not installed: pip install chromadb", pytrace=False)
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class ChromaServer:
    path: Path
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"`chroma run` exited with {self.process.returncode}:\n{self.log_tail()}", pytrace=False)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/v2/heartbeat", timeout=5).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail(f"`chroma run` not ready after {timeout:.0f} s:\n{self.log_tail()}", pytrace=False)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def start_chroma(path: Path, log: Path) -> ChromaServer:
    """``chroma run --path PATH`` on a free port of 127.0.0.1, ready to answer (stop it with ``.stop()``)."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [chroma_executable(), "run", "--path", str(path), "--host", HOST, "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = ChromaServer(path, port, process, log)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def serving(path: Path, log: Path) -> Iterator[ChromaServer]:
    server = start_chroma(path, log)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """One real Chroma server for the test module, on a fresh folder."""
    root = tmp_path_factory.mktemp("chroma-server")
    with serving(root / "data", root / "chroma.log") as server:
        yield server


@pytest.fixture
def server_db(chroma_server: ChromaServer, cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty database on the module's server, selected for the CLI (``QWEN3_RAG_DB`` = the server's URL,
    ``CHROMA_DATABASE`` = the database); returns the URL."""
    import chromadb
    from chromadb.config import Settings

    name = f"test_{next(_databases)}"
    admin = chromadb.AdminClient(
        Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI",
            chroma_server_host=HOST,
            chroma_server_http_port=chroma_server.port,
            anonymized_telemetry=False,
        )
    )
    admin.create_database(name)
    monkeypatch.setenv("QWEN3_RAG_DB", chroma_server.url)
    monkeypatch.setenv("CHROMA_DATABASE", name)
    for variable in ("CHROMA_TENANT", "CHROMA_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    return chroma_server.url


def server_client(server: ChromaServer, database: str = "default_database"):
    """A plain chromadb client of ``server`` (and one of its databases), as user code would make it."""
    import chromadb
    from chromadb.config import Settings

    import qwen3_rag.chroma  # noqa: F401 - so that get_collection rebuilds the stored embedding function

    return chromadb.HttpClient(
        host=HOST, port=server.port, database=database, settings=Settings(anonymized_telemetry=False)
    )
