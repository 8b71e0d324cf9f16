"""Loading: shared models, devices and dtypes, safe and offline, errors that say what to do."""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

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
    assert "no local folder at" in str(info.value)


@pytest.mark.parametrize("path", ["./models/no-such-model", "../no-such-model", "/no/such/model", "~/no-such-model"])
def test_a_missing_path_is_reported_as_a_path_not_as_a_hub_id(path):
    with pytest.raises(ModelLoadError) as info:
        Qwen3Reranker(path)
    message = str(info.value)
    assert message.startswith(f"Could not load the Qwen3 model {path!r}: there is no local folder at")
    assert "looked for it as a Hugging Face Hub id" not in message and "\n" not in message


def test_a_name_that_is_a_valid_hub_id_is_looked_up_on_the_hub_and_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        Qwen3Embedder("models/no-such-model")  # no such folder here, and a valid Hub id
    message = str(info.value)
    assert "looked for it as a Hugging Face Hub id (no local folder of that name exists)" in message
    assert "\n" not in message  # the cause from huggingface_hub spans lines; the message does not


def test_a_file_given_as_the_model_is_refused_as_a_file(tiny_embedding_path):
    with pytest.raises(ModelLoadError, match=r"it is a file, not a model folder"):
        Qwen3Embedder(tiny_embedding_path / "config.json")


