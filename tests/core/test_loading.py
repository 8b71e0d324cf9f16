"""Loading: shared models, devices and dtypes, safe and offline, errors that say what to do."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import qwen3_rag._loading as loading
from qwen3_rag import ModelLoadError, Qwen3Embedder, Qwen3Reranker


def test_same_model_device_dtype_is_loaded_once(tiny_embedding_path):
    a = Qwen3Embedder(tiny_embedding_path)
    b = Qwen3Embedder(str(tiny_embedding_path), dimensions=32, batch_size=3)
    assert a._loaded is b._loaded
    c = Qwen3Embedder(tiny_embedding_path, dtype="bfloat16")
    assert c._loaded is not a._loaded
    assert c._loaded.model.dtype == torch.bfloat16


def test_a_loaded_model_is_released_when_nobody_holds_it(tiny_reranker_path):
    import gc

    key_count = len(loading._REGISTRY)
    rr = Qwen3Reranker(tiny_reranker_path, dtype="float16")
    assert len(loading._REGISTRY) == key_count + 1
    del rr
    gc.collect()
    assert len(loading._REGISTRY) == key_count


def test_defaults_are_cpu_and_float32_without_an_accelerator(tiny_embedding_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    emb = Qwen3Embedder(tiny_embedding_path)
    assert emb.device.type == "cpu" and emb.dtype == torch.float32


def test_cuda_is_preferred_with_bfloat16_and_mps_next(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert loading.resolve_device(None).type == "cuda"
    assert loading.resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert loading.resolve_dtype(None, torch.device("cuda")) == torch.float32  # never float16 by default
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert loading.resolve_device(None).type == "mps"
    assert loading.resolve_dtype(None, torch.device("mps")) == torch.float32


def test_explicit_device_and_dtype_win(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert loading.resolve_device("cpu").type == "cpu"
    assert loading.resolve_dtype("fp16", torch.device("cuda")) == torch.float16
    assert loading.resolve_dtype(torch.bfloat16, torch.device("cpu")) == torch.bfloat16


@pytest.mark.parametrize(("arg", "value"), [("dtype", "int4"), ("dtype", torch.int64), ("device", "gpu7")])
def test_bad_device_or_dtype_names_the_argument(tiny_embedding_path, arg, value):
    with pytest.raises(ValueError, match=f"{arg} must be"):
        Qwen3Embedder(tiny_embedding_path, **{arg: value})


def test_flash_attention_on_cuda_when_installed_else_sdpa(monkeypatch):
    assert loading.attention_implementation(torch.device("cpu")) == "sdpa"
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else None)
    assert loading.attention_implementation(torch.device("cuda")) == "flash_attention_2"
    assert loading.attention_implementation(torch.device("cpu")) == "sdpa"
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    assert loading.attention_implementation(torch.device("cuda")) == "sdpa"


def test_a_missing_local_folder_says_what_was_looked_for(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model") as info:
        Qwen3Embedder(missing)
    assert "local folder" in str(info.value)


def test_a_hub_id_offline_says_how_to_pass_a_local_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        Qwen3Reranker("Qwen/definitely-not-cached-Reranker")
    message = str(info.value)
    assert "Qwen/definitely-not-cached-Reranker" in message
    assert "HF_HUB_OFFLINE" in message and "local folder" in message


def test_a_folder_without_config_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        Qwen3Embedder(tmp_path)


def test_weights_load_from_safetensors_only(tiny_embedding_path, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_embedding_path, folder)
    state = {}
    from safetensors.torch import load_file

    for f in folder.glob("*.safetensors"):
        state.update(load_file(f))
        f.unlink()
    for f in folder.glob("*.safetensors.index.json"):
        f.unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickled"):
        Qwen3Embedder(folder)


def test_remote_code_is_never_executed(tiny_embedding_path, tmp_path):
    folder = tmp_path / "remote-code"
    shutil.copytree(tiny_embedding_path, folder)
    (folder / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil.EvilModel", "AutoConfig": "evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    emb = Qwen3Embedder(folder)  # loads the native Qwen3 architecture; evil.py is never imported
    assert type(emb._loaded.model).__name__ == "Qwen3Model"


def test_copies_and_pickles_share_or_reload_the_model_instead_of_copying_weights(tiny_embedding_path):
    import copy
    import pickle

    import numpy as np

    emb = Qwen3Embedder(tiny_embedding_path, dimensions=32)
    clone = copy.deepcopy(emb)
    assert clone._loaded is emb._loaded
    payload = pickle.dumps(emb)
    assert len(payload) < 20_000  # the recipe, not the weights
    restored = pickle.loads(payload)
    assert restored._loaded is emb._loaded  # same process: the registry hands back the loaded model
    np.testing.assert_allclose(restored.embed_queries(["q"]), emb.embed_queries(["q"]))
