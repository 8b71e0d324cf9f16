"""qwen3_rag.remote without a server: requests, batching, concurrency, retries and error messages against
``httpx.MockTransport`` (fast); plus the reranker's text split checked against the local core's token ids."""

from __future__ import annotations

import base64
import copy
import json
import logging
import pickle
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from qwen3_rag import remote
from qwen3_rag.prompts import DEFAULT_INSTRUCTION, ENDOFTEXT, RERANK_PREFIX, RERANK_SUFFIX, format_rerank_body
from qwen3_rag.remote import RemoteError, VLLMEmbeddingClient, VLLMRerankClient, rerank_text_pair

BASE = "http://vllm.test:8000"
MODEL = "Qwen/Qwen3-Embedding-0.6B"

# vLLM 0.32.0's answer to `dimensions` on a server started without the Matryoshka override
# (vllm/pooling_params.py), verbatim; tests/scaleout/test_vllm.py checks it against a real server.
VLLM_NO_MATRYOSHKA = (
    "Model '<path>' does not support Matryoshka embeddings; dimensions must be unset (received dimensions=32)."
)


def vllm_error(status: int, message: str) -> httpx.Response:
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
    return httpx.Response(status, json={"error": {"message": message, "type": kind, "param": None, "code": status}})


def b64(vector) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


class FakeVLLM:
    """A scripted vLLM: records requests; ``/tokenize`` answers as a tokenizer that appends or not."""

    def __init__(self, *, appends_endoftext: bool = True, dim: int = 8, failures=(), tokenize_status: int = 200):
        self.appends_endoftext = appends_endoftext
        self.dim = dim
        self.failures = list(failures)  # consumed one per /v1/embeddings or /score request
        self.tokenize_status = tokenize_status
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0

    def payloads(self, route: str) -> list[dict]:
        return [json.loads(r.content) for r in self.requests if r.url.path.endswith(route)]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            if not request.url.path.endswith("/tokenize") and self.failures:
                failure = self.failures.pop(0)
                if isinstance(failure, Exception):
                    raise failure
                return failure
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            return self.answer(request, json.loads(request.content))
        finally:
            with self.lock:
                self.in_flight -= 1

    def answer(self, request: httpx.Request, body: dict) -> httpx.Response:
        if request.url.path.endswith("/tokenize"):
            if self.tokenize_status != 200:
                return vllm_error(self.tokenize_status, "Not Found")
            ids = [64] + ([151643] if body["prompt"].endswith(ENDOFTEXT) else [])
            if body.get("add_special_tokens", True) and self.appends_endoftext:
                ids.append(151643)
            return httpx.Response(200, json={"count": len(ids), "tokens": ids, "max_model_len": 4096})
        if request.url.path.endswith("/v1/embeddings"):
            dim = body.get("dimensions") or self.dim
            # Not unit length, and in reverse order: the client must re-normalise and sort by index.
            data = [
                {"index": i, "object": "embedding", "embedding": b64(np.arange(1, dim + 1) + len(text))}
                for i, text in enumerate(body["input"])
            ]
            return httpx.Response(200, json={"object": "list", "model": body["model"], "data": data[::-1]})
        if request.url.path.endswith("/score"):
            data = [{"index": i, "object": "score", "score": len(t) / 1000} for i, t in enumerate(body["text_2"])]
            return httpx.Response(200, json={"object": "list", "model": body["model"], "data": data[::-1]})
        return httpx.Response(404, json={"detail": "Not Found"})


@pytest.fixture
def sleeps(monkeypatch):
    recorded: list[float] = []
    monkeypatch.setattr(remote, "_sleep", recorded.append)
    return recorded


def embedding_client(fake: FakeVLLM, **kwargs) -> VLLMEmbeddingClient:
    return VLLMEmbeddingClient(MODEL, BASE, transport=httpx.MockTransport(fake), **kwargs)


