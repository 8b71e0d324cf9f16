"""The ``ask`` prompt, citation parsing and the local chat model wrapper (tiny random chat checkpoint)."""

from __future__ import annotations

import io

import pytest
import torch

import qwen3_rag._cpu_linear as cpu_linear
from qwen3_rag._cpu_linear import PackedLinear
from qwen3_rag._loading import ModelLoadError
from qwen3_rag.cli.answer import SYSTEM_PROMPT, ChatModel, build_messages, cited_numbers, strip_thinking


def test_the_prompt_numbers_the_passages_with_their_sources():
    messages = build_messages("Why is the sky blue? ", [("a.md, chunk 0", "Rayleigh.\n"), ("b.txt, chunk 2", "Light.")])
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert "[1] or [2][3]" in SYSTEM_PROMPT
    assert messages[1]["role"] == "user"
    assert messages[1]["content"] == (
        "Context passages:\n\n[1] (source: a.md, chunk 0)\nRayleigh.\n\n[2] (source: b.txt, chunk 2)\nLight.\n\n"
        "Question: Why is the sky blue?"
    )


def test_citations_are_read_in_order_and_bounded_by_the_passages():
    assert cited_numbers("Yes [2], because [1][2] and [1, 3]; not [7] or [0].", 3) == [2, 1, 3]
    assert cited_numbers("No citations.", 3) == []


def test_thinking_blocks_are_removed_from_the_answer():
    assert strip_thinking("<think>\nhmm\n</think>\n\nThe answer [1].") == "The answer [1]."
    assert strip_thinking("<think>never closed") == ""


@pytest.fixture(scope="module")
def chat(tiny_chat_path) -> ChatModel:
    return ChatModel(tiny_chat_path, device="cpu")


def test_streamed_and_returned_answers_match(chat):
    messages = build_messages("What is a star?", [("a.md, chunk 0", "The sun is a star.")])
    stream = io.StringIO()
    streamed = chat.generate(messages, max_new_tokens=6, stream=stream)
    assert streamed == stream.getvalue().strip()
    assert streamed == chat.generate(messages, max_new_tokens=6)  # greedy: deterministic


def test_a_missing_chat_model_names_the_option_to_fix(tmp_path):
    with pytest.raises(ModelLoadError, match=r"Pass --llm \(or QWEN3_RAG_LLM\)"):
        ChatModel(tmp_path / "nothing", device="cpu")


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
def test_the_chat_model_decodes_through_packed_linears_with_the_same_logits(chat, tiny_chat_path, monkeypatch):
    layers = [m for m in chat.model.modules() if isinstance(m, PackedLinear)]
    assert len(layers) == 7 * chat.model.config.num_hidden_layers
    monkeypatch.setenv(cpu_linear.ENV_SWITCH, "0")
    plain = ChatModel(tiny_chat_path, device="cpu")
    assert not any(isinstance(m, PackedLinear) for m in plain.model.modules())
    ids = torch.tensor([[1, 5, 42, 7, 99]])
    with torch.inference_mode():
        torch.testing.assert_close(chat.model(ids).logits, plain.model(ids).logits, rtol=1e-5, atol=1e-5)
