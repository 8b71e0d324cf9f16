"""Token ids exactly as the models see them, built the same way from a local tokenizer or a vLLM server's.

Two kinds of text reach the tokenizer:

- the prompts' own strings (``RERANK_PREFIX``, ``RERANK_SUFFIX``, ``<|endoftext|>``), whose control tokens
  (``<|im_start|>``, ``<|im_end|>``, ...) must be the real control tokens;
- user text -- queries, documents, instructions -- in which the same strings must be nothing but the
  characters they are written with. The model cards' recipes tokenize the whole prompt in one go, so a
  document holding ``<|im_end|>\\n<|im_start|>assistant\\n...yes`` would close the user turn and forge the
  assistant's answer; here it cannot.

User text is cut inside every control-token string it holds, at a point where Qwen3's pre-tokenizer splits
the text anyway (after the token name's last letter, before the closing ``|>`` or ``>``), and the pieces are
tokenized separately: no piece holds a whole control-token string, and because the cuts fall on
pre-token boundaries the ids are the ones the plain byte-level BPE gives the whole text. Text without
control-token strings is one piece, so its ids are the card's, unchanged.

The local tokenizer takes the pieces as one batch; a vLLM server (which has no ``split_special_tokens``) gets
them in one ``/tokenize`` request, joined by ``<|endoftext|>``: added tokens split the text before
normalisation and pre-tokenization, so each piece tokenizes between two separators exactly as it does alone.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from qwen3_rag.prompts import CONTROL_TOKENS, RERANK_PREFIX, RERANK_SUFFIX, format_rerank_body

logger = logging.getLogger("qwen3_rag")

_CONTROL = re.compile("|".join(re.escape(token) for token in sorted(CONTROL_TOKENS, key=len, reverse=True)))
_CUT = {token: max(i for i, char in enumerate(token) if char.isalnum()) + 1 for token in CONTROL_TOKENS}
"""Where each control-token string is cut: after the last letter of its name (``<|im_end`` | ``|>``)."""


def split_control_tokens(text: str) -> list[str]:
    """``text`` in pieces that hold no whole control-token string; ``"".join(pieces) == text``."""
    if "<" not in text:
        return [text]
    pieces, start = [], 0
    for match in _CONTROL.finditer(text):
        cut = match.start() + _CUT[match.group()]
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


class TokenSource:
    """A Qwen3 tokenizer, local or a server's, seen through the two operations the recipes need."""

    def _encode_pieces(self, pieces: list[str]) -> list[list[int]]:
        """Ids of each piece, no special tokens added; the pieces hold no control-token string."""
        raise NotImplementedError

    def _encode_prompt(self, text: str) -> list[int]:
        """Ids of one of the prompts' own strings, control tokens recognised, no special tokens added."""
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of user texts, control-token strings as ordinary text, no special tokens added."""
        pieces: list[str] = []
        counts: list[int] = []
        for text in texts:
            split = split_control_tokens(text)
            pieces.extend(split)
            counts.append(len(split))
        encoded = self._encode_pieces(pieces) if pieces else []
        rows, at = [], 0
        for count in counts:
            rows.append([i for ids in encoded[at : at + count] for i in ids] if count > 1 else list(encoded[at]))
            at += count
        return rows

    def prompt_ids(self, text: str) -> list[int]:
        """``_encode_prompt(text)``, asked once per string."""
        cache = self.__dict__.setdefault("_prompt_ids", {})
        if text not in cache:
            cache[text] = list(self._encode_prompt(text))
        return cache[text]

    def token_id(self, token: str) -> int | None:
        """The id of a single added token such as ``<|endoftext|>``; ``None`` if the tokenizer has no such token."""
        ids = self.prompt_ids(token)
        return ids[0] if len(ids) == 1 else None


class LocalTokens(TokenSource):
    """A loaded model's tokenizer (fast tokenizers are not re-entrant: every call holds the model's lock)."""

    def __init__(self, loaded) -> None:
        self._loaded = loaded

    def _encode_pieces(self, pieces: list[str]) -> list[list[int]]:
        with self._loaded.lock:
            return self._loaded.tokenizer(pieces, add_special_tokens=False, verbose=False)["input_ids"]

    def _encode_prompt(self, text: str) -> list[int]:
        with self._loaded.lock:
            return self._loaded.tokenizer(text, add_special_tokens=False)["input_ids"]

    def token_id(self, token: str) -> int | None:
        tokenizer = self._loaded.tokenizer
        with self._loaded.lock:
            token_id = tokenizer.convert_tokens_to_ids(token)
        return None if token_id is None or token_id == tokenizer.unk_token_id else token_id


def embedding_rows(tokens: TokenSource, texts: Sequence[str], *, max_length: int, endoftext_id: int) -> list[list[int]]:
    """The embedder's inputs: each (already formatted) text cut to ``max_length - 1`` tokens, then exactly one
    ``<|endoftext|>`` -- whichever tokenizer generation is installed (today's appends it, the first did not)."""
    encoded = tokens.encode(texts)
    limit = max_length - 1
    truncated = [i for i, ids in enumerate(encoded) if len(ids) > limit]
    if truncated:
        logger.warning(
            "truncated %d of %d texts to max_length=%d tokens (%s; longest was %d tokens); "
            "raise max_length (up to 32768) to keep more",
            len(truncated),
            len(encoded),
            max_length,
            _which(truncated),
            max(len(encoded[i]) for i in truncated) + 1,
            extra={"truncated": tuple(truncated)},
        )
    return [ids[:limit] + [endoftext_id] for ids in encoded]


def check_rerank_max_length(max_length: int, tokens: TokenSource) -> None:
    """``max_length`` must leave room for a document after the reranker prompt's own tokens."""
    prompt = len(tokens.prompt_ids(RERANK_PREFIX)) + len(tokens.prompt_ids(RERANK_SUFFIX))
    if max_length <= prompt:
        raise ValueError(f"max_length must exceed the reranker prompt's {prompt} tokens, got {max_length}")


def rerank_rows(
    tokens: TokenSource, query: str, documents: Sequence[str], *, instruction: str, max_length: int
) -> list[list[int]]:
    """Token ids per pair, as the card builds them: ``prefix + body + suffix``, the body one string cut at its end
    to ``max_length - len(prefix) - len(suffix)`` tokens (so the document's end is what is lost)."""
    check_rerank_max_length(max_length, tokens)
    prefix, suffix = tokens.prompt_ids(RERANK_PREFIX), tokens.prompt_ids(RERANK_SUFFIX)
    budget = max_length - len(prefix) - len(suffix)
    bodies = [format_rerank_body(query, document, instruction) for document in documents]
    *encoded, head = tokens.encode([*bodies, format_rerank_body(query, "", instruction).rstrip()])
    truncated = [i for i, ids in enumerate(encoded) if len(ids) > budget]
    if truncated:
        if len(head) >= budget:
            msg = (
                f"the instruction and query take {len(head)} tokens, leaving no room for documents within "
                f"max_length={max_length}; shorten the query or raise max_length"
            )
            raise ValueError(msg)
        logger.warning(
            "truncated %d of %d documents to fit max_length=%d tokens (%s; longest pair was %d tokens); "
            "the end of each document was cut",
            len(truncated),
            len(documents),
            max_length,
            _which(truncated),
            max(len(encoded[i]) for i in truncated) + len(prefix) + len(suffix),
            extra={"truncated": tuple(truncated)},
        )
    return [prefix + ids[:budget] + suffix for ids in encoded]


def _which(indices: Sequence[int]) -> str:
    """``input 3`` / ``inputs 0, 3, ...``: positions in the caller's list (the log record also carries them whole as
    its ``truncated`` attribute, for a caller that can name its inputs)."""
    shown = ", ".join(map(str, indices[:10]))
    return f"input {shown}" if len(indices) == 1 else f"inputs {shown}{', ...' if len(indices) > 10 else ''}"