def rerank_client(fake: FakeVLLM, **kwargs) -> VLLMRerankClient:
    return VLLMRerankClient("Qwen/Qwen3-Reranker-0.6B", BASE, transport=httpx.MockTransport(fake), **kwargs)


# -- the reranker's prompt split -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query", ["What is the capital of China?", "gravity", "question?\n", "two\nlines ", " spaced ", "法国的首都?"]
)
@pytest.mark.parametrize("document", ["Beijing.", "", "\nleading newline", "<Document>: tricky", "x " * 20])
def test_rerank_text_pair_concatenates_to_the_card_prompt(query, document):
    text_1, text_2 = rerank_text_pair(query, document, DEFAULT_INSTRUCTION)
    assert text_1 + text_2 == RERANK_PREFIX + format_rerank_body(query, document, DEFAULT_INSTRUCTION) + RERANK_SUFFIX
    assert text_1.startswith(RERANK_PREFIX) and text_1.endswith("\n")
    assert text_2.startswith("<Document>: ") and text_2.endswith(RERANK_SUFFIX)
    assert rerank_text_pair(query, "other", DEFAULT_INSTRUCTION)[0] == text_1  # shared by all documents


@pytest.fixture(scope="module")
def local_reranker(qwen_reranker_path):
    from qwen3_rag import Qwen3Reranker

    return Qwen3Reranker(qwen_reranker_path, device="cpu")


@pytest.mark.parametrize("query", ["What is the capital of China?", "question?\n", "two\nlines ", "法国的首都?"])
def test_rerank_text_pair_splits_where_the_card_prompt_tokenizes_apart(qwen_tokenizer, local_reranker, query):
    """Tokenized apart or together, the two texts give the ids the local core scores."""
    local = local_reranker
    documents = ["Beijing is the capital.", "", " leading space", "end?\n"]
    expected = local.tokenize(query, documents, instruction=DEFAULT_INSTRUCTION)
    for document, ids in zip(documents, expected, strict=True):
        text_1, text_2 = rerank_text_pair(query, document, DEFAULT_INSTRUCTION)
        together = qwen_tokenizer(text_1 + text_2, add_special_tokens=False)["input_ids"]
        apart = [*qwen_tokenizer(text_1, add_special_tokens=False)["input_ids"]] + [
            *qwen_tokenizer(text_2, add_special_tokens=False)["input_ids"]
        ]
        assert together == ids
        assert apart == ids


# -- embeddings --------------------------------------------------------------------------------------------


def test_embed_sends_the_texts_unchanged_and_renormalises():
    fake = FakeVLLM()
    texts = ["Instruct: task\nQuery:what?", "a document\nwith newlines", "  spaces  "]
    with embedding_client(fake) as client:
        vectors = client.embed(texts)
    (payload,) = fake.payloads("/v1/embeddings")
    assert payload == {"model": MODEL, "input": texts, "encoding_format": "base64"}
    assert vectors.dtype == np.float32 and vectors.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    for text, vector in zip(texts, vectors, strict=True):  # in input order, though answered in reverse
        raw = np.arange(1, 9, dtype=np.float32) + len(text)  # as the fake built it
        np.testing.assert_allclose(vector, raw / np.linalg.norm(raw), atol=1e-6)


def test_dimensions_are_passed_through_and_the_result_renormalised():
    fake = FakeVLLM()
    with embedding_client(fake) as client:
        vectors = client.embed(["a", "b"], dimensions=4)
    assert fake.payloads("/v1/embeddings")[0]["dimensions"] == 4
    assert vectors.shape == (2, 4)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_a_server_that_ignores_dimensions_is_truncated_then_renormalised():
    fake = FakeVLLM()
    fake.answer = lambda request, body: FakeVLLM.answer(fake, request, {**body, "dimensions": None})
    with embedding_client(fake) as client:
        vectors = client.embed(["abc"], dimensions=4)
    raw = np.arange(1, 5, dtype=np.float32) + 3
    np.testing.assert_allclose(vectors[0], raw / np.linalg.norm(raw), atol=1e-6)


