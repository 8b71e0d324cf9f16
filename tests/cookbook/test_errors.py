"""What the CLI does when something cannot be done: one line on stderr, never a traceback; exit status 2 for a
usage or data problem (found before any model loads where it can be), 1 for a model, a server or the numbers."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwen3_rag import _loading
from qwen3_rag.cli import answer as _answer
from tests.cookbook.test_console_script import console_script


def one_line_error(result, code: int) -> str:
    """The single stderr line of a failed run, after checking its status and that nothing else was printed."""
    assert result.code == code, (result.code, result.err)
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("qwen3-rag ")
    return lines[0]


@pytest.fixture
def indexed(qwen3_rag, corpus):
    assert qwen3_rag("index", corpus, "--quiet").code == 0
    return corpus


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fails the test if any Qwen3 model or chat model starts loading."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(_loading, "load_model", refuse)
    monkeypatch.setattr(_answer, "load_causal_lm", refuse)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------- servers (item 6)


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_a_vllm_server_that_is_down_is_one_line_exit_1(qwen3_rag, indexed, monkeypatch):
    monkeypatch.setattr("qwen3_rag.remote._sleep", lambda seconds: None)  # the retries, without their backoff
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = qwen3_rag("search", "sun", "--embedding-url", url)
    *retries, line = result.err.splitlines()
    assert len(retries) == 3 and all("retrying in" in r for r in retries)  # the client's retries, announced
    result.err = line + "\n"
    line = one_line_error(result, 1)
    assert line.startswith(f"qwen3-rag search: error: could not reach the vLLM server at {url}")


class _ErrorHandler(http.server.BaseHTTPRequestHandler):
    """A server that answers every request with HTTP 400 and a vLLM-style error body."""

    def _answer(self) -> None:
        body = json.dumps({"object": "error", "message": "the model does not exist", "code": 400}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def error_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ErrorHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_a_server_that_answers_an_error_is_one_line_exit_1(qwen3_rag, indexed, error_server):
    line = one_line_error(qwen3_rag("search", "sun", "--reranker-url", error_server), 1)
    assert "the model does not exist" in line


# ----------------------------------------------------------------------------------------- models (item 6)


def test_a_truncated_weight_file_is_one_line_exit_1(qwen3_rag, corpus, tiny_embedding_path, tmp_path):
    folder = tmp_path / "damaged"
    shutil.copytree(tiny_embedding_path, folder)
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    line = one_line_error(qwen3_rag("index", corpus, "--embedding-model", folder), 1)
    assert "model.safetensors is corrupt or truncated" in line


def test_nan_from_the_model_is_one_line_exit_1(qwen3_rag, corpus, tiny_embedding_path, tmp_path, cli_env):
    folder = tmp_path / "nan-model"
    shutil.copytree(tiny_embedding_path, folder)
    tensors = load_file(folder / "model.safetensors")
    name = next(n for n in tensors if n.endswith("norm.weight") and "layers" not in n)  # the final norm
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    line = one_line_error(qwen3_rag("index", corpus, "--embedding-model", folder), 1)
    assert "produced NaN or infinity" in line


@pytest.mark.parametrize("error", [MemoryError(), torch.OutOfMemoryError("CUDA out of memory. Tried to allocate")])
def test_running_out_of_memory_is_one_line_exit_1(qwen3_rag, indexed, monkeypatch, error):
    from qwen3_rag.embedder import Qwen3Embedder

    def embed_queries(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(Qwen3Embedder, "embed_queries", embed_queries)
    line = one_line_error(qwen3_rag("search", "sun"), 1)
    assert "ran out of memory" in line and "--batch-size" in line


def test_a_runtime_error_that_is_not_out_of_memory_is_not_swallowed(qwen3_rag, indexed, monkeypatch):
    from qwen3_rag.embedder import Qwen3Embedder

    def embed_queries(self, *args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Qwen3Embedder, "embed_queries", embed_queries)
    with pytest.raises(RuntimeError, match="a bug"):
        qwen3_rag("search", "sun")


# ----------------------------------------------------------------------------------- a closed pipe (item 6)


def _index_many_documents(qwen3_rag, tmp_path) -> None:
    """60 documents whose `search --json` output is larger than a pipe holds, indexed into the CLI's database."""
    corpus = tmp_path / "many"
    corpus.mkdir()
    paragraph = "The sun is a star, and stars shine because fusion turns hydrogen into helium. " * 30
    for i in range(60):
        (corpus / f"doc{i:02d}.txt").write_text(f"Document {i}. {paragraph}", encoding="utf-8")
    assert qwen3_rag("index", corpus, "--quiet").code == 0


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(qwen3_rag, tmp_path, tiny_models_env, cli_env):
    """``qwen3-rag search ... --json | head -c 10``: the output is larger than a pipe holds, the reader takes 10
    bytes and closes its end, and the writer stops quietly with the SIGPIPE status."""
    _index_many_documents(qwen3_rag, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3_RAG_")}
    env.update(tiny_models_env, QWEN3_RAG_DB=str(cli_env))
    command = [console_script(), "search", "sun", "--no-rerank", "--top-n", "500", "--json"]
    read_end, write_end = os.pipe()
    with subprocess.Popen(command, stdout=write_end, stderr=subprocess.PIPE, env=env) as process:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as reader:
            head = reader.read(10)
        # the reader is gone: the rest of the ~150 kB of JSON meets a closed pipe
        err = process.stderr.read().decode()
        code = process.wait(timeout=300)
    assert head == b'{\n  "query'
    assert code == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err


def test_the_json_output_is_larger_than_a_pipe_holds(qwen3_rag, tmp_path):
    """The test above needs the output not to fit into the pipe at once (64 KiB on Linux)."""
    _index_many_documents(qwen3_rag, tmp_path)
    found = qwen3_rag("search", "sun", "--no-rerank", "--top-n", "500", "--json")
    assert found.code == 0
    assert len(found.out.encode()) > 2 * 65536


# ------------------------------------------------------------------------------- --device, --dtype (item 7)


def _absent_devices() -> list[str]:
    devices = [f"cuda:{max(torch.cuda.device_count(), 1) + 98}"]  # more GPUs than any machine here has
    if not torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        devices.append("mps")
    return devices


@pytest.mark.parametrize("device", _absent_devices())
@pytest.mark.parametrize("command", ["index", "search", "ask", "eval"])
def test_an_absent_device_is_one_line_exit_2_before_any_model_loads(
    qwen3_rag, corpus, cli_env, no_model_loads, command, device
):
    target = {"index": corpus, "eval": corpus / "questions.json"}.get(command, "a question")
    line = one_line_error(qwen3_rag(command, target, "--device", device), 2)
    assert f"--device: device {device!r} is not available" in line
    assert "available here: cpu" in line
    assert not cli_env.exists()  # nothing was written either


def test_the_device_variable_is_checked_too(qwen3_rag, corpus, no_model_loads, monkeypatch):
    monkeypatch.setenv("QWEN3_RAG_DEVICE", "cuda:99")
    line = one_line_error(qwen3_rag("index", corpus), 2)
    assert "QWEN3_RAG_DEVICE: device 'cuda:99' is not available" in line


def test_a_device_name_torch_does_not_know_is_exit_2(qwen3_rag, corpus, no_model_loads):
    line = one_line_error(qwen3_rag("index", corpus, "--device", "gpu0"), 2)
    assert "--device: device must be a torch device" in line


# ---------------------------------------------------------------------------------------------------- int8


def test_index_and_search_in_int8(qwen3_rag, corpus, cli_env):
    indexed = qwen3_rag("index", corpus, "--dtype", "int8", "--quiet")
    assert indexed.code == 0, indexed.err
    found = qwen3_rag("search", "Why does the sun shine?", "--dtype", "int8", "--json")
    assert found.code == 0, found.err
    results = json.loads(found.out)["results"]
    assert len(results) == 3 and all(0.0 <= r["rerank_score"] <= 1.0 for r in results)


def test_an_int8_index_is_searched_in_float32_and_the_other_way_round(qwen3_rag, corpus, tmp_path, monkeypatch):
    """The dtype is not part of the index's fingerprint: int8 vectors are the float32 ones within quantization
    error, so either can search the other's index."""
    assert qwen3_rag("index", corpus, "--dtype", "int8", "--quiet").code == 0
    found = qwen3_rag("search", "sun", "--dtype", "float32", "--no-rerank", "--json")
    assert found.code == 0, found.err
    assert len(json.loads(found.out)["results"]) == 3
    monkeypatch.setenv("QWEN3_RAG_DB", str(tmp_path / "fp32-db"))
    assert qwen3_rag("index", corpus, "--dtype", "float32", "--quiet").code == 0
    monkeypatch.setenv("QWEN3_RAG_DTYPE", "int8")  # the variable, as a user would set it
    found = qwen3_rag("search", "sun", "--json")
    assert found.code == 0, found.err


def test_the_fingerprint_does_not_record_the_dtype(qwen3_rag, corpus, cli_env):
    import chromadb
    from chromadb.config import Settings

    assert qwen3_rag("index", corpus, "--dtype", "int8", "--quiet").code == 0
    client = chromadb.PersistentClient(path=str(cli_env), settings=Settings(anonymized_telemetry=False))
    metadata = client.get_collection("qwen3_rag").metadata
    assert not any("dtype" in key or "int8" in str(value) for key, value in metadata.items())


def test_the_same_weights_in_another_folder_and_another_dtype_are_recognised(
    qwen3_rag, corpus, tmp_path, tiny_embedding_path
):
    """The probe vector that recognises a copy of the weights agrees across int8 and float32."""
    assert qwen3_rag("index", corpus, "--dtype", "int8", "--quiet").code == 0
    copy = shutil.copytree(tiny_embedding_path, tmp_path / "offline-copy")
    found = qwen3_rag("search", "sun", "--embedding-model", copy, "--dtype", "float32", "--no-rerank")
    assert found.code == 0, found.err


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps"])
def test_int8_on_a_gpu_is_one_line_exit_2_before_any_model_loads(qwen3_rag, corpus, cli_env, no_model_loads, device):
    line = one_line_error(qwen3_rag("index", corpus, "--dtype", "int8", "--device", device), 2)
    assert "--dtype int8: dtype='int8' is a CPU mode" in line
    assert not cli_env.exists()


def test_the_chat_model_of_ask_keeps_a_float_dtype_under_int8(qwen3_rag, indexed, monkeypatch):
    asked = []
    original = _answer.ChatModel.__init__

    def init(self, model, *, device=None, dtype=None):
        asked.append(dtype)
        original(self, model, device=device, dtype=dtype)

    monkeypatch.setattr(_answer.ChatModel, "__init__", init)
    answered = qwen3_rag("ask", "sun?", "--dtype", "int8", "--max-new-tokens", "2")
    assert answered.code == 0, answered.err
    answered = qwen3_rag("ask", "sun?", "--dtype", "float32", "--max-new-tokens", "2")
    assert answered.code == 0, answered.err
    assert asked == [None, "float32"]


def test_an_unknown_dtype_variable_is_exit_2(qwen3_rag, corpus, monkeypatch, no_model_loads):
    monkeypatch.setenv("QWEN3_RAG_DTYPE", "int4")
    line = one_line_error(qwen3_rag("index", corpus), 2)
    assert "QWEN3_RAG_DTYPE must be float32, bfloat16, float16 or int8, got 'int4'" in line


def test_the_dtype_help_names_int8_and_the_cpu_default(qwen3_rag, capsys):
    from qwen3_rag.cli import main

    assert main(["search", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "{float32,bfloat16,float16,int8}" in text
    assert "default: bfloat16 on CUDA and on CPUs with native bf16, float32 elsewhere" in text


# --------------------------------------------------------------------------------- a question too long (item 9)


def test_a_question_longer_than_max_length_is_refused_not_cut(qwen3_rag, indexed, tiny_embedding_path):
    """40,000 tokens against --max-length 128: refused with the count, before anything is embedded or cut (a cut
    question is another question); with --no-rerank too, since the embedder would cut it as well."""
    from qwen3_rag import Qwen3Embedder
    from qwen3_rag.prompts import DEFAULT_INSTRUCTION

    question = "word " * 40_000
    tokens = Qwen3Embedder(tiny_embedding_path, device="cpu").count_tokens([question], instruction=DEFAULT_INSTRUCTION)
    assert tokens[0] > 40_000
    for flags in ([], ["--no-rerank"]):
        line = one_line_error(qwen3_rag("search", question, "--max-length", "128", *flags), 2)
        assert line == (
            f"qwen3-rag search: error: the question takes {tokens[0] + 1} tokens with its instruction, more than "
            "--max-length 128: shorten it, or raise --max-length (up to 32768)"
        )
    assert one_line_error(qwen3_rag("ask", question, "--max-length", "128"), 2).startswith("qwen3-rag ask: error:")


def test_a_question_that_fits_the_embedder_but_leaves_the_reranker_no_room_is_refused(qwen3_rag, indexed):
    question = " ".join(["sun"] * 60)  # 80 tokens for the embedder; the reranker's prompt adds ~40
    line = one_line_error(qwen3_rag("search", question, "--max-length", "128"), 2)
    assert line.startswith(
        "qwen3-rag search: error: the question is too long to rerank: the instruction and query take"
    )
    assert line.endswith("shorten the query or raise --max-length, or pass --no-rerank")
    found = qwen3_rag("search", question, "--max-length", "128", "--no-rerank", "--json")
    assert found.code == 0 and found.err == ""  # the embedder takes it whole


# ---------------------------------------------------------------------------------------- messages (item 10)


def test_a_model_path_that_is_a_file_is_reported_as_a_file(qwen3_rag, corpus, tiny_embedding_path):
    line = one_line_error(qwen3_rag("index", corpus, "--embedding-model", tiny_embedding_path / "config.json"), 1)
    assert "it is a file, not a model folder" in line and "holds no config.json" not in line


@pytest.mark.parametrize("path", ["./models/x", "../models/x", "/abs/missing/model", "~/no-such-model-folder"])
def test_a_missing_model_path_says_no_such_folder_not_hub_id(qwen3_rag, corpus, path):
    line = one_line_error(qwen3_rag("index", corpus, "--embedding-model", path), 1)
    assert "there is no local folder at" in line
    assert "looked for it as a Hugging Face Hub id" not in line


def test_an_empty_llm_folder_says_it_holds_no_model(qwen3_rag, indexed, tmp_path):
    (tmp_path / "empty-llm").mkdir()
    line = one_line_error(qwen3_rag("ask", "sun?", "--llm", tmp_path / "empty-llm"), 1)
    assert "Could not load the --llm chat model" in line
    assert "the folder holds no config.json, so it is not a model folder" in line
    assert "sentencepiece" not in line


def test_a_missing_llm_path_is_reported_as_a_path(qwen3_rag, indexed):
    line = one_line_error(qwen3_rag("ask", "sun?", "--llm", "./models/chat"), 1)
    assert "Could not load the --llm chat model './models/chat': there is no local folder at" in line


_WARN_ONCE = """
import logging, sys
import qwen3_rag.cli.search as search
from qwen3_rag.cli import main

retrieve = search.retrieve

def noisy(opts, console):
    logging.getLogger("huggingface_hub.file_download").warning("hub warning for the test")
    logging.getLogger("transformers.tokenization_utils_base").warning("transformers warning for the test")
    logging.getLogger("qwen3_rag").warning("qwen3_rag warning for the test")
    return retrieve(opts, console)

search.retrieve = noisy
sys.exit(main(["search", "sun", "--no-rerank"]))
"""


def test_third_party_warnings_are_printed_once(qwen3_rag, indexed, tiny_models_env, cli_env):
    """huggingface_hub prints its warnings through its own handler; a root handler of the CLI printed each of them
    again as ``qwen3-rag: WARNING: ...``. Run in a fresh process, as the console script runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3_RAG_")}
    env.update(tiny_models_env, QWEN3_RAG_DB=str(cli_env))
    done = subprocess.run(
        [sys.executable, "-c", _WARN_ONCE], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert [line for line in lines if "hub warning for the test" in line] == ["hub warning for the test"]
    assert sum("transformers warning for the test" in line for line in lines) <= 1  # silenced, or once
    ours = [line for line in lines if "qwen3_rag warning" in line]
    assert ours == ["qwen3-rag: WARNING: qwen3_rag warning for the test"]


def test_index_chunks_never_reach_the_truncation_warning(qwen3_rag, tmp_path, cli_env):
    """Chunks are cut in the embedding model's tokens to at most --chunk-size <= --max-length - 1, so indexing
    never truncates (the core's truncation warning, which can only name an input's index, never fires here)."""
    doc = tmp_path / "long.md"
    doc.write_text(" ".join(f"Sentence {i} talks about the sun and the stars." for i in range(400)), encoding="utf-8")
    indexed = qwen3_rag("index", doc, "--max-length", "64", "--chunk-size", "63", "--chunk-overlap", "8")
    assert indexed.code == 0, indexed.err
    assert "truncated" not in indexed.err
    assert "Indexed 1 files" in indexed.err


def test_a_search_that_cuts_passages_names_the_chunks_it_cut(qwen3_rag, tmp_path, cli_env):
    """The one CLI path that truncates: `search --max-length N` below the index's chunks. The warning names the
    file and chunk of each passage the reranker cut, not its position in a list the user never saw."""
    doc = tmp_path / "long.md"
    doc.write_text(" ".join(f"Sentence {i} talks about the sun and the stars." for i in range(300)), encoding="utf-8")
    assert qwen3_rag("index", doc, "--chunk-size", "200", "--chunk-overlap", "0").code == 0
    result = qwen3_rag("search", "sun", "--max-length", "96", "--top-k", "3", "--top-n", "3")
    assert result.code == 0, result.err
    warning = [line for line in result.err.splitlines() if "truncated" in line]
    assert len(warning) == 1, result.err
    assert "-- cut: " in warning[0]
    assert warning[0].count("long.md:1, chunk ") == 3  # the three passages reranked, each named
