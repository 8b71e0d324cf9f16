"""Chunking: qwen3-rag's token chunker vs. LlamaIndex's SentenceSplitter and LangChain's
RecursiveCharacterTextSplitter (both given the same Qwen tokenizer and size), side by side on English and on
Chinese text; then what the chunk size costs at query time: reranking the top 20 chunks of each size.

    python benchmarks/bench_chunking.py [--layers 4] [--chars 200000] [--repeats 3]

Part 1 (no model): seconds to chunk, chunks made, the longest chunk in Qwen tokens, how many chunks are longer than
the size (the embedder would cut those), and how many non-whitespace characters of the text are in no chunk.
Part 2: the default CLI reranker path (``Qwen3Reranker.score``, this CPU's default precision) on 1 query x 20
chunks of 128 ... 2048 tokens, at ``--layers`` of the real 0.6B width; the last column scales it to 28 layers
(times 28 / layers: a slight overestimate, the per-model costs that do not grow with depth are scaled too).
"""

from __future__ import annotations

import os
import time

import common
import numpy as np

SIZES = (128, 256, 512, 1024, 2048)
TOP_K = 20
CHUNK_SIZE, OVERLAP = 512, 64


def chinese_text(n_chars: int, seed: int = common.SEED) -> str:
    """Chinese-like prose: runs of common characters, sentences ending in 。！？，, paragraphs; no spaces."""
    rng = np.random.default_rng(seed)
    common_chars = (
        "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本"
        "去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总"
        "次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质"
    )
    out, sentence = [], 0
    while sum(map(len, out)) < n_chars:
        n = int(rng.integers(8, 40))
        out.append("".join(common_chars[i] for i in rng.integers(0, len(common_chars), n)))
        out.append("。！？，"[int(rng.integers(0, 4))])
        sentence += 1
        if sentence % 6 == 0:
            out.append("\n\n")
    return "".join(out)[:n_chars]


def thai_text(n_chars: int, seed: int = common.SEED) -> str:
    """Thai words in random order, no spaces (as Thai is written), a line break now and then."""
    words = [
        "ผึ้ง",
        "เต้นรำ",
        "เพื่อ",
        "บอก",
        "ทิศทาง",
        "และ",
        "ระยะทาง",
        "ของ",
        "ดอกไม้",
        "แก่",
        "เพื่อน",
        "ร่วม",
        "รัง",
        "น้ำผึ้ง",
        "หวาน",
        "บิน",
        "ไกล",
        "สวน",
        "ต้นไม้",
        "ฤดู",
    ]
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while sum(map(len, out)) < n_chars:
        out.append(words[int(rng.integers(0, len(words)))])
        if rng.random() < 0.02:
            out.append("\n")
    return "".join(out)[:n_chars]


def lost_characters(text: str, chunks: list[str]) -> int:
    """Non-whitespace characters of ``text`` in no chunk: chunks are looked up in order (they are substrings)."""
    covered = bytearray(len(text))
    start = 0
    for chunk in chunks:
        stripped = chunk.strip()
        if not stripped:
            continue
        at = text.find(stripped, start)  # the first place after the previous chunk's start
        if at < 0:
            continue  # rewritten text (not a substring): counts as lost
        covered[at : at + len(stripped)] = b"\x01" * len(stripped)
        start = at + 1
    return sum(1 for i, flag in enumerate(covered) if not flag and not text[i].isspace())


def splitters(tokenizer):
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from llama_index.core.node_parser import SentenceSplitter

    from qwen3_rag.cli.chunking import chunk_text

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    llama = SentenceSplitter(chunk_size=CHUNK_SIZE, chunk_overlap=OVERLAP, tokenizer=encode)
    langchain = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        tokenizer, chunk_size=CHUNK_SIZE, chunk_overlap=OVERLAP
    )
    return {
        "qwen3-rag": lambda text: [c.text for c in chunk_text(text, tokenizer, chunk_size=CHUNK_SIZE, overlap=OVERLAP)],
        "LlamaIndex SentenceSplitter": llama.split_text,
        "LangChain RecursiveCharacterTextSplitter": langchain.split_text,
    }


