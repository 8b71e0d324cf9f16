"""Fused projections (qwen3_rag/_fused.py): q/k/v as one matrix multiply and gate/up as another give the separate
layers' result (exactly in int8, to float rounding in float32), only known architectures are fused, each input is
multiplied once and released when the forward pass ends, threads do not see each other's projections."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
import transformers

import qwen3_rag._fused as fused
import qwen3_rag._quantize as quantize
from qwen3_rag import Qwen3Embedder, Qwen3Reranker


def _tiny_model(kind: str) -> transformers.PreTrainedModel:
    sizes = {
        "vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
    }  # fmt: skip
    config = transformers.Qwen3Config(head_dim=16, **sizes) if kind == "qwen3" else transformers.Qwen2Config(**sizes)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config, attn_implementation="sdpa").eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, 0.2)
                if module.bias is not None:  # Qwen2's q/k/v biases: initialised to zero, random here
                    module.bias.normal_(0, 0.5)
    return model


INPUT_IDS = torch.tensor([[5, 17, 200, 3, 99, 42, 7], [8, 8, 8, 1, 250, 60, 11]])


@pytest.mark.parametrize("kind", ["qwen3", "qwen2"])
def test_fused_float_model_gives_the_separate_layers_result(kind):
    model = _tiny_model(kind)
    if kind == "qwen2":
        assert model.layers[0].self_attn.q_proj.bias is not None  # the biases are fused too
    separate = copy.deepcopy(model)
    assert fused.fuse_projections(model) == 3 * model.config.num_hidden_layers
    attention = model.layers[0].self_attn
    assert type(attention.qkv_proj) is torch.nn.Linear and attention.qkv_proj.out_features == 64 + 32 + 32
    assert all(type(getattr(attention, name)) is fused.ProjectionPart for name in ("q_proj", "k_proj", "v_proj"))
    assert type(model.layers[0].mlp) is fused.FusedMLP and model.layers[0].mlp.gate_up_proj.out_features == 2 * 96
    with torch.inference_mode():
        expected = separate(INPUT_IDS).last_hidden_state
        got = model(INPUT_IDS).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert fused._LAST.source is None and fused._LAST.output is None  # nothing held after the pass


def test_fusing_twice_or_an_unknown_module_changes_nothing():
    model = _tiny_model("qwen3")
    fused.fuse_projections(model)
    assert fused.fuse_projections(model) == 0

    class Attention(torch.nn.Module):  # the same attribute names, a forward we do not know
        def __init__(self) -> None:
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj = (torch.nn.Linear(8, 8) for _ in range(3))

    unknown = torch.nn.Sequential(Attention())
    assert fused.fuse_projections(unknown) == 0
    assert type(unknown[0].q_proj) is torch.nn.Linear


def test_concatenation_refuses_projections_that_cannot_be_one():
    with pytest.raises(ValueError, match="input width"):
        fused.concatenate_linears([torch.nn.Linear(8, 4), torch.nn.Linear(6, 4)])
    with pytest.raises(ValueError, match="bias"):
        fused.concatenate_linears([torch.nn.Linear(8, 4), torch.nn.Linear(8, 4, bias=False)])


@pytest.mark.parametrize("bias", [False, True])
def test_an_int8_fused_projection_equals_the_separate_int8_layers_exactly(bias):
    """Integer accumulation and one scale per output row: concatenating the rows changes no output value."""
    torch.manual_seed(3)
    parts = [torch.nn.Linear(64, n, bias=bias) for n in (64, 32, 32)]
    x = torch.randn(3, 5, 64)
    with torch.inference_mode():
        one = quantize.make_int8_linear(fused.concatenate_linears(parts))(x)
        separate = torch.cat([quantize.make_int8_linear(part)(x) for part in parts], dim=-1)
    assert torch.equal(one, separate)


def test_each_input_is_multiplied_once_and_another_tensor_anew():
    model = _tiny_model("qwen3")
    fused.fuse_projections(model)
    attention = model.layers[0].self_attn
    calls = []
    attention.qkv_proj.register_forward_hook(lambda module, args, output: calls.append(args[0]))
    x = torch.randn(1, 4, 64)
    with torch.inference_mode():
        q, k, v = attention.q_proj(x), attention.k_proj(x), attention.v_proj(x)
        assert len(calls) == 1
        again = attention.k_proj(x.clone())  # equal values, another tensor: computed again
        assert len(calls) == 2
        other = model.layers[1].self_attn.k_proj(x)  # the same tensor into another layer: that layer's weights
        assert len(calls) == 2
        whole = attention.qkv_proj(x)
    torch.testing.assert_close(torch.cat([q, k, v], dim=-1), whole, rtol=0, atol=0)
    torch.testing.assert_close(again, k, rtol=0, atol=0)
    assert not torch.equal(other, k)
    fused.forget_outputs()


def test_a_forward_pass_that_fails_releases_the_kept_projection():
    model = _tiny_model("qwen3")
    fused.fuse_projections(model)

    def fail(module, args, output):
        assert fused._LAST.source is not None  # held inside the pass
        raise RuntimeError("stop here")

    model.layers[1].mlp.register_forward_hook(fail)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="stop here"):
        model(INPUT_IDS)
    assert fused._LAST.source is None and fused._LAST.owner is None


def test_threads_running_one_fused_model_get_their_own_results():
    model = _tiny_model("qwen3")
    fused.fuse_projections(model)
    inputs = [torch.randint(0, 256, (1, 3 + i)) for i in range(6)]
    with torch.inference_mode():
        expected = [model(ids).last_hidden_state for ids in inputs]
    results: dict[int, list[torch.Tensor]] = {}

    def work(i: int) -> None:
        with torch.inference_mode():
            results[i] = [model(inputs[i]).last_hidden_state for _ in range(5)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, outputs in results.items():
        for output in outputs:
            torch.testing.assert_close(output, expected[i], rtol=0, atol=0)
    assert len(results) == 6


@pytest.mark.parametrize("kind", ["embedding", "reranker"])
def test_int8_models_make_four_int8_multiplies_per_layer_and_hold_nothing_after(
    kind, tiny_embedding_path, tiny_reranker_path
):
    if kind == "embedding":
        loaded = Qwen3Embedder(tiny_embedding_path, device="cpu", dtype="int8")
    else:
        loaded = Qwen3Reranker(tiny_reranker_path, device="cpu", dtype="int8")
    model = loaded._loaded.model
    layers = model.config.num_hidden_layers
    int8 = [m for m in model.modules() if isinstance(m, quantize.INT8_LAYERS)]
    assert len(int8) == 4 * layers
    calls: list[torch.nn.Module] = []
    hooks = [m.register_forward_hook(lambda module, args, output: calls.append(module)) for m in int8]
    try:
        if kind == "embedding":
            loaded.embed_documents(["a document"])
        else:
            loaded.score("a query", ["a document"])
    finally:
        for hook in hooks:
            hook.remove()
    assert calls and len(calls) % (4 * layers) == 0  # every pass: 4 per layer, not 7
    assert fused._LAST.source is None and fused._LAST.output is None
