"""The CPU-native peers of bench_precision.py, on the same random checkpoint: ONNX Runtime (fp32 and dynamic int8,
exported and run the way fastembed runs Qwen3 ONNX models) and llama.cpp (llama-cpp-python, GGUF F32 and Q8_0).

ONNX: ``torch.onnx.export(dynamo=True)`` of the decoder (``AutoModel``: input_ids, attention_mask ->
last_hidden_state), int8 by ``onnxruntime.quantization.quantize_dynamic`` (its defaults: QInt8 weights per tensor,
activations quantised per call), run by an ``InferenceSession`` with ``ORT_ENABLE_ALL`` and the benchmark's thread
count, as fastembed configures it. Inputs are qwen3-rag's token ids, batched by qwen3-rag's own plan (length-sorted,
same token budget), so the comparison is of the runtimes, not of batching; pooling is the last real token, as the
card. The reranker's ONNX peer is its decoder plus the ``yes`` - ``no`` row difference on the last token (what a
sequence-classification conversion of Qwen3-Reranker computes): P(yes) = sigmoid.

GGUF: llama.cpp's own converter (``convert_hf_to_gguf.py``, from the llama-cpp-python source distribution of the
installed version, which vendors it) writes F32 and Q8_0 files; the reranker folder is named ``qwen3-reranker`` so
the converter makes its yes/no classifier head (pooling ``rank``). Embeddings use pooling ``last``.
Everything converted is cached next to the checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

import common
import numpy as np

# ---------------------------------------------------------------------------------------------------- ONNX


def export_onnx(checkpoint: Path) -> tuple[Path, Path]:
    """``(fp32, int8)`` ONNX files of the checkpoint's decoder, exported once."""
    out = checkpoint / "onnx"
    fp32, int8 = out / "model.onnx", out / "model_int8.onnx"
    if not fp32.is_file():
        print(f"exporting {checkpoint.name} to ONNX", flush=True)
        out.mkdir(exist_ok=True)
        code = (
            "import sys, torch, transformers\n"
            "from torch.export import Dim\n"
            "src, dst = sys.argv[1], sys.argv[2]\n"
            "m = transformers.AutoModel.from_pretrained(src, dtype=torch.float32, attn_implementation='eager').eval()\n"
            "class W(torch.nn.Module):\n"
            "    def __init__(s, m): super().__init__(); s.m = m\n"
            "    def forward(s, input_ids, attention_mask):\n"
            "        out = s.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)\n"
            "        return out.last_hidden_state\n"
            "ids = torch.randint(0, 1000, (2, 9)); mask = torch.ones_like(ids)\n"
            "b, n = Dim('batch'), Dim('seq', min=2, max=32768)\n"
            "torch.onnx.export(W(m), (ids, mask), dst, dynamo=True, input_names=['input_ids', 'attention_mask'],\n"
            "    output_names=['last_hidden_state'], external_data=True,\n"
            "    dynamic_shapes={'input_ids': {0: b, 1: n}, 'attention_mask': {0: b, 1: n}})\n"
        )
        subprocess.run([sys.executable, "-c", code, str(checkpoint), str(fp32)], check=True)
    if not int8.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        print(f"quantising {fp32} to dynamic int8", flush=True)
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, use_external_data_format=True)
    return fp32, int8


def onnx_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # no busy-waiting between runs: in one process with torch, spinning threads would steal the next peer's cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _batches(lengths: Sequence[int], budget: int, size: int = 32) -> list[list[int]]:
    """qwen3-rag's own plan: length-sorted batches of at most ``size`` rows and ``budget`` padded tokens."""
    from qwen3_rag._batching import plan_batches

    return plan_batches(list(lengths), size, budget)


