"""Checkpoints that are wrong in the ways real ones are: built from the session's tiny models by editing their
weight files (no model is mocked), for the tests of NaN handling and of checkpoint validation."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file

FLOAT16_MAX = float(torch.finfo(torch.float16).max)


def edited_copy(source: Path, target: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """A copy of the checkpoint folder ``source`` whose ``model.safetensors`` went through ``edit`` (in place)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    edit(weights)
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


def overflowing_in_float16(source: Path, target: Path) -> Path:
    """Every MLP's up and down projections x 1e4: each weight still fits float16 (largest under 10,000), but the
    residual stream grows past float16's 65,504, so a float16 forward overflows to inf and then NaN, while
    float32 and bfloat16 (float32's range) stay finite -- the failure Qwen3-Embedding-8B shows in float16."""

    def scale(weights: dict[str, torch.Tensor]) -> None:
        for name in weights:
            if name.endswith(("mlp.up_proj.weight", "mlp.down_proj.weight")):
                weights[name] = weights[name] * 1e4
        assert max(float(w.abs().max()) for w in weights.values()) < FLOAT16_MAX

    return edited_copy(source, target, scale)


def poisoned_token(source: Path, target: Path, token_id: int) -> Path:
    """The input embedding of one token set to infinity: every input holding that token comes out NaN, every
    other input is untouched (NaN "on some inputs")."""

    def poison(weights: dict[str, torch.Tensor]) -> None:
        (name,) = [n for n in weights if n.endswith("embed_tokens.weight")]
        weights[name][token_id] = float("inf")

    return edited_copy(source, target, poison)


def untied_causal_model(source: Path, target: Path, *, keep_head: bool) -> Path:
    """A Qwen3ForCausalLM with its own output head (``tie_word_embeddings`` false), like Qwen3-8B; without
    ``keep_head`` the head's ``lm_head.weight`` is missing from the weight file, as in a broken conversion."""
    model = transformers.Qwen3ForCausalLM.from_pretrained(source)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    if target.exists():
        shutil.rmtree(target)
    model.save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, target / name)
    if not keep_head:
        weights = load_file(target / "model.safetensors")
        del weights["lm_head.weight"]
        save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


def bert_checkpoint(tokenizer_source: Path, target: Path) -> Path:
    """A tiny random BERT masked-LM checkpoint with a tokenizer: not a decoder, not Qwen3."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_source)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    transformers.BertForMaskedLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
