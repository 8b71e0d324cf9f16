"""The ``ask`` prompt, citation parsing and the local chat model wrapper (tiny random chat checkpoint)."""

from __future__ import annotations

import io
import shutil

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
    with pytest.raises(ModelLoadError, match=r"Could not load the --llm chat model .*there is no local folder at"):
        ChatModel(tmp_path / "nothing", device="cpu")


def test_an_empty_chat_model_folder_is_not_a_model_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"the folder holds no config\.json, so it is not a model folder") as info:
        ChatModel(tmp_path / "empty", device="cpu")
    assert "sentencepiece" not in str(info.value)


def test_a_file_given_as_the_chat_model_is_refused_as_a_file(tiny_chat_path):
    with pytest.raises(ModelLoadError, match=r"it is a file, not a model folder"):
        ChatModel(tiny_chat_path / "config.json", device="cpu")


def test_a_corrupt_chat_model_weight_file_is_named(tiny_chat_path, tmp_path):
    folder = tmp_path / "chat"
    shutil.copytree(tiny_chat_path, folder)
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(ModelLoadError, match=r"model\.safetensors is corrupt or truncated \(SafetensorError: "):
        ChatModel(folder, device="cpu")


def test_the_chat_model_loads_with_the_core_loaders_keywords(tiny_chat_path, monkeypatch):
    """No remote code, safetensors only, local files only for a folder, and the dtype keyword this transformers
    knows (``torch_dtype`` before 4.56): the one loader the Qwen3 models use."""
    import transformers

    from qwen3_rag import _loading

    seen = {}
    original = transformers.AutoModelForCausalLM.from_pretrained

    def from_pretrained(source, *args, **kwargs):
        seen.update(kwargs)
        return original(source, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    chat = ChatModel(tiny_chat_path, device="cpu", dtype="float32")
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True
    assert seen["local_files_only"] is True
    assert seen[_loading._DTYPE_KWARG] is torch.float32
    assert ("dtype" in seen) != ("torch_dtype" in seen)
    assert chat.model.dtype is torch.float32


def test_the_chat_model_refuses_int8():
    with pytest.raises(ValueError, match="not int8"):
        ChatModel("unused", device="cpu", dtype="int8")


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