def onnx_last_states(session, rows: Sequence[Sequence[int]], budget: int = 4096) -> np.ndarray:
    """Last real token's hidden state of each row (right padding, causal: padding is never attended to)."""
    hidden = None
    for batch in _batches([len(r) for r in rows], budget):
        width = max(len(rows[i]) for i in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for j, i in enumerate(batch):
            ids[j, : len(rows[i])] = rows[i]
            mask[j, : len(rows[i])] = 1
        states = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        if hidden is None:
            hidden = np.zeros((len(rows), states.shape[-1]), dtype=np.float32)
        for j, i in enumerate(batch):
            hidden[i] = states[j, len(rows[i]) - 1]
    return hidden


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class OnnxEmbedder:
    def __init__(self, path: Path, core, threads: int) -> None:
        self.session, self.core = onnx_session(path, threads), core  # core: qwen3-rag's tokenizer rules

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return unit(onnx_last_states(self.session, self.core.tokenize(texts)))

    def embed_query(self, text: str) -> np.ndarray:
        return unit(onnx_last_states(self.session, self.core.tokenize([text], instruction=common.INSTRUCTION)))[0]


class OnnxReranker:
    def __init__(self, path: Path, core, threads: int) -> None:
        self.session, self.core = onnx_session(path, threads), core
        head = core._head.numpy()  # rows [no, yes], float32
        self.direction = head[1] - head[0]

    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        states = onnx_last_states(self.session, self.core.tokenize(query, documents))
        return (1.0 / (1.0 + np.exp(-(states @ self.direction)))).tolist()


# -------------------------------------------------------------------------------------------------- llama.cpp


def _converter() -> Path:
    """llama.cpp's convert_hf_to_gguf.py from the installed llama-cpp-python's source distribution."""
    version = importlib.metadata.version("llama-cpp-python")
    root = common.CACHE_DIR / f"llama_cpp_python-{version}"  # the archive's top folder
    script = root / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    download = common.CACHE_DIR / "sdist"
    download.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(download),
         f"llama-cpp-python=={version}"],
        check=True,
    )  # fmt: skip
    archive = next(download.glob(f"llama_cpp_python-{version}.tar.gz"))
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name and not m.issym() and not m.islnk()]
        tar.extractall(common.CACHE_DIR, members=members, filter="data")
    return script


def convert_gguf(checkpoint: Path, kind: str) -> dict[str, Path]:
    """``{"F32": path, "Q8_0": path}`` GGUF files of the checkpoint, converted once."""
    out = checkpoint / "gguf"
    files = {"F32": out / "model-f32.gguf", "Q8_0": out / "model-q8_0.gguf"}
    if all(f.is_file() for f in files.values()):
        return files
    out.mkdir(exist_ok=True)
    # the converter recognises a Qwen3 reranker by its folder name: give it one, linked to the same files
    source = out / ("qwen3-reranker" if kind == "reranker" else "qwen3-embedding")
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(checkpoint, source, copy_function=os.link, ignore=shutil.ignore_patterns("onnx", "gguf"))
    script = _converter()
    for outtype, path in files.items():
        if not path.is_file():
            print(f"converting {checkpoint.name} to GGUF {outtype}", flush=True)
            subprocess.run(
                [sys.executable, str(script), str(source), "--outfile", str(path), "--outtype", outtype.lower()],
                check=True, cwd=script.parent,
            )  # fmt: skip
    shutil.rmtree(source)
    return files


def llama_model(path: Path, threads: int, *, rank: bool, budget: int = 4096):
    import llama_cpp

    pooling = llama_cpp.LLAMA_POOLING_TYPE_RANK if rank else llama_cpp.LLAMA_POOLING_TYPE_LAST
    return llama_cpp.Llama(
        str(path), embedding=True, pooling_type=pooling, n_ctx=8192, n_batch=budget, n_ubatch=budget,
        n_seq_max=64, n_threads=threads, n_threads_batch=threads, verbose=False,
    )  # fmt: skip


class LlamaEmbedder:
    def __init__(self, path: Path, threads: int) -> None:
        self.model = llama_model(path, threads, rank=False)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.embed(list(texts), normalize=True), dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        from qwen3_rag.prompts import format_query

        return np.asarray(self.model.embed([format_query(text, common.INSTRUCTION)], normalize=True)[0])


class LlamaReranker:
    """Pooling ``rank``: llama.cpp's softmax over the yes/no head, P(yes) first. Token ids are qwen3-rag's (the
    card's prompt, special tokens included), decoded in batches of up to the token budget."""

    def __init__(self, path: Path, core, threads: int, budget: int = 4096) -> None:
        self.model, self.core, self.budget = llama_model(path, threads, rank=True, budget=budget), core, budget

    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        import llama_cpp

        rows = self.core.tokenize(query, documents)
        scores = [0.0] * len(rows)
        for batch in _batches([len(r) for r in rows], self.budget):
            self.model._batch.reset()
            for seq, i in enumerate(batch):
                self.model._batch.add_sequence(rows[i], seq, True)
            self.model._ctx.kv_cache_clear()
            self.model._ctx.decode(self.model._batch)
            for seq, i in enumerate(batch):
                scores[i] = float(llama_cpp.llama_get_embeddings_seq(self.model._ctx.ctx, seq)[0])
        return scores
