"""The chunker's invariants (qwen3_rag.cli.chunking), on the REAL Qwen3 tokenizer, in every script:

- every character that is not whitespace lies in at least one chunk, and ``chunk.text == text[start:end]``;
- no chunk is longer than the chunk size -- counted with control-token strings parsed AND split, so the embedder
  (which splits them) never truncates an indexed chunk;
- with no overlap, chunks do not overlap; with overlap, consecutive chunks share at most the overlap;
- the same input gives the same chunks (also through a second tokenizer object, and whatever the window).
"""

from __future__ import annotations

import random
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen3_rag import testing
from qwen3_rag.cli import chunking
from qwen3_rag.cli.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, check_chunking, chunk_text
from qwen3_rag.cli.errors import UsageError


def _cjk_run(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(n))


SCRIPTS = {
    "english": " ".join(f"Sentence {i} tells how bees dance to share where flowers are." for i in range(120)),
    "chinese": "蜜蜂通过摇摆舞告诉同伴花的方向和距离。" * 80 + "它们是怎样做到的？" * 20 + "真了不起！" * 20,
    "japanese": "ミツバチは八の字ダンスで花の方向と距離を仲間に伝えます。" * 80,
    "thai": "ผึ้งเต้นรำเพื่อบอกทิศทางของดอกไม้แก่เพื่อนร่วมรัง" * 80,
    "arabic": " ".join(["يرقص النحل ليخبر رفاقه باتجاه الأزهار ومسافتها."] * 80),
    "code": "\n\n".join(f"def f{i}(x):\n    # note {i}\n    return x ** {i} + sum(range({i}))\n" for i in range(150)),
    "minified": '{"k":[' + ",".join(f'{{"id":{i},"v":"x{i}"}}' for i in range(3000)) + "]}",
    "no_boundary_cjk": _cjk_run(6000, 1),
    "no_boundary_latin": "a" * 20000,
    "emoji_zwj": "👩‍👩‍👧‍👦🏳️‍🌈👍🏽" * 400,
    "combining": ("e\u0301" * 7 + " ") * 400,
    "control_tokens": "Ignore this. <|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nyes " * 60,
    "mixed_lines": "\r\n".join(["Line with text.", "", "   ", "\t第二行。", "สาม"] * 200),
}


def _token_counts(tokenizer, text: str) -> tuple[int, int]:
    """Tokens of ``text`` with control-token strings parsed, and split into ordinary text."""
    parsed = tokenizer(text, add_special_tokens=False)["input_ids"]
    split = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return len(parsed), len(split)


def _check_invariants(text: str, chunks, tokenizer, *, size: int, overlap: int) -> None:
    covered = bytearray(len(text))
    previous_end = 0
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert chunk.text == text[chunk.start : chunk.end] and chunk.text
        assert max(_token_counts(tokenizer, chunk.text)) <= size, (i, chunk.text[:80])
        if i:
            assert chunk.start >= chunks[i - 1].start and chunk.end > chunks[i - 1].end  # in text order
            if overlap == 0:
                assert chunk.start >= previous_end
            elif chunk.start < previous_end:
                assert max(_token_counts(tokenizer, text[chunk.start : previous_end])) <= overlap + 1
        previous_end = chunk.end
        covered[chunk.start : chunk.end] = b"\x01" * (chunk.end - chunk.start)
    missing = [i for i, flag in enumerate(covered) if not flag and not text[i].isspace()]
    assert not missing, f"characters in no chunk at {missing[:10]}: {text[missing[0] : missing[0] + 20]!r}"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.parametrize(("size", "overlap"), [(64, 0), (48, 12)])
def test_every_script_is_covered_and_no_chunk_is_too_long(name, size, overlap, qwen_tokenizer):
    text = SCRIPTS[name]
    chunks = chunk_text(text, qwen_tokenizer, chunk_size=size, overlap=overlap)
    assert len(chunks) > 1
    _check_invariants(text, chunks, qwen_tokenizer, size=size, overlap=overlap)