def test_without_matryoshka_support_the_error_quotes_the_flag_to_add(sleeps):
    fake = FakeVLLM(failures=[vllm_error(400, VLLM_NO_MATRYOSHKA)])
    with embedding_client(fake) as client, pytest.raises(RemoteError) as error:
        client.embed(["a"], dimensions=32)
    message = str(error.value)
    assert """--hf-overrides '{"is_matryoshka": true}'""" in message
    assert VLLM_NO_MATRYOSHKA in message  # the server's own words too
    assert error.value.status_code == 400
    assert sleeps == []  # a 4xx is never retried
    assert len(fake.payloads("/v1/embeddings")) == 1


def test_a_server_whose_tokenizer_does_not_append_endoftext_gets_it_from_the_client():
    fake = FakeVLLM(appends_endoftext=False)
    with embedding_client(fake) as client:
        client.embed(["query", "document"])
        client.embed(["again"])
    inputs = [p["input"] for p in fake.payloads("/v1/embeddings")]
    assert inputs == [["query" + ENDOFTEXT, "document" + ENDOFTEXT], ["again" + ENDOFTEXT]]
    assert len(fake.payloads("/tokenize")) == 2  # asked once per client, not per call


def test_a_server_whose_tokenizer_appends_endoftext_gets_the_texts_as_they_are():
    fake = FakeVLLM(appends_endoftext=True)
    with embedding_client(fake) as client:
        client.embed(["query"])
    assert fake.payloads("/v1/embeddings")[0]["input"] == ["query"]


def test_a_server_without_tokenize_is_assumed_to_append_endoftext(caplog):
    fake = FakeVLLM(appends_endoftext=False, tokenize_status=404)
    with embedding_client(fake) as client, caplog.at_level(logging.WARNING, logger="qwen3_rag"):
        client.embed(["query"])
    assert fake.payloads("/v1/embeddings")[0]["input"] == ["query"]
    assert "assuming it does" in caplog.text


def test_requests_are_batched_sent_concurrently_within_the_bound_and_reassembled_in_order():
    fake = FakeVLLM()
    fake.delay = 0.05
    texts = [f"text {i}" + "x" * i for i in range(70)]
    with embedding_client(fake, batch_size=8, max_concurrency=3) as client:
        vectors = client.embed(texts)
    sizes = [len(p["input"]) for p in fake.payloads("/v1/embeddings")]
    assert sorted(sizes) == [6] + [8] * 8
    assert fake.max_in_flight == 3  # concurrent, and never more than max_concurrency
    with embedding_client(FakeVLLM()) as one_batch:
        np.testing.assert_allclose(vectors[42], one_batch.embed([texts[42]])[0], atol=1e-6)


def test_hidden_size_and_empty_input():
    fake = FakeVLLM(dim=16)
    with embedding_client(fake) as client:
        assert client.embed([]).shape == (0, 16)
        assert client.embed([], dimensions=8).shape == (0, 8)
        assert client.hidden_size == 16
    assert len(fake.payloads("/v1/embeddings")) == 1  # asked once


# -- retries -----------------------------------------------------------------------------------------------


def test_5xx_answers_are_retried_with_exponential_backoff(sleeps):
    fake = FakeVLLM(failures=[vllm_error(500, "boom"), httpx.Response(503, text="overloaded")])
    with embedding_client(fake, backoff=0.5) as client:
        assert client.embed(["a"]).shape == (1, 8)
    assert sleeps == [0.5, 1.0]
    assert len(fake.payloads("/v1/embeddings")) == 3


def test_connection_errors_are_retried(sleeps):
    fake = FakeVLLM(failures=[httpx.ConnectError("connection refused"), httpx.RemoteProtocolError("dropped")])
    with embedding_client(fake, backoff=0.25) as client:
        assert client.embed(["a"]).shape == (1, 8)
    assert sleeps == [0.25, 0.5]