@pytest.mark.parametrize("cls", [Qwen3Embedder, Qwen3Reranker])
def test_no_model_is_a_type_error_naming_the_argument(cls):
    with pytest.raises(TypeError, match=r"^model must be a Hugging Face Hub id .* got NoneType$"):
        cls(None)
    with pytest.raises(TypeError, match="got int"):
        cls(3, base_url="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="model must be"):
        cls("  ")


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_an_absent_device_is_refused_before_anything_loads(device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    # The model does not exist: reaching the loader would be a ModelLoadError, not the device's ValueError.
    with pytest.raises(ValueError, match=rf"device '{device}' is not available: .*; available here: cpu$"):
        Qwen3Embedder("/no/such/model", device=device)
    with pytest.raises(ValueError, match=rf"device '{device}' is not available"):
        Qwen3Reranker("/no/such/model", device=device)


def test_a_gpu_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"'cuda:2' is not available: this machine has 2 CUDA device\(s\)"):
        loading.resolve_device("cuda:2")
    assert loading.resolve_device("cuda:1") == torch.device("cuda:1")


def test_one_copy_of_the_weights_for_every_spelling_of_a_device(tiny_embedding_path, monkeypatch):
    assert Qwen3Embedder(tiny_embedding_path, device="cpu:0")._loaded is Qwen3Embedder(tiny_embedding_path)._loaded
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert loading.canonical_device(torch.device("cuda")) == loading.canonical_device(torch.device("cuda:0"))
    assert loading.canonical_device(torch.device("cuda:1")) == "cuda:1"
    assert loading.canonical_device(torch.device("mps")) == loading.canonical_device(torch.device("mps:0"))


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


# -- checkpoint validation -------------------------------------------------------------------------------


def test_an_embedding_checkpoint_is_refused_as_a_reranker(tiny_embedding_path):
    with pytest.raises(ModelLoadError, match=r"is a Qwen3Model checkpoint, not a causal language model") as info:
        Qwen3Reranker(tiny_embedding_path)
    assert "Qwen/Qwen3-Reranker-0.6B" in str(info.value)


def test_a_base_model_saved_as_causal_lm_is_refused_for_its_missing_head(tiny_embedding_path, tmp_path):
    """Qwen3-Embedding's config names Qwen3ForCausalLM, but its files hold a base model: no head to score with."""
    folder = tmp_path / "embedding-as-causal"
    shutil.copytree(tiny_embedding_path, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(architectures=["Qwen3ForCausalLM"], tie_word_embeddings=True)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"hold a base Qwen3Model \(an embedding checkpoint\?\)"):
        Qwen3Reranker(folder)


def test_a_causal_model_whose_head_is_missing_from_its_weights_is_refused(tiny_chat_path, tmp_path):
    from tests.core.checkpoints import untied_causal_model

    complete = untied_causal_model(tiny_chat_path, tmp_path / "untied", keep_head=True)
    assert 0.0 <= Qwen3Reranker(complete).score("q", ["d"])[0] <= 1.0  # an untied head in the files is fine
    headless = untied_causal_model(tiny_chat_path, tmp_path / "headless", keep_head=False)
    with pytest.raises(ModelLoadError) as info:
        Qwen3Reranker(headless)
    message = str(info.value)
    assert "no lm_head.weight" in message and "initialised at random" in message and "\n" not in message


def test_tied_heads_count_as_present(tiny_reranker_path):
    from safetensors import safe_open

    with safe_open(str(tiny_reranker_path / "model.safetensors"), "pt") as handle:
        assert "lm_head.weight" not in set(handle.keys())  # tied to model.embed_tokens.weight, as in Qwen3-0.6B
    assert Qwen3Reranker(tiny_reranker_path)._loaded.model.config.tie_word_embeddings


def test_a_bert_checkpoint_is_refused_as_either_model(tiny_embedding_path, tmp_path):
    from tests.core.checkpoints import bert_checkpoint

    bert = bert_checkpoint(tiny_embedding_path, tmp_path / "bert")
    for cls in (Qwen3Reranker, Qwen3Embedder):
        with pytest.raises(ModelLoadError, match=r"is a 'bert' checkpoint, not a Qwen3 one"):
            cls(bert)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_weight_file_is_a_model_load_error_naming_the_file(tiny_embedding_path, tmp_path, damage):
    folder = tmp_path / damage
    shutil.copytree(tiny_embedding_path, folder)
    weights = folder / "model.safetensors"
    if damage == "truncated":
        with open(weights, "r+b") as f:
            f.truncate(weights.stat().st_size // 2)
    else:
        weights.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match=r"model\.safetensors is corrupt or truncated \(SafetensorError: "):
        Qwen3Embedder(folder)


# -- concurrency ----------------------------------------------------------------------------------------


class _LoadGate:
    """Wraps ``from_pretrained`` of a transformers auto class: counts the loads of each folder, and holds the
    loads of ``blocked`` until ``release`` is set."""

    def __init__(self, monkeypatch, auto_class, blocked=None):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls: dict[str, int] = {}
        original = auto_class.from_pretrained
        gate = self

        def from_pretrained(source, *args, **kwargs):
            gate.calls[str(source)] = gate.calls.get(str(source), 0) + 1
            if blocked is not None and str(source) == str(blocked):
                gate.entered.set()
                assert gate.release.wait(60), "the test never released the load"
            return original(source, *args, **kwargs)

        monkeypatch.setattr(auto_class, "from_pretrained", from_pretrained)


def test_a_loaded_model_is_handed_out_while_another_model_loads(tiny_embedding_path, tmp_path, monkeypatch):
    import transformers

    loaded = Qwen3Embedder(tiny_embedding_path)
    slow = tmp_path / "slow-model"
    shutil.copytree(tiny_embedding_path, slow)
    gate = _LoadGate(monkeypatch, transformers.AutoModel, blocked=slow.resolve())
    loader = threading.Thread(target=Qwen3Embedder, args=(slow,))
    loader.start()
    try:
        assert gate.entered.wait(60)
        got = []
        lookup = threading.Thread(target=lambda: got.append(Qwen3Embedder(tiny_embedding_path)))
        lookup.start()
        lookup.join(timeout=30)
        assert not lookup.is_alive(), "looking up a loaded model waited for another model's load"
        assert got[0]._loaded is loaded._loaded
        assert loader.is_alive()  # the other load really was still in progress
    finally:
        gate.release.set()
        loader.join(timeout=60)


def test_threads_loading_the_same_model_at_once_load_it_once(tiny_reranker_path, tmp_path, monkeypatch):
    import transformers

    fresh = tmp_path / "fresh-reranker"
    shutil.copytree(tiny_reranker_path, fresh)
    gate = _LoadGate(monkeypatch, transformers.AutoModelForCausalLM)
    start = threading.Barrier(8)

    def load(_):
        start.wait()
        return Qwen3Reranker(fresh)._loaded

    with ThreadPoolExecutor(max_workers=8) as pool:
        models = list(pool.map(load, range(8)))
    assert all(m is models[0] for m in models)
    assert gate.calls == {str(fresh.resolve()): 1}
