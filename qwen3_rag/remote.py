"""Clients for Qwen3-Embedding and Qwen3-Reranker served by vLLM (``vllm serve``), faithful to the model cards.

The text is formatted here exactly as the local core formats it, so a served model returns the vectors
and scores the local one would (the tests pin both to 1e-5 against a real vLLM server):

- Embeddings go to the OpenAI-compatible ``/v1/embeddings``. Queries arrive already formatted
  (``Instruct: {instruction}\\nQuery:{query}``, applied by the caller). Whether the server's tokenizer
  appends ``<|endoftext|>`` is asked once through ``/tokenize``; when it does not (the first Qwen3-Embedding
  release), the client appends it, so every input ends in it exactly once. ``dimensions`` is passed
  through and every vector is L2-normalised again on arrival.
- Reranking goes to ``/score`` with the card's prompt split in two: ``text_1`` is the system prefix plus
  ``<Instruct>: ...\\n<Query>: ...\\n``, ``text_2`` is ``<Document>: ...`` plus the suffix (see
  :func:`rerank_text_pair`). vLLM's shipped ``qwen3_reranker.jinja`` would drop the suffix's last newline.

Requests are cut into batches of ``batch_size`` inputs and sent at most ``max_concurrency`` at a time;
connection errors and 5xx answers are retried with exponential backoff, 4xx answers never are. Every
failure is a :class:`RemoteError` that carries the server's own message.

Server side (see docs/vllm.md)::

    vllm serve Qwen/Qwen3-Embedding-0.6B --runner pooling --hf-overrides '{"is_matryoshka": true}'
    vllm serve Qwen/Qwen3-Reranker-0.6B --runner pooling --hf-overrides \\
        '{"architectures":["Qwen3ForSequenceClassification"],"classifier_from_token":["no","yes"],"is_original_qwen3_reranker":true}'
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("qwen3_rag.remote needs httpx: pip install 'qwen3-rag[vllm]'") from exc

from qwen3_rag.prompts import ENDOFTEXT, RERANK_PREFIX, RERANK_SUFFIX, format_rerank_body

__all__ = [
    "MATRYOSHKA_OVERRIDES",
    "RERANKER_OVERRIDES",
    "RemoteError",
    "VLLMEmbeddingClient",
    "VLLMRerankClient",
    "rerank_text_pair",
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


def rerank_text_pair(query: str, document: str, instruction: str) -> tuple[str, str]:
    """The card's reranker prompt as ``/score``'s ``(text_1, text_2)``.

    ``text_1 + text_2 == RERANK_PREFIX + format_rerank_body(query, document, instruction) + RERANK_SUFFIX``.
    The cut lies after the newline that ends the query, where the full prompt's pre-tokenization splits as
    well, so the token ids are the card's whether the server tokenizes the concatenation (vLLM does for
    Qwen3-Reranker) or each text alone. ``text_1`` is the same for every document of a query.
    """
    empty = format_rerank_body(query, "", instruction)
    head = empty[: empty.rindex("\n") + 1]  # everything up to and including the newline before <Document>
    body = format_rerank_body(query, document, instruction)
    if not body.startswith(head):  # pragma: no cover - only if the prompt template ever changes shape
        raise ValueError("the reranker prompt no longer ends with the document: update rerank_text_pair")
    return RERANK_PREFIX + head, body[len(head) :] + RERANK_SUFFIX


class _VLLMClient:
    """Connection, batching, concurrency and retries shared by the two clients."""

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
        return {key: value for key, value in self.__dict__.items() if key not in ("_client", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._client = self._connect()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    # -- requests ------------------------------------------------------------------------------------

    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        """POST ``payload`` as JSON and return the decoded answer, retrying what is worth retrying."""
        url = f"{self.base_url}{path}"
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                response = self._client.post(path, json=payload)
            except _RETRYABLE_ERRORS as exc:
                error = RemoteError(
                    f"could not reach the vLLM server at {url} ({type(exc).__name__}: {exc}) after {attempt + 1} "
                    f"attempt(s); is `vllm serve` running there?",
                    url=url,
                )
                reason = f"{type(exc).__name__}: {exc}"
            except httpx.TimeoutException as exc:
                msg = (
                    f"no answer from the vLLM server at {url} within timeout={self.timeout} s "
                    f"({type(exc).__name__}); raise timeout= or lower batch_size="
                )
                raise RemoteError(msg, url=url) from exc
            except httpx.HTTPError as exc:
                raise RemoteError(f"request to {url} failed: {type(exc).__name__}: {exc}", url=url) from exc
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
                    raise self._client_error(url, response.status_code, message)
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

    def _client_error(self, url: str, status: int, message: str) -> RemoteError:
        text = f"the vLLM server at {url} rejected the request ({status}): {message}"
        if status == 404 and "does not exist" in message:
            text += (
                f" -- the first argument ({self.model!r}) must be a name the server serves: see GET "
                f"{self.base_url}/v1/models, or start the server with --served-model-name {self.model}"
            )
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
    """Qwen3-Embedding served by vLLM, through its OpenAI-compatible ``/v1/embeddings``.

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
        self._lock = threading.Lock()
        self._append_endoftext: bool | None = None
        self._hidden_size: int | None = None

    def embed(self, texts: Sequence[str], *, dimensions: int | None = None) -> np.ndarray:
        """Unit vectors for ``texts``, which must already be formatted (query instruction applied).

        ``dimensions`` (Matryoshka) is passed to the server, which must run with
        ``--hf-overrides '{"is_matryoshka": true}'``. Returns float32, shape (len(texts), dimensions or hidden).
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        texts = list(texts)
        if dimensions is not None:
            dimensions = int(_check_number(dimensions, "dimensions", minimum=1, integer=True))
        if not texts:
            return np.zeros((0, dimensions or self.hidden_size), dtype=np.float32)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a string, got {type(text).__name__}")
        if self._server_needs_endoftext():
            texts = [text + ENDOFTEXT for text in texts]
        rows = self._map_batches(texts, lambda batch: self._embed_batch(batch, dimensions))
        vectors = np.stack(rows).astype(np.float32, copy=False)
        if dimensions is not None and vectors.shape[1] > dimensions:
            vectors = vectors[:, :dimensions]  # a server that ignored `dimensions`: Matryoshka is a prefix
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)

    @property
    def hidden_size(self) -> int:
        """The full vector size the server returns (asked once, by embedding one short text)."""
        if self._hidden_size is None:
            self._hidden_size = int(self._embed_batch(["hidden size"], None)[0].shape[0])
        return self._hidden_size

    def _embed_batch(self, texts: list[str], dimensions: int | None) -> list[np.ndarray]:
        payload: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "base64"}
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
        data = _indexed_items(answer, "data", len(texts), url)
        rows = [_decode_embedding(item.get("embedding"), url) for item in data]
        if dimensions is not None and any(len(row) < dimensions for row in rows):
            msg = f"the server at {url} returned {len(rows[0])} dimensions, fewer than the {dimensions} asked for"
            raise RemoteError(msg, url=url)
        if dimensions is None and self._hidden_size is None:
            self._hidden_size = len(rows[0])
        return rows

    def _server_needs_endoftext(self) -> bool:
        """Whether the served tokenizer leaves out the final ``<|endoftext|>`` (asked once, via ``/tokenize``).

        Today's Qwen3-Embedding tokenizer appends it; the first release's did not. A server without
        ``/tokenize`` is assumed to append it (with a warning).
        """
        with self._lock:
            if self._append_endoftext is None:
                self._append_endoftext = self._probe_endoftext()
            return self._append_endoftext

    def _probe_endoftext(self) -> bool:
        try:
            marked = self._post(
                "/tokenize", {"model": self.model, "prompt": "a" + ENDOFTEXT, "add_special_tokens": False}
            )
            plain = self._post("/tokenize", {"model": self.model, "prompt": "a", "add_special_tokens": True})
            marked, plain = list(marked["tokens"]), list(plain["tokens"])
        except RemoteError as exc:
            if exc.status_code is None or exc.status_code >= 500:
                raise
            logger.warning(
                "%s: cannot ask the server whether its tokenizer appends %s (%s); assuming it does",
                self.base_url,
                ENDOFTEXT,
                exc,
            )
            return False
        except (KeyError, TypeError) as exc:
            logger.warning(
                "%s: unexpected /tokenize answer (%r); assuming %s is appended", self.base_url, exc, ENDOFTEXT
            )
            return False
        if plain == marked:
            return False
        if plain == marked[:-1]:
            logger.info(
                "%s: the served tokenizer does not append %s; appending it client-side", self.base_url, ENDOFTEXT
            )
            return True
        logger.warning(
            "%s: the served tokenizer tokenizes 'a' as %s and 'a%s' as %s: not a Qwen3-Embedding tokenizer?",
            self.base_url,
            plain,
            ENDOFTEXT,
            marked,
        )
        return False


class VLLMRerankClient(_VLLMClient):
    """Qwen3-Reranker served by vLLM, through ``/score``: P(yes) as the card computes it.

    The server must run the original checkpoint as a classifier: ``--hf-overrides`` with
    :data:`RERANKER_OVERRIDES`; without them the server does not compute P(yes) from the yes/no logits
    and its scores are not the card's.
    Arguments as for :class:`VLLMEmbeddingClient`; ``batch_size`` counts documents per request.

    Example:
        >>> client = VLLMRerankClient("Qwen/Qwen3-Reranker-0.6B", "http://127.0.0.1:8001")
        >>> client.score("capital of China?", ["Beijing is the capital.", "Gravity pulls."],
        ...              instruction="Given a web search query, retrieve relevant passages that answer the query")
        [0.99..., 0.00...]
    """

    def score(self, query: str, documents: Sequence[str], *, instruction: str) -> list[float]:
        """P(yes) in [0, 1] for each document, in input order."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        if isinstance(documents, str):
            raise TypeError("documents must be a list of strings, not one string")
        if not isinstance(instruction, str) or not instruction:
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        documents = list(documents)
        for i, document in enumerate(documents):
            if not isinstance(document, str):
                raise TypeError(f"documents[{i}] must be a string, got {type(document).__name__}")
        if not documents:
            return []
        text_1 = rerank_text_pair(query, "", instruction)[0]
        pairs = [rerank_text_pair(query, document, instruction)[1] for document in documents]
        return self._map_batches(pairs, lambda batch: self._score_batch(text_1, batch))

    def _score_batch(self, text_1: str, texts_2: list[str]) -> list[float]:
        answer = self._post("/score", {"model": self.model, "text_1": text_1, "text_2": texts_2})
        url = f"{self.base_url}/score"
        scores = []
        for item in _indexed_items(answer, "data", len(texts_2), url):
            score = item.get("score")
            if isinstance(score, list) and len(score) == 1:  # some versions wrap a single class in a list
                score = score[0]
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
    """The error text of a vLLM / OpenAI-style answer (``{"error": {"message": ...}}``), else the body."""
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