def test_cjk_sentences_end_at_cjk_punctuation(qwen_tokenizer):
    text = "".join(f"第{i}句话说的是蜜蜂怎样跳舞告诉同伴花在哪里。" for i in range(200))
    chunks = chunk_text(text, qwen_tokenizer, chunk_size=64, overlap=0)
    assert all(c.text.endswith("。") for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == text


def test_the_default_size_chunks_a_long_chinese_document_without_losing_text(qwen_tokenizer):
    """The issue's case: a 20,000-character Chinese document is many 512-token chunks, not one 19,500-token one."""
    text = "".join(f"第{i}段：蜜蜂通过摇摆舞告诉同伴花的方向和距离。\n\n" for i in range(1000))[:20000]
    chunks = chunk_text(text, qwen_tokenizer, chunk_size=DEFAULT_CHUNK_SIZE, overlap=DEFAULT_CHUNK_OVERLAP)
    assert len(chunks) >= 20
    _check_invariants(text, chunks, qwen_tokenizer, size=DEFAULT_CHUNK_SIZE, overlap=DEFAULT_CHUNK_OVERLAP)


def test_markdown_chunks_keep_the_invariants(qwen_tokenizer):
    text = "\n\n".join(f"# Heading {i}\n\nSome *text* about `bees` {i}.\n\n- item one\n- item two\n" for i in range(80))
    chunks = chunk_text(text, qwen_tokenizer, chunk_size=40, overlap=0, markdown=True)
    _check_invariants(text, chunks, qwen_tokenizer, size=40, overlap=0)


def test_the_same_input_gives_the_same_chunks_through_another_tokenizer_object(qwen_tokenizer):
    other = testing.build_tokenizer("qwen", append_endoftext=False)
    for name in ("english", "chinese", "control_tokens"):
        first = chunk_text(SCRIPTS[name], qwen_tokenizer, chunk_size=48, overlap=12)
        assert first == chunk_text(SCRIPTS[name], qwen_tokenizer, chunk_size=48, overlap=12)
        assert first == chunk_text(SCRIPTS[name], other, chunk_size=48, overlap=12)


@pytest.mark.parametrize("name", ["english", "chinese", "code", "no_boundary_cjk"])
def test_windows_do_not_change_the_chunks(name, qwen_tokenizer, monkeypatch):
    """Long texts are split a window at a time; the chunks are those of the whole text at once."""
    text = SCRIPTS[name] * 3
    monkeypatch.setattr(chunking, "_WINDOW_CHARS", 10**9)
    whole = chunk_text(text, qwen_tokenizer, chunk_size=32, overlap=0)
    monkeypatch.setattr(chunking, "_WINDOW_CHARS", 1)  # the floor: 64 characters per token of chunk size
    assert len(text) > 64 * 32
    windowed = chunk_text(text, qwen_tokenizer, chunk_size=32, overlap=0)
    assert windowed == whole


def test_a_control_token_string_is_counted_as_the_embedder_counts_it(qwen_tokenizer):
    """``<|im_end|>`` is one token parsed, several split: a chunk of them fits the split count (what embeds)."""
    text = "<|im_end|>" * 400
    chunks = chunk_text(text, qwen_tokenizer, chunk_size=32, overlap=0)
    parsed, split = _token_counts(qwen_tokenizer, chunks[0].text)
    assert parsed < split <= 32  # counted parsed only, 32 of them would have fitted in one chunk
    assert len(chunks) >= 400 * split // parsed // 32
    assert "".join(c.text for c in chunks) == text


def test_empty_and_whitespace_text_has_no_chunks(qwen_tokenizer):
    assert chunk_text("", qwen_tokenizer, chunk_size=64, overlap=0) == []
    assert chunk_text(" \n\t\u3000\n", qwen_tokenizer, chunk_size=64, overlap=0) == []


def test_a_lone_surrogate_is_a_usage_error_not_a_traceback(qwen_tokenizer):
    with pytest.raises(UsageError, match="not valid Unicode"):
        chunk_text("abc \ud800 def", qwen_tokenizer, chunk_size=64, overlap=0)


@pytest.mark.parametrize(
    ("size", "overlap", "max_length", "message"),
    [
        (8, 0, None, "at least 16"),
        (64, 64, None, "between 0 and --chunk-size - 1"),
        (64, -1, None, "between 0"),
        (512, 0, 512, r"at most --max-length - 1 \(511\)"),
        (64.0, 0, None, "whole number"),
        (True, 0, None, "whole number"),
    ],
)
def test_settings_that_cannot_work_are_refused(size, overlap, max_length, message):
    with pytest.raises(UsageError, match=message):
        check_chunking(size, overlap, max_length=max_length)


_ALPHABET = st.sampled_from(
    [*"abc XYZ.!?,;:\n\n\t", *"蜜蜂跳舞。！？，", *"ミツバチ、", *"ผึ้งเต้น", "<|im_end|>", "😀", "e\u0301"]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.lists(_ALPHABET, min_size=0, max_size=400).map("".join),
    size=st.integers(min_value=16, max_value=48),
    overlap_share=st.sampled_from([0, 4, 8]),
)
def test_property_any_text_keeps_the_invariants(text, size, overlap_share, qwen_tokenizer):
    text = unicodedata.normalize("NFC", text)
    overlap = size // overlap_share if overlap_share else 0
    chunks = chunk_text(text, qwen_tokenizer, chunk_size=size, overlap=overlap)
    _check_invariants(text, chunks, qwen_tokenizer, size=size, overlap=overlap)
    assert chunks == chunk_text(text, qwen_tokenizer, chunk_size=size, overlap=overlap)
