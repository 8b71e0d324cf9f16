"""oneDNN pre-packed linear layers on CPU: used where they can be, equal to nn.Linear, off when asked."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import qwen3_rag._cpu_linear as cpu_linear
from qwen3_rag import Qwen3Embedder, Qwen3Reranker
from qwen3_rag._cpu_linear import PackedLinear, pack_linear_layers

needs_onednn = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN (packing is then off)"
)


def _linears(model: torch.nn.Module, kind: type) -> list[str]:
    return [name for name, module in model.named_modules() if type(module) is kind]


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 64), (3, 7, 64), (1, 1, 64)])
def test_packed_linear_equals_nn_linear(dtype, bias, shape):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96, bias=bias, dtype=dtype)
    x = torch.randn(*shape).to(dtype)
    if dtype == torch.bfloat16 and not cpu_linear._probe(dtype):
        # oneDNN packs bf16 only on CPUs with AVX512-BW/VL/DQ or AVX-NE-CONVERT: elsewhere it refuses, and the
        # loader keeps nn.Linear
        with pytest.raises(RuntimeError):
            PackedLinear(linear)
        assert pack_linear_layers(torch.nn.Sequential(linear), torch.device("cpu"), dtype) == 0
        return
    with torch.inference_mode():
        expected = linear(x).float()
        got = PackedLinear(linear)(x).float()
    assert got.shape == expected.shape
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)


@needs_onednn
def test_loaded_cpu_models_use_packed_decoder_linears_but_keep_the_head(
    tiny_embedding_path, tiny_reranker_path, tmp_path, monkeypatch
):
    monkeypatch.delenv(cpu_linear.ENV_SWITCH, raising=False)
    tiny_embedding_path = shutil.copytree(tiny_embedding_path, tmp_path / "embedding")  # loaded fresh here
    tiny_reranker_path = shutil.copytree(tiny_reranker_path, tmp_path / "reranker")
    emb = Qwen3Embedder(tiny_embedding_path, device="cpu")
    model = emb._loaded.model
    assert _linears(model, torch.nn.Linear) == []
    # q, k, v, o, gate, up, down in every layer
    assert len(_linears(model, PackedLinear)) == 7 * model.config.num_hidden_layers

    rr = Qwen3Reranker(tiny_reranker_path, device="cpu")
    causal_lm = rr._loaded.model
    assert _linears(causal_lm, torch.nn.Linear) == ["lm_head"]  # only its yes/no rows are read
    assert len(_linears(causal_lm, PackedLinear)) == 7 * causal_lm.config.num_hidden_layers


def test_float16_and_non_cpu_devices_are_left_alone(tiny_embedding_path):
    model = Qwen3Embedder(tiny_embedding_path, device="cpu", dtype="float16")._loaded.model
    assert _linears(model, PackedLinear) == []
    assert pack_linear_layers(model, torch.device("meta"), torch.float32) == 0


def test_switched_off_by_environment_and_results_agree(qwen_embedding_path, tmp_path, monkeypatch):
    texts = ["What is the capital of China?", "Explain gravity\nin two lines.", "Beijing is the capital."]
    packed = Qwen3Embedder(qwen_embedding_path, device="cpu")
    copy = shutil.copytree(qwen_embedding_path, tmp_path / "plain")  # another path: not the shared model
    monkeypatch.setenv(cpu_linear.ENV_SWITCH, "0")
    plain = Qwen3Embedder(copy, device="cpu")
    assert _linears(plain._loaded.model, PackedLinear) == []
    assert _linears(plain._loaded.model, torch.nn.Linear) != []
    np.testing.assert_allclose(packed.embed_queries(texts), plain.embed_queries(texts), atol=1e-5)
    np.testing.assert_allclose(packed.embed_documents(texts), plain.embed_documents(texts), atol=1e-5)


def test_a_failing_probe_keeps_plain_linears(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no oneDNN kernel for this CPU")

    monkeypatch.setattr(PackedLinear, "forward", broken)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    assert pack_linear_layers(model, torch.device("cpu"), torch.float32) == 0
    assert type(model[0]) is torch.nn.Linear

    def wrong(self, x):
        return torch.zeros(*x.shape[:-1], self.out_features, dtype=x.dtype)

    monkeypatch.setattr(PackedLinear, "forward", wrong)  # runs, but disagrees with nn.Linear
    assert pack_linear_layers(model, torch.device("cpu"), torch.float32) == 0

    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert pack_linear_layers(model, torch.device("cpu"), torch.float32) == 0
