"""What every benchmark shares: random-weight checkpoints with the real Qwen3-0.6B shape, realistic inputs
from a fixed seed, interleaved timing, the machine/versions header and the result files.

Checkpoints: ``qwen3_rag.testing.real_architecture_config`` (hidden 1024, 16 query / 8 key-value heads of
128, intermediate 3072, vocabulary 151,669) with ``--layers`` decoder layers instead of 28, and the real Qwen
vocabulary (``build_tokenizer("qwen")``). Each is saved once under ``benchmarks/.cache`` with the files a
sentence-transformers user gets from the Hub (Transformer -> Pooling(lasttoken) -> Normalize and the card's
prompts), so every peer loads the same weights through its own public API.

Fewer layers shrink every peer's time by the same per-layer cost but leave the per-token costs that do not
scale with depth (the recipe's 151,669-row output head, tokenization, Python overhead) as they are: ratios
measured at 2 layers overstate what a full-depth model gains from skipping those. Each benchmark therefore
reports its layer count, and ``--layers 28`` gives the real model's depth.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
CACHE_DIR = Path(os.environ.get("QWEN3_RAG_BENCH_CACHE", BENCH_DIR / ".cache"))
RESULTS_DIR = CACHE_DIR / "results"
# The peer comparisons are float32's (every peer runs fp32); bench_precision.py compares the precisions explicitly.
os.environ.setdefault("QWEN3_RAG_CPU_DTYPE", "float32")

DEFAULT_LAYERS = 2
SEED = 1234
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QUERY_PROMPT = f"Instruct: {INSTRUCTION}\nQuery:"
"""The sentence-transformers ``query`` prompt of Qwen3-Embedding (the card's format, no space after ``Query:``)."""

_BUILD_FORMAT = 1  # bump when a checkpoint's content changes, so cached folders are rebuilt
_MARKER = ".bench_checkpoint.json"

# The reranker prompt of the model card, rendered by sentence-transformers' CrossEncoder from a
# ("query", "document") message pair. Whole-string tokenization of this equals the card's
# prefix_ids + body_ids + suffix_ids (the pieces meet at special tokens); bench_rerank checks the ids.
RERANK_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
RERANK_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def cross_encoder_chat_template(instruction: str = INSTRUCTION) -> str:
    """A Jinja chat template that renders a sentence-transformers ("query", "document") message pair as the
    card's reranker prompt. All literal text sits inside one Jinja string, so Jinja's whitespace rules
    (trim_blocks, dropping a trailing newline) cannot touch the prompt's newlines."""
    head = RERANK_PREFIX + f"<Instruct>: {instruction}\n<Query>: "
    for text in (head, RERANK_SUFFIX):
        if "'" in text:
            raise ValueError("the template quotes its text in single quotes")
    role = 'messages | selectattr("role", "eq", "{0}") | map(attribute="content") | first'
    # flat messages carry a string; structured ones a list of {"type": "text", "text": ...} parts
    text = "{{%- set {0} = {1} if {1} is string else ({1})[0].text -%}}"
    return (
        text.format("query", f"({role.format('query')})")
        + text.format("document", f"({role.format('document')})")
        + "{{- '"
        + head
        + "' + query + '\n<Document>: ' + document + '"
        + RERANK_SUFFIX
        + "' -}}"
    )


# ---------------------------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoints:
    embedding: Path
    reranker: Path
    layers: int


def _save_tokenizer(tokenizer, path: Path) -> None:
    """Save like the Hub checkpoints: ``tokenizer_class`` Qwen2Tokenizer, no unk, no bos."""
    tokenizer.save_pretrained(path)
    config_path = path / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(tokenizer_class="Qwen2Tokenizer", unk_token=None, bos_token=None, errors="replace")
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_sentence_transformers_files(path: Path, hidden_size: int) -> None:
    """The sentence-transformers configuration Qwen3-Embedding ships: Transformer -> Pooling(lasttoken,
    include_prompt) -> Normalize, with the card's query prompt and an empty document prompt."""
    _write_json(
        path / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    _write_json(path / "sentence_bert_config.json", {"max_seq_length": 8192, "do_lower_case": False})
    _write_json(
        path / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": hidden_size,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": False,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": True,
            "include_prompt": True,
        },
    )
    (path / "2_Normalize").mkdir(parents=True, exist_ok=True)
    _write_json(
        path / "config_sentence_transformers.json",
        {
            "prompts": {"query": QUERY_PROMPT, "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )


def _build(kind: str, path: Path, layers: int) -> Path:
    import transformers

    from qwen3_rag.testing import build_tokenizer, real_architecture_config

    spec = {
        "format": _BUILD_FORMAT,
        "kind": kind,
        "layers": layers,
        "seed": SEED,
        "transformers": transformers.__version__,
    }
    marker = path / _MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == spec:
        return path
    print(f"building {kind} checkpoint ({layers} layers, real Qwen3-0.6B width and vocabulary) in {path}", flush=True)
    tokenizer = build_tokenizer("qwen", append_endoftext=kind == "embedding")
    causal = kind == "reranker"
    config = real_architecture_config(
        num_hidden_layers=layers,
        architectures=["Qwen3ForCausalLM" if causal else "Qwen3Model"],
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>") if causal else 151643,
    )
    torch.manual_seed(SEED + layers + (1 if causal else 0))
    model_class = transformers.Qwen3ForCausalLM if causal else transformers.Qwen3Model
    model = model_class(config).to(torch.float32).eval()
    if causal:
        _spread_yes_no(model, tokenizer)
    path.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    _save_tokenizer(tokenizer, path)
    if not causal:
        _write_sentence_transformers_files(path, config.hidden_size)
    marker.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    del model
    gc.collect()
    return path


def _spread_yes_no(model, tokenizer, target_std: float = 1.5) -> None:
    """Set the tied ``yes``/``no`` rows so that logit(yes) - logit(no) has mean ~0 and std ~``target_std``
    over reranker prompts: P(yes) then spreads over (0, 1), where a score error is not hidden by saturation.

    In a shallow random network the last hidden state is dominated by the last token, which is the same
    for every prompt; the rows' difference is therefore put along the leading direction in which the
    prompts' hidden states vary, with the common direction projected out.
    """
    gen = TextGenerator(SEED + 11)
    prefix = tokenizer.encode(RERANK_PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(RERANK_SUFFIX, add_special_tokens=False)
    states = []
    with torch.no_grad():
        for i in range(48):
            body = f"<Instruct>: {INSTRUCTION}\n<Query>: {gen.sentence(5 + i % 20)}\n<Document>: {gen.text(40 + 3 * i)}"
            ids = prefix + tokenizer.encode(body, add_special_tokens=False) + suffix
            states.append(model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1])
        h = torch.stack(states)
        mean = h.mean(0)
        centred = h - mean
        direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        unit_mean = mean / mean.norm()
        direction = direction - (direction @ unit_mean) * unit_mean
        direction *= target_std / (centred @ direction).std()
        yes, no = tokenizer.convert_tokens_to_ids(["yes", "no"])
        weight = model.get_input_embeddings().weight
        base = (weight[yes] + weight[no]) / 2
        weight[yes] = base + direction / 2
        weight[no] = base - direction / 2


def checkpoints(layers: int = DEFAULT_LAYERS, *, reranker: bool = True) -> Checkpoints:
    """Embedding and reranker folders with ``layers`` decoder layers, built once and reused
    (``reranker=False``: the embedding folder only)."""
    if layers < 1:
        raise ValueError(f"--layers must be >= 1, got {layers}")
    root = CACHE_DIR / f"qwen3-0.6b-shape-{layers}-layers"
    return Checkpoints(
        embedding=_build("embedding", root / "embedding", layers),
        reranker=_build("reranker", root / "reranker", layers) if reranker else root / "reranker",
        layers=layers,
    )


# --------------------------------------------------------------------------------------------------- inputs


def _words() -> list[str]:
    seen: dict[str, None] = {}
    for line in (BENCH_DIR / "words.txt").read_text(encoding="utf-8").splitlines():
        word = line.strip()
        if word and not word.startswith("#"):
            seen.setdefault(word, None)
    return list(seen)


_TOKENS_PER_WORD = 1.22
"""Qwen tokens per generated word (with punctuation), measured on this generator; used to aim lengths."""


class TextGenerator:
    """English-like text from a ranked word list: Zipf-Mandelbrot word frequencies, capitalised sentences of 6-24 words,
    commas, occasional numbers, paragraphs separated by a blank line. Deterministic for a seed."""

    def __init__(self, seed: int = SEED) -> None:
        self.rng = np.random.default_rng(seed)
        self.words = _words()
        ranks = np.arange(1, len(self.words) + 1, dtype=np.float64)
        weights = 1.0 / (ranks + 2.7)  # Zipf-Mandelbrot: no single word dominates a short list
        self.cdf = np.cumsum(weights / weights.sum())

    def _word(self) -> str:
        if self.rng.random() < 0.03:
            return str(int(self.rng.integers(2, 2030)))
        return self.words[int(np.searchsorted(self.cdf, self.rng.random()))]

    def sentence(self, n_words: int, end: str = ".") -> str:
        words = [self._word() for _ in range(max(1, n_words))]
        words[0] = words[0][:1].upper() + words[0][1:]
        for i in range(2, len(words) - 2):
            if self.rng.random() < 0.08:
                words[i] += ","
        return " ".join(words) + end

    def text(self, n_words: int) -> str:
        paragraphs: list[list[str]] = [[]]
        left = n_words
        while left > 0:
            n = min(left, int(self.rng.integers(6, 25)))
            paragraphs[-1].append(self.sentence(n))
            left -= n
            if left > 0 and len(paragraphs[-1]) >= 3 and self.rng.random() < 0.3:
                paragraphs.append([])
        return "\n\n".join(" ".join(p) for p in paragraphs)


def document_token_targets(
    n: int, *, median: int = 180, sigma: float = 0.6, seed: int = SEED, low: int = 16, high: int = 4096
) -> list[int]:
    """Log-normal document lengths in tokens (median ``median``), clipped to [low, high]."""
    rng = np.random.default_rng(seed + 1)
    lengths = rng.lognormal(mean=math.log(median), sigma=sigma, size=n)
    return [int(min(max(x, low), high)) for x in lengths]


def documents(n: int, *, median: int = 180, sigma: float = 0.6, seed: int = SEED) -> list[str]:
    """``n`` documents whose Qwen token lengths are log-normal with median ~``median``."""
    gen = TextGenerator(seed)
    return [
        gen.text(max(3, round(t / _TOKENS_PER_WORD)))
        for t in document_token_targets(n, median=median, sigma=sigma, seed=seed)
    ]


def long_documents(n: int, n_tokens: int, *, seed: int = SEED + 7) -> list[str]:
    """``n`` documents of about ``n_tokens`` tokens each."""
    gen = TextGenerator(seed)
    return [gen.text(round(n_tokens / _TOKENS_PER_WORD)) for _ in range(n)]


def queries(n: int, *, seed: int = SEED + 3) -> list[str]:
    """Search queries of 5-30 words, most ending in a question mark."""
    gen = TextGenerator(seed)
    out = []
    for _ in range(n):
        n_words = int(gen.rng.integers(5, 31))
        out.append(gen.sentence(n_words, end="?" if gen.rng.random() < 0.7 else ""))
    return out


def token_lengths(tokenizer, texts: Sequence[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def describe_lengths(lengths: Sequence[int]) -> str:
    a = np.asarray(lengths)
    return (
        f"{len(a)} texts, tokens: median {int(np.median(a))}, mean {a.mean():.0f}, "
        f"p10 {int(np.percentile(a, 10))}, p90 {int(np.percentile(a, 90))}, max {a.max()}, total {a.sum():,}"
    )


# --------------------------------------------------------------------------------------------------- timing


def set_threads(threads: int | None) -> int:
    """Fix torch's intra-op threads (default: every core) and return the number in use."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warm: dict[str, Callable[[], object]] | None = None,
    log: bool = True,
) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in ``repeats`` rounds that run every function once, in
    an order rotated each round, so load from other processes falls on every peer alike.

    ``warm``: calls run once first, untimed (e.g. on a few inputs; ``{}`` when the caller already ran every
    function once, say to check its output); ``None`` runs one untimed round of ``fns``.
    """
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name, call in (fns if warm is None else warm).items():
        start = time.perf_counter()
        call()
        if log:
            print(f"  {'warm-up':>12}  {name:<40} {time.perf_counter() - start:8.3f} s", flush=True)
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            gc.collect()
            start = time.perf_counter()
            fns[name]()
            elapsed = time.perf_counter() - start
            times[name].append(elapsed)
            if log:
                tag = f"round {r + 1}/{repeats}"
                print(f"  {tag:>12}  {name:<40} {elapsed:8.3f} s  (load {os.getloadavg()[0]:.2f})", flush=True)
    return times


def speedup(times: dict[str, list[float]], peer: str, reference: str = "qwen3-rag") -> tuple[float, float]:
    """How many times faster ``reference`` is than ``peer``: (ratio of medians, ratio of minimums)."""
    return median(times[peer]) / median(times[reference]), min(times[peer]) / min(times[reference])


def fmt_speedup(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.2f}x (min {pair[1]:.2f}x)"


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def spread(xs: Sequence[float]) -> str:
    """min-max of the rounds relative to their median, e.g. ``±3%``."""
    m = median(xs)
    if len(xs) < 2 or m == 0:
        return "-"
    return f"{100 * (max(xs) - min(xs)) / 2 / m:.0f}%"


# ------------------------------------------------------------------------------------------------ machine


def _lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return ""
    have = set(flags.split(":", 1)[1].split())
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "qwen3_rag"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + (" + uncommitted qwen3_rag changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "-"


def machine() -> dict[str, object]:
    """CPU model, cores, memory, threads, load and package versions, for the results header."""
    try:
        import psutil

        memory = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    except ImportError:
        memory = "-"
    return {
        "cpu": _lscpu_model(),
        "cores": os.cpu_count(),
        "cpu_flags": _cpu_flags(),
        "memory": memory,
        "torch_threads": torch.get_num_threads(),
        "load_avg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "versions": {
            dist: _version(dist)
            for dist in (
                "qwen3-rag",
                "torch",
                "transformers",
                "tokenizers",
                "sentence-transformers",
                "langchain-huggingface",
                "llama-index-embeddings-huggingface",
                "onnxruntime",
                "llama-cpp-python",
            )
        },
        "git": _git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def machine_line(info: dict[str, object]) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores ({info['cpu_flags']}), {info['memory']}, "
        f"torch threads {info['torch_threads']}, load average {info['load_avg']}"
    )


# ------------------------------------------------------------------------------------------------ results


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--layers",
        type=int,
        default=DEFAULT_LAYERS,
        help=f"decoder layers of the random checkpoint (real model: 28; default {DEFAULT_LAYERS})",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON results file (default benchmarks/.cache/results/<benchmark>.json)"
    )
    return parser


def command_line() -> str:
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(REPO_DIR):
        script = script.relative_to(REPO_DIR)
    return " ".join(["python", str(script), *sys.argv[1:]])


def save_results(name: str, result: dict[str, object], out: Path | None) -> Path:
    """Write ``result`` (with the command and machine) as JSON and print its markdown."""
    result = {"benchmark": name, "command": command_line(), "machine": machine(), **result}
    path = out or RESULTS_DIR / f"{name}.json"
    _write_json(path, result)
    print()
    print(result.get("markdown", ""))
    print(f"\nresults written to {path}")
    return path


def save_sweep(
    name: str,
    workload: str,
    md: str,
    sweep: dict[str, float],
    *,
    layers: int,
    threads: int,
    docs: int,
    repeats: int,
    out: Path | None,
) -> Path:
    """``save_results`` for a ``--sweep-only`` run: the qwen3-rag settings table under a one-line set-up."""
    md = f"{workload}, {layers} of 28 layers, fp32, {threads} threads, {repeats} interleaved rounds.\n\n{md}"
    result = {"layers": layers, "threads": threads, "docs": docs, "sweep_median_s": sweep, "markdown": md}
    return save_results(name, result, out)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}x"


def fmt_diff(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"
