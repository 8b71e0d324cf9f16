"""Splitting a document's text into the chunks that are embedded, stored and retrieved, counted in TOKENS of the
index's own embedding tokenizer (the one that embeds the chunk), so the embedder never cuts an indexed chunk.

Boundaries come from ``semantic-text-splitter`` (Rust, MIT): each chunk is the longest run of the largest semantic
units that fits -- runs of blank lines (paragraphs), then single line breaks, then Unicode sentences (UAX #29, so
``。！？`` end sentences too), then Unicode words (UAX #29 with dictionaries: Chinese, Japanese and Thai words
without spaces), then grapheme clusters, then characters. ``markdown=True`` uses its CommonMark-aware splitter
(headings, then blocks, then inline elements). Sizes are measured with the tokenizer's own Rust backend.

Two things are added around the library:

- Control-token strings inside user text (``<|im_end|>``): the library counts them as ONE token, as a tokenizer
  that parses special tokens does; an embedder that splits them (the safe way, see QWEN3_REFERENCE) sees several.
  A window holding one is cut with the exact count instead: the larger of both ways of tokenizing it.
- Windows: the library's cost grows with the square of the text between two boundaries of the level it is
  working at (a 1M-character Chinese line without punctuation: minutes). Long texts are cut in windows of
  :data:`_WINDOW_CHARS` characters; the last chunk of each window is dropped and the next window starts where that
  chunk started, so a window's end never ends a chunk early.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from qwen3_rag.cli.errors import UsageError

DEFAULT_CHUNK_SIZE = 512
"""Tokens per chunk, at most (see the README's CLI section for why this size)."""
DEFAULT_CHUNK_OVERLAP = 64
"""Tokens of the previous chunk repeated at the start of the next one, at most (1/8 of a chunk)."""
MIN_CHUNK_SIZE = 16
"""The smallest chunk that holds any single character: a code point is at most 3 code points after NFC, at most
12 UTF-8 bytes, at most 12 byte-level tokens. Below that, one character could be a chunk too long to embed."""

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdx"})
"""Files chunked with ``markdown=True``."""

_ALGORITHM = 1
"""Bump when the chunks this module makes from the same text and settings change: they get new ids."""
_WINDOW_CHARS = 32768
"""Characters per window for long texts (at least 64 per token of chunk size)."""
_PROBE = (
    "qwen3-rag chunking probe: The quick brown fox. 快速的棕色狐狸。素早い茶色の狐。สุนัขจิ้งจอกสีน้ำตาล "
    "الثعلب البني  Ångström Å é\u0301 ﬁ 𝔘𝔫𝔦 😀👍🏽 <|im_end|><|endoftext|><think>\r\n\tdef f(x): return x**2\n"
)
"""Text whose token ids stand for the tokenizer's identity in chunk ids (with its vocabulary size)."""


@dataclass(frozen=True)
class Chunk:
    """One chunk: ``text == source[start:end]`` (character offsets into the text that was chunked)."""

    index: int
    text: str
    start: int
    end: int


def check_chunking(chunk_size: int, overlap: int, *, max_length: int | None = None) -> None:
    """Raise :class:`UsageError` (one line) unless ``MIN_CHUNK_SIZE <= chunk_size``, ``0 <= overlap < chunk_size``
    and, with ``max_length`` (the embedder's, ``<|endoftext|>`` included), ``chunk_size <= max_length - 1``."""
    for name, value in (("--chunk-size", chunk_size), ("--chunk-overlap", overlap)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{name} must be a whole number of tokens, got {value!r}")
    if chunk_size < MIN_CHUNK_SIZE:
        raise UsageError(
            f"--chunk-size must be at least {MIN_CHUNK_SIZE} tokens (one character can take 12), got {chunk_size}"
        )
    if max_length is not None and chunk_size > max_length - 1:
        raise UsageError(
            f"--chunk-size ({chunk_size} tokens) must be at most --max-length - 1 ({max_length - 1}): the embedder "
            "adds <|endoftext|> and cuts anything longer"
        )
    if not 0 <= overlap < chunk_size:
        raise UsageError(
            f"--chunk-overlap must be between 0 and --chunk-size - 1 ({chunk_size - 1}) tokens, got {overlap}"
        )


def chunk_text(text: str, tokenizer: Any, *, chunk_size: int, overlap: int, markdown: bool = False) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``chunk_size`` tokens of ``tokenizer`` (a Hugging Face fast tokenizer:
    the embedder's), at the largest semantic boundary that fits (see the module docstring).

    Guarantees, for any text:

    - every character that is not Unicode White_Space lies in at least one chunk; what no chunk holds is only
      White_Space at the start and end of the text and between two chunks (whitespace inside a chunk is kept
      as it is, newlines included);
    - every chunk is at most ``chunk_size`` tokens, counted with special tokens parsed (``<|im_end|>`` is one
      token) AND with them split into plain text -- whichever the embedder does, it never cuts a chunk when
      ``chunk_size <= max_length - 1``;
    - two consecutive chunks share at most ``overlap`` tokens (counted the same way), and chunks are in text order;
    - the same text, tokenizer and settings give the same chunks; empty or whitespace-only text gives none.

    Raises :class:`UsageError` for settings :func:`check_chunking` refuses and for text that is not valid
    Unicode (a lone surrogate).
    """
    check_chunking(chunk_size, overlap)
    if not text or text.isspace():
        return []
    counter = _counter(tokenizer)
    window = max(_WINDOW_CHARS, 64 * chunk_size)
    try:
        spans = _spans(text, window, lambda piece: _split(piece, counter, chunk_size, overlap, markdown))
    except UnicodeEncodeError as exc:
        raise UsageError(f"the text is not valid Unicode ({exc.reason} at character {exc.start})") from None
    return [Chunk(i, text[start:end], start, end) for i, (start, end) in enumerate(spans)]


def chunking_version(tokenizer: Any, *, chunk_size: int, overlap: int) -> str:
    """What the chunks of a text depend on besides the text: this module's algorithm, the splitter's version,
    the settings and the tokenizer (its vocabulary size and the ids of a fixed multi-script probe, both ways)."""
    return (
        f"chunking:{_ALGORITHM}:semantic-text-splitter={_library()[1]}:"
        f"{chunk_size}:{overlap}:tokenizer={_counter(tokenizer).identity}"
    )


def count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Tokens of each text as this module counts them: no added ``<|endoftext|>``, and the larger of the counts
    with special tokens parsed and split."""
    return _counter(tokenizer).count_many(list(texts))


def embedder_tokenizer(embedder: Any) -> Any:
    """The tokenizer that chunks for ``embedder``: its own, or for an embedder that talks to a server, the served
    model's tokenizer loaded here (tokenizer files only; never ``trust_remote_code``)."""
    try:
        return embedder.tokenizer
    except NotImplementedError:
        pass
    import os

    from transformers import AutoTokenizer

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}
    try:
        return AutoTokenizer.from_pretrained(embedder.model_name, trust_remote_code=False, local_files_only=offline)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"chunks are counted in tokens of {embedder.model_name!r}, and its tokenizer could not be loaded here "
            f"({type(exc).__name__}); pass --embedding-model as a local folder or a Hub id this machine can read"
        ) from None


# ------------------------------------------------------------------------------------------------ internals


class _Counter:
    """A private copy of one tokenizer's Rust backend (truncation and padding off, special tokens parsed, whatever
    the caller's object was last used with), the splitters built on it, and its identity for chunk ids. Its
    encoding mode is switched only under a lock, so counts never depend on another thread."""

    def __init__(self, tokenizer: Any) -> None:
        from tokenizers import Tokenizer

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if not isinstance(backend, Tokenizer):
            raise TypeError(f"chunking needs a Hugging Face fast tokenizer (with a Rust backend), got {tokenizer!r}")
        self.parsed = Tokenizer.from_str(backend.to_str())
        self.parsed.no_truncation()
        self.parsed.no_padding()
        self.parsed.encode_special_tokens = False
        self.json = self.parsed.to_str()
        specials = sorted(
            {t.content for t in backend.get_added_tokens_decoder().values() if t.special and t.content},
            key=len,
            reverse=True,
        )
        self.special = re.compile("|".join(map(re.escape, specials))) if specials else None
        self._splitters: dict[tuple, Any] = {}
        self._splitters_lock = threading.Lock()
        self._lock = threading.Lock()
        probe = [self.parsed.encode(_PROBE, add_special_tokens=False).ids, self._split_encode([_PROBE])[0].ids]
        size = self.parsed.get_vocab_size(with_added_tokens=True)
        self.identity = hashlib.sha256(json.dumps([size, *probe]).encode()).hexdigest()[:16]

    def _split_encode(self, texts: list[str]) -> list[Any]:
        with self._lock:
            self.parsed.encode_special_tokens = True
            try:
                return self.parsed.encode_batch(texts, add_special_tokens=False)
            finally:
                self.parsed.encode_special_tokens = False

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    def count_many(self, texts: list[str]) -> list[int]:
        with self._lock:
            counts = [len(e.ids) for e in self.parsed.encode_batch(texts, add_special_tokens=False)]
        if self.special is not None:
            marked = [i for i, t in enumerate(texts) if self.special.search(t)]
            if marked:
                split = self._split_encode([texts[i] for i in marked])
                for i, encoding in zip(marked, split, strict=True):
                    counts[i] = max(counts[i], len(encoding.ids))
        return counts

    def splitter(self, chunk_size: int, overlap: int, markdown: bool, exact: bool) -> Any:
        """The library's splitter: counting with the Rust backend, or (``exact``) with :meth:`count`."""
        library = _library()[0]
        key = (chunk_size, overlap, markdown, exact)
        with self._splitters_lock:
            splitter = self._splitters.get(key)
            if splitter is None:
                kind = library.MarkdownSplitter if markdown else library.TextSplitter
                if exact:
                    splitter = kind.from_callback(self.count, chunk_size, overlap=overlap)
                else:
                    splitter = kind.from_huggingface_tokenizer_str(self.json, chunk_size, overlap=overlap)
                self._splitters[key] = splitter
            return splitter


@functools.cache
def _library() -> tuple[Any, str]:
    """The ``semantic_text_splitter`` module and its version."""
    from importlib.metadata import version

    try:
        import semantic_text_splitter
    except ImportError:
        raise UsageError('chunking needs semantic-text-splitter: pip install "qwen3-rag[cli]"') from None
    return semantic_text_splitter, version("semantic-text-splitter")


_COUNTERS: weakref.WeakKeyDictionary[Any, _Counter] = weakref.WeakKeyDictionary()
_COUNTERS_LOCK = threading.Lock()


def _counter(tokenizer: Any) -> _Counter:
    with _COUNTERS_LOCK:
        counter = _COUNTERS.get(tokenizer)
        if counter is None:
            counter = _COUNTERS[tokenizer] = _Counter(tokenizer)
        return counter


def _split(piece: str, counter: _Counter, chunk_size: int, overlap: int, markdown: bool) -> list[tuple[int, str]]:
    exact = counter.special is not None and counter.special.search(piece) is not None
    return counter.splitter(chunk_size, overlap, markdown, exact).chunk_indices(piece)


def _spans(text: str, window: int, split: Callable[[str], list[tuple[int, str]]]) -> list[tuple[int, int]]:
    """(start, end) of each chunk of ``text``, splitting ``window`` characters at a time.

    Only a window's last chunk can depend on where the window ends (its last semantic unit is cut there): it is
    dropped and the next window starts where it started. A window that yields one chunk only is doubled.
    """
    spans: list[tuple[int, int]] = []
    pos, n = 0, len(text)
    while pos < n:
        end = min(n, pos + window)
        found = split(text[pos:end])
        while end < n and len(found) < 2:
            end = min(n, pos + 2 * (end - pos))
            found = split(text[pos:end])
        last = found.pop() if end < n else None
        for offset, piece in found:
            spans.append((pos + offset, pos + offset + len(piece)))
        if last is None:
            break
        pos += last[0]
    return spans
