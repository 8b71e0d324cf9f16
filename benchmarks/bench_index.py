"""``qwen3-rag index`` against a plain script doing the same work: the CLI's own overhead on many small files.

    python benchmarks/bench_index.py [--files 2000] [--repeats 3] [--per-file] [--threads N]

Peers, in one process, interleaved round by round, each into a fresh database:

- ``qwen3-rag index``: the command itself (``qwen3_rag.cli.main``), in process, on a folder of ``--files`` small
  text files -- discovery, reading, chunking, hashing, the fingerprint, the locks, the batched writes, all of it;
- ``qwen3-rag index, one upsert per file`` (``--per-file``): the same, storing each file on its own (what the CLI
  did before it batched its writes across files), to show what batching buys;
- ``plain script``: read the same files, cut them with the same chunker, embed every chunk with one
  ``Qwen3Embedder.embed_documents`` call and ``collection.add`` them to a fresh Chroma collection in batches of
  the client's maximum -- the least a program can do for the same index.

The goal (issue 11) is ``qwen3-rag index`` <= 1.5x the plain script. The checkpoint is deliberately TINY (2 layers,
hidden 64, the real Qwen vocabulary and tokenizer): this measures the pipeline's overhead, which a real model's
embedding time would hide. Both peers share the loaded weights (the core keeps one copy per process).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import common


def write_files(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, text in enumerate(common.documents(n, median=100, sigma=0.5)):
        path = folder / f"{i // 100:02}" / f"note{i:05}.md"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="small files to index (default 2000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds (default 3)")
    parser.add_argument(
        "--per-file", action="store_true", help="add the one-upsert-per-file peer (slow: ~30 ms and more per file)"
    )
    args = parser.parse_args()
    threads = common.set_threads(args.threads)

    import chromadb
    from chromadb.config import Settings

    from qwen3_rag import Qwen3Embedder, testing
    from qwen3_rag.cli import indexing
    from qwen3_rag.cli import main as cli
    from qwen3_rag.cli.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE
    from qwen3_rag.cli.loaders import read_document

    work = Path(tempfile.mkdtemp(prefix="qwen3-bench-index-"))
    model = testing.build_embedding_model(common.CACHE_DIR / "tiny-qwen-vocab-embedding", vocab="qwen")
    folder = work / "corpus"
    paths = write_files(folder, args.files)
    embedder = Qwen3Embedder(model, device="cpu", show_progress=False)  # held: the CLI reuses these weights
    runs = {"n": 0}

    def fresh_db() -> Path:
        runs["n"] += 1
        return work / f"db{runs['n']}"

    def cli_index(write_chunks: int | None = None):
        def run():
            original = indexing.WRITE_CHUNKS
            indexing.WRITE_CHUNKS = write_chunks or original
            try:
                db = fresh_db()
                code = cli(["index", str(folder), "--db", str(db), "--embedding-model", str(model), "-q",
                            "--device", "cpu"])  # fmt: skip
                assert code == 0, code
                shutil.rmtree(db)
            finally:
                indexing.WRITE_CHUNKS = original

        return run

    def plain_script():
        db = fresh_db()
        chunks, sources = [], []
        for path in paths:
            text = read_document(path).text
            for chunk in indexing.chunk_text(
                text, embedder.tokenizer, chunk_size=DEFAULT_CHUNK_SIZE, overlap=DEFAULT_CHUNK_OVERLAP, markdown=True
            ):
                chunks.append(chunk.text)
                sources.append(str(path))
        vectors = embedder.embed_documents(chunks)
        with chromadb.PersistentClient(path=str(db), settings=Settings(anonymized_telemetry=False)) as client:
            collection = client.create_collection("plain", configuration={"hnsw": {"space": "cosine"}})
            step = client.get_max_batch_size()
            for start in range(0, len(chunks), step):
                end = start + step
                collection.add(
                    ids=[str(i) for i in range(start, min(end, len(chunks)))],
                    embeddings=vectors[start:end],
                    documents=chunks[start:end],
                    metadatas=[{"source": s} for s in sources[start:end]],
                )
        shutil.rmtree(db)
        return len(chunks)

    n_chunks = plain_script()
    print(f"{args.files} files, {n_chunks} chunks; {threads} threads", flush=True)
    fns = {"qwen3-rag index": cli_index(), "plain script": plain_script}
    if args.per_file:
        fns["qwen3-rag index, one upsert per file"] = cli_index(write_chunks=1)
    times = common.interleaved(fns, repeats=args.repeats)
    shutil.rmtree(work, ignore_errors=True)

    ratio = common.speedup(times, "qwen3-rag index", reference="plain script")
    rows = [
        [name, f"{common.median(t):.2f} s", common.spread(t), common.fmt_ratio(common.median(t) / common.median(
            times["plain script"]))]
        for name, t in times.items()
    ]  # fmt: skip
    md = "\n\n".join(
        [
            f"{args.files} small Markdown files ({n_chunks} chunks, median ~100 tokens), tiny checkpoint (2 layers, "
            f"hidden 64, real Qwen vocabulary: the pipeline's overhead, not the model's), {threads} threads, "
            f"{args.repeats} interleaved rounds, median; each run into a fresh database.",
            common.table(["peer", "time", "±", "vs plain script"], rows),
            f"Goal: qwen3-rag index <= 1.5x the plain script: {ratio[0]:.2f}x (min {ratio[1]:.2f}x) -- "
            f"{common.verdict(ratio[0] <= 1.5)}.",
        ]
    )
    common.save_results(
        "index",
        {
            "files": args.files,
            "chunks": n_chunks,
            "threads": threads,
            "times": times,
            "ratio": ratio[0],
            "markdown": md,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
