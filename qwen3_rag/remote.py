"""Clients for Qwen3-Embedding and Qwen3-Reranker served by vLLM (``vllm serve``), faithful to the model cards.

The same token ids reach the served model as the local one, so it returns the same vectors and scores (the
tests pin both to 1e-5 against a real vLLM server). The text is formatted and tokenized here, through the
server's own tokenizer (``/tokenize``), with the local core's rules (``qwen3_rag._tokenize``): control-token
strings in user text stay ordinary text, inputs are cut at ``max_length`` (embeddings keep their final
``<|endoftext|>``, the reranker loses the document's end), and the server gets token ids:

- embeddings: ``/v1/embeddings`` with token-id inputs; ``dimensions`` is passed through and every vector is
  L2-normalised again on arrival;
- reranking: the card's whole prompt as token ids to ``/classify``, which the original reranker served with
  :data:`RERANKER_OVERRIDES` answers with P(yes). (``/score`` and ``/rerank`` take text only, which the server
  would tokenize with control tokens recognised.)

Requests are cut into batches of ``batch_size`` inputs and sent at most ``max_concurrency`` at a time;
connection errors and 5xx answers are retried with exponential backoff, 4xx answers never are. Every
failure is a :class:`RemoteError` that carries the server's own message (on one line); NaN or infinity from the
server is a :class:`~qwen3_rag.NonFiniteError`. Constructing a client sends nothing.

Server side (see docs/vllm.md)::

    vllm serve Qwen/Qwen3-Embedding-0.6B --runner pooling --hf-overrides '{"is_matryoshka": true}'
    vllm serve Qwen/Qwen3-Reranker-0.6B --runner pooling --hf-overrides \\
        '{"architectures":["Qwen3ForSequenceClassification"],"classifier_from_token":["no","yes"],"is_original_qwen3_reranker":true}'
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("qwen3_rag.remote needs httpx: pip install 'qwen3-rag[vllm]'") from exc

from qwen3_rag._tokenize import TokenSource, embedding_rows, rerank_rows
from qwen3_rag._validation import (
    NonFiniteError,
    check_dimensions,
    check_text,
    check_texts,
    non_finite_error,
    non_finite_rows,
    one_line,
)
from qwen3_rag.prompts import ENDOFTEXT

__all__ = [
    "MATRYOSHKA_OVERRIDES",
    "RERANKER_OVERRIDES",
    "RemoteError",
    "VLLMEmbeddingClient",
    "VLLMRerankClient",
]

logger = logging.getLogger("qwen3_rag")

T = TypeVar("T")

MATRYOSHKA_OVERRIDES = '{"is_matryoshka": true}'
"""``--hf-overrides`` value that lets vLLM serve ``dimensions`` for Qwen3-Embedding."""

RERANKER_OVERRIDES = (
    '{"architectures":["Qwen3ForSequenceClassification"],"classifier_from_token":["no","yes"],'
    '"is_original_qwen3_reranker":true}'
)
"""``--hf-overrides`` value that makes vLLM score the original Qwen3-Reranker from its yes/no logits."""

MAX_BACKOFF = 30.0
"""Longest pause between two attempts, in seconds."""

# Worth another attempt: the request never reached the server or the connection broke under it. Read and
# write timeouts are not retried: the server is busy with the request, and sending it again adds load.
_RETRYABLE_ERRORS = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)

_sleep = time.sleep  # tests replace this to record the backoff without waiting


class RemoteError(RuntimeError):
    """A request to the model server failed: the server's message, or which URL could not be reached.

    Attributes:
        url: the URL of the failed request.
        status_code: the HTTP status, or ``None`` when no answer came.
    """

    def __init__(self, message: str, *, url: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code


class _VLLMClient(TokenSource):
    """Connection, batching, concurrency, retries and the server's tokenizer, shared by the two clients."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float | None = 60.0,
        max_concurrency: int = 4,
        max_retries: int = 3,
        batch_size: int = 32,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be the name the server serves (see GET /v1/models), got {model!r}")
        self.model = model
        self.base_url = _normalise_base_url(base_url)
        self.timeout = _check_number(timeout, "timeout", minimum=0.0, allow_none=True, strict=True)
        self.max_concurrency = int(_check_number(max_concurrency, "max_concurrency", minimum=1, integer=True))
        self.max_retries = int(_check_number(max_retries, "max_retries", minimum=0, integer=True))
        self.batch_size = int(_check_number(batch_size, "batch_size", minimum=1, integer=True))
        self.backoff = _check_number(backoff, "backoff", minimum=0.0)
        self._api_key = api_key
        self._transport = transport
        self.max_model_len: int | None = None
        """The server's ``--max-model-len``, once a ``/tokenize`` answer has told it."""
        self._client = self._connect()

    def _connect(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        return httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency),
            transport=self._transport,
        )

    # -- lifecycle -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and deep-copy the configuration; the copy opens its own connections."""
        return {key: value for key, value in self.__dict__.items() if key != "_client"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client = self._connect()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    # -- the server's tokenizer (qwen3_rag._tokenize.TokenSource) ------------------------------------

    @property
    def endoftext_id(self) -> int:
        """The served tokenizer's id of ``<|endoftext|>`` (asked once)."""
        token_id = self.token_id(ENDOFTEXT)
        if token_id is None:
            msg = (
                f"the tokenizer served at {self.base_url} ({self.model!r}) has no {ENDOFTEXT} token: not a Qwen3 model"
            )
            raise RemoteError(msg, url=f"{self.base_url}/tokenize")
        return token_id

    def _tokenize(self, prompt: str) -> list[int]:
        answer = self._post("/tokenize", {"model": self.model, "prompt": prompt, "add_special_tokens": False})
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            url = f"{self.base_url}/tokenize"
            raise RemoteError(f"unexpected answer from {url}: no token list in {str(answer)[:200]}", url=url)
        if isinstance(answer.get("max_model_len"), int):
            self.max_model_len = answer["max_model_len"]
        return tokens

    def _encode_prompt(self, text: str) -> list[int]:
        return self._tokenize(text)

    def _encode_pieces(self, pieces: list[str]) -> list[list[int]]:
        return self._map_batches(pieces, self._tokenize_pieces)

    def _tokenize_pieces(self, pieces: list[str]) -> list[list[int]]:
        """One ``/tokenize`` request for many pieces, joined by ``<|endoftext|>`` and split at its id again:
        an added token cuts the text before normalisation and pre-tokenization, so every piece tokenizes
        between two separators exactly as it does alone."""
        separator = self.endoftext_id
        segments: list[list[int]] = [[]]
        for token in self._tokenize(ENDOFTEXT.join(pieces)):
            if token == separator:
                segments.append([])
            else:
                segments[-1].append(token)
        if len(segments) != len(pieces):
            url = f"{self.base_url}/tokenize"
            msg = f"the tokenizer at {url} split {len(pieces)} texts into {len(segments)}: not a Qwen3 tokenizer?"
            raise RemoteError(msg, url=url)
        return segments

    # -- requests ------------------------------------------------------------------------------------

    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        """POST ``payload`` as JSON and return the decoded answer, retrying what is worth retrying."""
        url = f"{self.base_url}{path}"
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                response = self._client.post(path, json=payload)
            except _RETRYABLE_ERRORS as exc:
                reason = f"{type(exc).__name__}: {one_line(exc)}"
                error = RemoteError(
                    f"could not reach the vLLM server at {url} ({reason}) after {attempt + 1} attempt(s); "
                    "is `vllm serve` running there?",
                    url=url,
                )
            except httpx.TimeoutException as exc:
                msg = (
                    f"no answer from the vLLM server at {url} within timeout={self.timeout} s "
                    f"({type(exc).__name__}); raise timeout= or lower batch_size="
                )
                raise RemoteError(msg, url=url) from exc
            except httpx.HTTPError as exc:
                raise RemoteError(f"request to {url} failed: {type(exc).__name__}: {one_line(exc)}", url=url) from exc
            else:
                if response.is_success:
                    try:
                        return response.json()
                    except ValueError as exc:
                        status = response.status_code
                        msg = f"the server at {url} answered {status} with non-JSON: {response.text[:200]!r}"
                        raise RemoteError(msg, url=url, status_code=response.status_code) from exc
                message = _server_message(response)
                if response.status_code < 500:  # the request itself is wrong: sending it again cannot help
                    raise self._client_error(path, response.status_code, message)
                error = RemoteError(
                    f"the vLLM server at {url} answered {response.status_code} "
                    f"after {attempt + 1} attempt(s): {message}",
                    url=url,
                    status_code=response.status_code,
                )
                reason = f"{response.status_code}: {message}"
            if attempt + 1 < attempts:
                delay = min(self.backoff * 2**attempt, MAX_BACKOFF)
                logger.warning(
                    "vLLM server at %s: %s; retrying in %.1f s (attempt %d of %d)",
                    url,
                    reason,
                    delay,
                    attempt + 2,
                    attempts,
                )
                _sleep(delay)
        raise error

    def _client_error(self, path: str, status: int, message: str) -> Exception:
        url = f"{self.base_url}{path}"
        if "out of range float values" in message.lower():  # vLLM could not write NaN or inf as JSON
            msg = (
                f"the vLLM server at {url} computed NaN or infinity for the model {self.model!r} ({message}): the "
                "served model overflows in its dtype; restart the server with --dtype bfloat16 (or --dtype float32)"
            )
            return NonFiniteError(msg)
        text = f"the vLLM server at {url} rejected the request ({status}): {message}"
        if status == 404 and "does not exist" in message:
            text += (
                f" -- the first argument ({self.model!r}) must be a name the server serves: see GET "
                f"{self.base_url}/v1/models, or start the server with --served-model-name {self.model}"
            )
        elif status == 404 and path == "/tokenize":
            text += (
                " -- the client tokenizes through the server's /tokenize (to cut inputs at max_length and keep control "
                "tokens out of user text, as the local core does): serve the model with vLLM"
            )
        elif status == 404 and path == "/classify":
            text += f" -- serve the reranker with --runner pooling --hf-overrides '{RERANKER_OVERRIDES}'"
        elif "maximum context length" in message:
            limit = f" ({self.max_model_len} here)" if self.max_model_len else ""
            text += f" -- pass max_length= no larger than the server's --max-model-len{limit}"
        return RemoteError(text, url=url, status_code=status)

    def _map_batches(self, items: Sequence[T], call: Callable[[list[T]], list[Any]]) -> list[Any]:
        """``call`` on consecutive batches of ``batch_size`` items, at most ``max_concurrency`` at once;
        the results concatenated in input order. The first failure is raised once running batches end."""
        batches = [list(items[i : i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
        if len(batches) <= 1 or self.max_concurrency == 1:
            return [out for batch in batches for out in call(batch)]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(batches))) as pool:
            futures = [pool.submit(call, batch) for batch in batches]
            try:
                return [out for future in futures for out in future.result()]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


class VLLMEmbeddingClient(_VLLMClient):
    """Qwen3-Embedding served by vLLM, through its OpenAI-compatible ``/v1/embeddings``, with token-id inputs.

    Args:
        model: the name the server serves (its ``--served-model-name``, by default the Hub id or folder).
        base_url: the server's root, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is accepted).
        api_key: sent as ``Authorization: Bearer ...`` (vLLM's ``--api-key``).
        timeout: seconds per request (``None``: wait forever).
        max_concurrency: requests in flight at once.
        max_retries: further attempts after a connection error or a 5xx answer.
        batch_size: texts per request.
        backoff: seconds before the first retry; doubled for each next one (at most ``MAX_BACKOFF``).
        transport: an ``httpx`` transport (tests pass ``httpx.MockTransport``).

    Example:
        >>> from qwen3_rag.prompts import DEFAULT_INSTRUCTION, format_query
        >>> client = VLLMEmbeddingClient("Qwen/Qwen3-Embedding-0.6B", "http://127.0.0.1:8000")
        >>> q = client.embed([format_query("capital of China?", DEFAULT_INSTRUCTION)], dimensions=256)
        >>> d = client.embed(["The capital of China is Beijing."], dimensions=256)
        >>> float(q @ d.T)  # cosine similarity: unit vectors
    """

    def __init__(self, model: str, base_url: str, **kwargs: Any) -> None:
        super().__init__(model, base_url, **kwargs)
        self._hidden_size: int | None = None

    def embed(self, texts: Sequence[str], *, dimensions: int | None = None, max_length: int = 8192) -> np.ndarray:
        """Unit vectors for ``texts``, which must already be formatted (query instruction applied).

        Each text is tokenized by the server's tokenizer, cut to ``max_length - 1`` tokens and ended with one
        ``<|endoftext|>``, as the local core does. ``dimensions`` (Matryoshka) is passed to the server, which must
        run with ``--hf-overrides '{"is_matryoshka": true}'``. Returns float32, shape (len(texts), dimensions or
        hidden).
        """
        texts = check_texts(texts)
        dimensions = check_dimensions(dimensions)
        if not texts:
            return np.zeros((0, dimensions or self.hidden_size), dtype=np.float32)
        rows = embedding_rows(self, texts, max_length=max_length, endoftext_id=self.endoftext_id)
        return self.embed_token_ids(rows, dimensions=dimensions)

    def embed_token_ids(self, rows: Sequence[Sequence[int]], *, dimensions: int | None = None) -> np.ndarray:
        """Unit vectors for inputs given as token ids (each ending in ``<|endoftext|>``), float32."""
        rows = [list(row) for row in rows]
        if not rows:
            return np.zeros((0, dimensions or self.hidden_size), dtype=np.float32)
        vectors = np.stack(self._map_batches(rows, lambda batch: self._embed_batch(batch, dimensions)))
        vectors = vectors.astype(np.float32, copy=False)
        bad = non_finite_rows(vectors)
        if bad:
            raise non_finite_error(bad, len(rows), noun="input", model=self.model, server=self.base_url)
        if dimensions is not None and vectors.shape[1] > dimensions:
            vectors = vectors[:, :dimensions]  # a server that ignored `dimensions`: Matryoshka is a prefix
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)

    @property
    def hidden_size(self) -> int:
        """The full vector size the server returns (asked once, by embedding one token)."""
        if self._hidden_size is None:
            self._hidden_size = int(self._embed_batch([[self.endoftext_id]], None)[0].shape[0])
        return self._hidden_size

    def _embed_batch(self, inputs: list[list[int]], dimensions: int | None) -> list[np.ndarray]:
        payload: dict[str, Any] = {"model": self.model, "input": inputs, "encoding_format": "base64"}
        if dimensions is not None:
            payload["dimensions"] = dimensions
        try:
            answer = self._post("/v1/embeddings", payload)
        except RemoteError as exc:
            if dimensions is not None and exc.status_code == 400 and "support matryoshka" in str(exc).lower():
                msg = (
                    f"{exc}. The server does not serve `dimensions` for {self.model!r}: restart it with "
                    f"--hf-overrides '{MATRYOSHKA_OVERRIDES}', or leave dimensions unset"
                )
                raise RemoteError(msg, url=exc.url, status_code=exc.status_code) from exc
            raise
        url = f"{self.base_url}/v1/embeddings"
        data = _indexed_items(answer, "data", len(inputs), url)
        rows = [_decode_embedding(item.get("embedding"), url) for item in data]
        if dimensions is not None and any(len(row) < dimensions for row in rows):
            msg = f"the server at {url} returned {len(rows[0])} dimensions, fewer than the {dimensions} asked for"
            raise RemoteError(msg, url=url)
        if dimensions is None and self._hidden_size is None:
            self._hidden_size = len(rows[0])
        return rows


class VLLMRerankClient(_VLLMClient):
    """Qwen3-Reranker served by vLLM, through ``/classify`` with token-id inputs: P(yes) as the card computes it.

    The server must run the original checkpoint as a classifier: ``--runner pooling --hf-overrides`` with
    :data:`RERANKER_OVERRIDES`; without them the server does not compute P(yes) from the yes/no logits
    and its scores are not the card's.
    Arguments as for :class:`VLLMEmbeddingClient`; ``batch_size`` counts documents per request.

    Example:
        >>> client = VLLMRerankClient("Qwen/Qwen3-Reranker-0.6B", "http://127.0.0.1:8001")
        >>> client.score("capital of China?", ["Beijing is the capital.", "Gravity pulls."],
        ...              instruction="Given a web search query, retrieve relevant passages that answer the query")
        [0.99..., 0.00...]
    """

    def score(self, query: str, documents: Sequence[str], *, instruction: str, max_length: int = 8192) -> list[float]:
        """P(yes) in [0, 1] for each document, in input order; a pair longer than ``max_length`` tokens loses the
        end of its document, as in the local core."""
        query = check_text(query, "query")
        documents = check_texts(documents, "documents")
        if not isinstance(instruction, str) or not instruction:
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        if not documents:
            return []
        rows = rerank_rows(self, query, documents, instruction=instruction, max_length=max_length)
        return self.score_token_ids(rows)

    def score_token_ids(self, rows: Sequence[Sequence[int]]) -> list[float]:
        """P(yes) for whole reranker prompts given as token ids (prefix + body + suffix)."""
        rows = [list(row) for row in rows]
        scores = self._map_batches(rows, self._classify_batch)
        bad = non_finite_rows(np.asarray(scores, dtype=np.float64))
        if bad:
            raise non_finite_error(bad, len(rows), noun="document", model=self.model, server=self.base_url)
        return scores

    def _classify_batch(self, rows: list[list[int]]) -> list[float]:
        answer = self._post("/classify", {"model": self.model, "input": rows})
        url = f"{self.base_url}/classify"
        scores = []
        for item in _indexed_items(answer, "data", len(rows), url):
            probs = item.get("probs")
            if not isinstance(probs, list) or len(probs) != 1:
                msg = (
                    f"the server at {url} answered {probs!r}, not one P(yes) per input: serve the reranker with "
                    f"--hf-overrides '{RERANKER_OVERRIDES}'"
                )
                raise RemoteError(msg, url=url)
            score = probs[0]
            if not isinstance(score, (int, float)) or isinstance(score, bool):
                raise RemoteError(f"the server at {url} answered a score that is not a number: {score!r}", url=url)
            scores.append(float(score))
        return scores


# -- helpers -----------------------------------------------------------------------------------------


def _normalise_base_url(base_url: str) -> str:
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must be an http(s) URL such as 'http://127.0.0.1:8000', got {base_url!r}")
    url = base_url.rstrip("/")
    if url.endswith("/v1"):  # the OpenAI-style base URL: the client adds /v1 itself where needed
        url = url[: -len("/v1")]
    return url


def _check_number(
    value: Any,
    name: str,
    *,
    minimum: float,
    integer: bool = False,
    allow_none: bool = False,
    strict: bool = False,
) -> Any:
    if value is None and allow_none:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum or (strict and value == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} {bound}{' or None' if allow_none else ''}, got {value!r}")
    return value


def _server_message(response: httpx.Response) -> str:
    """The error text of a vLLM / OpenAI-style answer (``{"error": {"message": ...}}``), else the body; one line."""
    return one_line(_server_text(response))


def _server_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            for key in ("message", "detail"):
                if error.get(key):
                    return str(error[key])
        elif isinstance(error, str):
            return error
        if body.get("detail"):
            return str(body["detail"])
    return str(body)[:500]


def _indexed_items(answer: Any, key: str, expected: int, url: str) -> list[dict[str, Any]]:
    items = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise RemoteError(f"unexpected answer from {url}: no {key!r} list in {str(answer)[:200]}", url=url)
    if len(items) != expected:
        raise RemoteError(f"the server at {url} answered {len(items)} results for {expected} inputs", url=url)
    try:
        return sorted(items, key=lambda item: item["index"]) if all("index" in item for item in items) else items
    except TypeError as exc:
        raise RemoteError(f"unexpected result indices from {url}", url=url) from exc


def _decode_embedding(value: Any, url: str) -> np.ndarray:
    if isinstance(value, str):  # encoding_format="base64": little-endian float32
        return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(np.float32)
    if isinstance(value, list) and value:
        return np.asarray(value, dtype=np.float32)
    raise RemoteError(f"unexpected embedding from {url}: {str(value)[:100]}", url=url)