def test_retries_stop_after_max_retries_with_the_last_server_message(sleeps):
    fake = FakeVLLM(failures=[vllm_error(503, f"still loading {i}") for i in range(10)])
    with embedding_client(fake, max_retries=3, backoff=1.0) as client, pytest.raises(RemoteError) as error:
        client.embed(["a"])
    assert sleeps == [1.0, 2.0, 4.0]
    assert len(fake.payloads("/v1/embeddings")) == 4
    assert "503" in str(error.value) and "still loading 3" in str(error.value)
    assert error.value.status_code == 503


def test_backoff_is_capped(sleeps):
    fake = FakeVLLM(failures=[vllm_error(502, "bad gateway")] * 8)
    with embedding_client(fake, max_retries=7, backoff=4.0) as client, pytest.raises(RemoteError):
        client.embed(["a"])
    assert sleeps == [4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422, 429])
def test_4xx_answers_are_never_retried_and_carry_the_server_message(sleeps, status):
    fake = FakeVLLM(failures=[vllm_error(status, f"server says no ({status})")])
    with rerank_client(fake) as client, pytest.raises(RemoteError) as error:
        client.score("q", ["d"], instruction=DEFAULT_INSTRUCTION)
    assert f"server says no ({status})" in str(error.value)
    assert f"{BASE}/score" in str(error.value)
    assert error.value.status_code == status
    assert sleeps == []
    assert len(fake.payloads("/score")) == 1


def test_an_unknown_model_name_points_at_v1_models():
    fake = FakeVLLM(failures=[vllm_error(404, "The model `wrong` does not exist.")])
    client = VLLMEmbeddingClient("wrong", BASE, transport=httpx.MockTransport(fake))
    with client, pytest.raises(RemoteError, match=r"does not exist.*GET http://vllm.test:8000/v1/models"):
        client.embed(["a"])


def test_read_timeouts_are_not_retried_and_name_the_timeout(sleeps):
    fake = FakeVLLM(failures=[httpx.ReadTimeout("timed out")])
    with embedding_client(fake, timeout=2.5) as client, pytest.raises(RemoteError, match=r"timeout=2.5"):
        client.embed(["a"])
    assert sleeps == []


def test_non_json_and_malformed_answers_are_errors_not_garbage():
    fake = FakeVLLM(failures=[httpx.Response(200, text="<html>proxy</html>")])
    with embedding_client(fake) as client, pytest.raises(RemoteError, match="non-JSON"):
        client.embed(["a"])
    fake = FakeVLLM(failures=[httpx.Response(200, json={"data": []})])
    with rerank_client(fake) as client, pytest.raises(RemoteError, match="0 results for 1 inputs"):
        client.score("q", ["d"], instruction=DEFAULT_INSTRUCTION)


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_an_unreachable_server_is_named_in_the_error(sleeps):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = VLLMEmbeddingClient(MODEL, f"http://127.0.0.1:{port}", max_retries=2, timeout=5)
    with client, pytest.raises(RemoteError, match=rf"could not reach the vLLM server at http://127.0.0.1:{port}/"):
        client.embed(["a"])
    assert sleeps == [0.5, 1.0]


# -- reranking ---------------------------------------------------------------------------------------------


def test_score_sends_the_card_prompt_split_in_two_and_keeps_input_order():
    fake = FakeVLLM()
    documents = ["short", "a longer document", "mid size"]
    with rerank_client(fake, batch_size=2, max_concurrency=2) as client:
        scores = client.score("the query", documents, instruction="my task")
    payloads = fake.payloads("/score")
    assert [p["text_2"] for p in payloads] == [
        [rerank_text_pair("the query", d, "my task")[1] for d in documents[:2]],
        [rerank_text_pair("the query", documents[2], "my task")[1]],
    ]
    assert {p["text_1"] for p in payloads} == {rerank_text_pair("the query", "", "my task")[0]}
    assert all(p["model"] == "Qwen/Qwen3-Reranker-0.6B" for p in payloads)
    assert scores == [len(rerank_text_pair("the query", d, "my task")[1]) / 1000 for d in documents]