def part_chunkers(tokenizer, n_chars: int, repeats: int) -> tuple[str, dict]:
    texts = {
        "English": common.TextGenerator(common.SEED).text(int(n_chars / 5.6)),
        "Chinese": chinese_text(n_chars // 3),
        "Thai, no spaces": thai_text(n_chars // 4),
        "one line, no boundary": chinese_text(n_chars // 10)
        .replace("。", "")
        .replace("！", "")
        .replace("？", "")
        .replace("，", "")
        .replace("\n", ""),
    }
    fns = splitters(tokenizer)
    rows, raw = [], {}
    for label, text in texts.items():
        n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        outputs = {name: fn(text) for name, fn in fns.items()}  # also the warm-up
        times = common.interleaved(
            {n: (lambda f=f, text=text: f(text)) for n, f in fns.items()}, repeats=repeats, warm={}
        )
        for name, chunks in outputs.items():
            lengths = [len(ids) for ids in tokenizer(chunks, add_special_tokens=False)["input_ids"]]
            over = sum(1 for n in lengths if n > CHUNK_SIZE)
            lost = lost_characters(text, chunks)
            med = common.median(times[name])
            raw[f"{label}/{name}"] = {
                "seconds": med, "chunks": len(chunks), "max_tokens": max(lengths), "over_size": over, "lost": lost
            }  # fmt: skip
            rows.append([
                f"{label} ({len(text):,} chars, {n_tokens:,} tokens)", name, f"{med:.3f}",
                f"{med / common.median(times['qwen3-rag']):.2f}x",
                len(chunks), max(lengths), over, lost,
            ])  # fmt: skip
    header = ["text", "splitter", "median s", "peer time / ours", "chunks", "longest (tokens)",
              f"chunks > {CHUNK_SIZE} tokens", "non-space chars in no chunk"]  # fmt: skip
    return common.table(header, rows), raw


def part_rerank_cost(tokenizer, layers: int, repeats: int) -> tuple[str, dict]:
    os.environ["QWEN3_RAG_CPU_DTYPE"] = "auto"  # the CLI's default precision on this CPU
    from qwen3_rag import Qwen3Reranker

    ck = common.checkpoints(layers)
    reranker = Qwen3Reranker(str(ck.reranker), device="cpu", show_progress=False)
    query = common.queries(1)[0]
    calls = {}
    for size in SIZES:
        docs = common.long_documents(TOP_K, size, seed=common.SEED + size)
        docs = [tokenizer.decode(tokenizer(d, add_special_tokens=False)["input_ids"][:size])
                for d in docs]  # fmt: skip
        calls[size] = lambda docs=docs: reranker.score(query, docs)
    times = common.interleaved({str(s): c for s, c in calls.items()}, repeats=repeats)
    rows, raw = [], {}
    for size in SIZES:
        med = common.median(times[str(size)])
        raw[size] = med
        rows.append([size, f"{med:.2f}", f"{1000 * med / TOP_K:.0f}", f"{med * 28 / layers:.1f}"])
    precision = str(reranker.dtype).removeprefix("torch.")
    md = (
        f"1 query x {TOP_K} chunks, {layers} of 28 layers, {precision}, {repeats} interleaved rounds.\n\n"
        + common.table(
            ["chunk size (tokens)", f"rerank {TOP_K} chunks, s", "ms per chunk", "scaled to 28 layers, s"], rows
        )
    )
    return md, raw


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.set_defaults(layers=4)
    parser.add_argument("--chars", type=int, default=200_000, help="characters of English text (default 200,000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds (default 3)")
    parser.add_argument("--skip-rerank", action="store_true", help="only the chunkers")
    args = parser.parse_args()
    threads = common.set_threads(args.threads)
    from qwen3_rag import testing

    tokenizer = testing.build_tokenizer("qwen", append_endoftext=False)
    start = time.perf_counter()
    chunk_md, chunk_raw = part_chunkers(tokenizer, args.chars, args.repeats)
    print(f"chunkers done in {time.perf_counter() - start:.1f} s")
    rerank_md, rerank_raw = (
        ("(skipped)", {}) if args.skip_rerank else part_rerank_cost(tokenizer, args.layers, args.repeats)
    )
    md = (
        f"Chunkers at {CHUNK_SIZE}/{OVERLAP} tokens (the Qwen tokenizer for all), {threads} threads, "
        f"{args.repeats} interleaved rounds.\n\n{chunk_md}\n\nWhat the chunk size costs per query:\n\n{rerank_md}"
    )
    common.save_results(
        "chunking",
        {"threads": threads, "layers": args.layers, "chunkers": chunk_raw, "rerank_s": rerank_raw, "markdown": md},
        args.out,
    )


if __name__ == "__main__":
    main()