def test_score_of_no_documents_sends_nothing():
    fake = FakeVLLM()
    with rerank_client(fake) as client:
        assert client.score("q", [], instruction=DEFAULT_INSTRUCTION) == []
    assert fake.requests == []


# -- configuration -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
        ("https://host/vllm/v1/", "https://host/vllm"),
    ],
)
def test_base_url_forms(given, expected):
    fake = FakeVLLM()
    with VLLMEmbeddingClient(MODEL, given, transport=httpx.MockTransport(fake)) as client:
        assert client.base_url == expected
        client.embed(["a"])
    assert str(fake.requests[-1].url) == f"{expected}/v1/embeddings"


def test_api_key_is_sent_as_a_bearer_token_and_only_when_given():
    fake = FakeVLLM()
    with VLLMEmbeddingClient(MODEL, BASE, api_key="sk-test", transport=httpx.MockTransport(fake)) as client:
        client.embed(["a"])
    assert {r.headers.get("authorization") for r in fake.requests} == {"Bearer sk-test"}
    fake = FakeVLLM()
    with embedding_client(fake) as client:
        client.embed(["a"])
    assert all("authorization" not in r.headers for r in fake.requests)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": "127.0.0.1:8000"},
        {"model": ""},
        {"timeout": 0},
        {"max_concurrency": 0},
        {"max_retries": -1},
        {"batch_size": 0},
        {"batch_size": True},
    ],
)
def test_invalid_configuration_is_refused(kwargs):
    args = {"model": MODEL, "base_url": BASE, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        VLLMEmbeddingClient(args.pop("model"), args.pop("base_url"), **args)


def test_invalid_inputs_are_refused_before_any_request():
    fake = FakeVLLM()
    with embedding_client(fake) as client:
        with pytest.raises(TypeError):
            client.embed("one string")
        with pytest.raises(ValueError, match="dimensions"):
            client.embed(["a"], dimensions=0)
    with rerank_client(fake) as client:
        with pytest.raises(TypeError):
            client.score("q", "one string", instruction=DEFAULT_INSTRUCTION)
        with pytest.raises(ValueError, match="instruction"):
            client.score("q", ["d"], instruction="")
    assert fake.requests == []


def test_clients_pickle_and_deep_copy_with_their_configuration():
    for cls in (VLLMEmbeddingClient, VLLMRerankClient):
        client = cls(MODEL, BASE, api_key="sk-test", timeout=7.0, max_concurrency=2, max_retries=5, batch_size=3)
        for clone in (pickle.loads(pickle.dumps(client)), copy.deepcopy(client)):
            assert (clone.model, clone.base_url, clone.timeout) == (MODEL, BASE, 7.0)
            assert (clone.max_concurrency, clone.max_retries, clone.batch_size) == (2, 5, 3)
            assert clone._client is not client._client and not clone._client.is_closed
            assert clone._client.headers["authorization"] == "Bearer sk-test"
            clone.close()
        client.close()


def test_public_names():
    assert set(remote.__all__) == {
        "MATRYOSHKA_OVERRIDES",
        "RERANKER_OVERRIDES",
        "RemoteError",
        "VLLMEmbeddingClient",
        "VLLMRerankClient",
        "rerank_text_pair",
    }
    assert json.loads(remote.MATRYOSHKA_OVERRIDES) == {"is_matryoshka": True}
    assert json.loads(remote.RERANKER_OVERRIDES) == {
        "architectures": ["Qwen3ForSequenceClassification"],
        "classifier_from_token": ["no", "yes"],
        "is_original_qwen3_reranker": True,
    }
