"""``qwen3-rag``: a local RAG over an embedded Chroma database, from the command line.

    qwen3-rag index PATH...        chunk .txt/.md/.rst/.html files, embed them, store them in --db
    qwen3-rag search "question"    retrieve --top-k chunks, rerank to --top-n, print source, chunk and score
    qwen3-rag ask "question"       search, then answer with a local chat model, citing the sources

Every model, the database, the Matryoshka size, device and dtype can also be set through environment variables
(``QWEN3_RAG_EMBEDDING_MODEL``, ``QWEN3_RAG_RERANKER_MODEL``, ``QWEN3_RAG_LLM``, ``QWEN3_RAG_DB``, ...), so an
offline machine can point them at local folders once. A flag beats its variable.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from qwen3_rag import __version__
from qwen3_rag._corpus import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, SUPPORTED_SUFFIXES, UsageError, find_files
from qwen3_rag._loading import ModelLoadError

PROG = "qwen3-rag"

ENV = {
    "db": "QWEN3_RAG_DB",
    "collection": "QWEN3_RAG_COLLECTION",
    "embedding_model": "QWEN3_RAG_EMBEDDING_MODEL",
    "reranker_model": "QWEN3_RAG_RERANKER_MODEL",
    "llm": "QWEN3_RAG_LLM",
    "dimensions": "QWEN3_RAG_DIMENSIONS",
    "instruction": "QWEN3_RAG_INSTRUCTION",
    "device": "QWEN3_RAG_DEVICE",
    "dtype": "QWEN3_RAG_DTYPE",
    "max_new_tokens": "QWEN3_RAG_MAX_NEW_TOKENS",
    "embedding_url": "QWEN3_RAG_EMBEDDING_URL",
    "reranker_url": "QWEN3_RAG_RERANKER_URL",
    "api_key": "QWEN3_RAG_API_KEY",
}
"""The environment variable behind each option; the flag wins when both are set."""


# ------------------------------------------------------------------------------------------------- parsing


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32, width=100)


def _fill(text: str) -> str:
    return textwrap.fill(text, width=100)


def _add_common(parser: argparse.ArgumentParser) -> None:
    from qwen3_rag._index import DEFAULT_COLLECTION, DEFAULT_DB

    store = parser.add_argument_group("index")
    store.add_argument("--db", metavar="PATH", help=f"Chroma database folder [${ENV['db']}, default {DEFAULT_DB}]")
    store.add_argument(
        "--collection",
        metavar="NAME",
        help=f"collection in the database [${ENV['collection']}, default {DEFAULT_COLLECTION}]",
    )
    models = parser.add_argument_group("embedding")
    models.add_argument(
        "--embedding-model",
        metavar="ID|DIR",
        help=f"Qwen3-Embedding Hub id or local folder [${ENV['embedding_model']}; default: the index's own model, "
        "or Qwen/Qwen3-Embedding-0.6B for a new index]",
    )
    models.add_argument(
        "--dimensions",
        metavar="N",
        help=f"Matryoshka size, 32..hidden size [${ENV['dimensions']}; default: the index's, or the full size]",
    )
    models.add_argument(
        "--instruction",
        metavar="TEXT",
        help=f"task instruction for queries, '' for none [${ENV['instruction']}; default: the index's, "
        "or the web-search task]",
    )
    models.add_argument(
        "--embedding-url",
        metavar="URL",
        help=f"a vLLM server serving the embedding model, instead of local weights [${ENV['embedding_url']}]",
    )
    models.add_argument(
        "--api-key", metavar="KEY", help=f"the vLLM servers' --api-key, if they have one [${ENV['api_key']}]"
    )
    run = parser.add_argument_group("hardware")
    run.add_argument("--device", help=f"cpu, cuda, cuda:1, mps [${ENV['device']}; default: cuda > mps > cpu]")
    run.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help=f"[${ENV['dtype']}; default: bfloat16 on CUDA, float32 elsewhere]",
    )
    run.add_argument("--batch-size", type=_positive, default=32, metavar="N", help="texts per forward pass (32)")
    run.add_argument("--max-length", type=_positive, default=8192, metavar="N", help="tokens per text (8192)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars or status lines")


def _add_retrieval(parser: argparse.ArgumentParser, *, top_n: int) -> None:
    group = parser.add_argument_group("retrieval")
    group.add_argument("--top-k", type=_positive, default=20, metavar="K", help="candidates retrieved (20)")
    group.add_argument(
        "--top-n", type=_positive, default=top_n, metavar="N", help=f"results kept after reranking ({top_n})"
    )
    group.add_argument("--no-rerank", dest="rerank", action="store_false", help="keep the top-n by vector similarity")
    group.add_argument(
        "--reranker-model",
        metavar="ID|DIR",
        help=f"Qwen3-Reranker Hub id or local folder [${ENV['reranker_model']}, default Qwen/Qwen3-Reranker-0.6B]",
    )
    group.add_argument(
        "--reranker-url",
        metavar="URL",
        help=f"a vLLM server serving the reranker, instead of local weights [${ENV['reranker_url']}]",
    )
    group.add_argument("--json", action="store_true", help="print JSON instead of text")


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def _non_negative(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_fill(
            "A local RAG with Qwen3-Embedding, Qwen3-Reranker and a Qwen chat model over an embedded Chroma database."
        ),
        epilog=textwrap.dedent(
            f"""\
            examples:
              {PROG} index cookbook/data
              {PROG} search "How does Matryoshka truncation work?"
              {PROG} ask "How does Matryoshka truncation work?"

            environment (a flag beats its variable; HF_HUB_OFFLINE=1 keeps transformers off the network):
              {", ".join(list(ENV.values())[:5])},
              {", ".join(list(ENV.values())[5:])}"""
        ),
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    index = commands.add_parser(
        "index",
        help="add files and folders to the index",
        description=_fill(
            "Chunk, embed and store files. Unchanged files are skipped, changed files replace their own chunks, and "
            "an interrupted run resumes where it stopped. Folders are searched for "
            + ", ".join(sorted(SUPPORTED_SUFFIXES))
            + " files; a file named explicitly is read as text whatever its suffix."
        ),
        formatter_class=_formatter,
    )
    index.add_argument("paths", nargs="+", metavar="PATH", help="files and folders to index")
    scale = index.add_argument_group("Ray (pip install 'qwen3-rag[ray]'; see docs/ray.md)")
    scale.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="embed on a Ray actor pool: a local Ray, or the cluster at ADDRESS (e.g. ray://head:10001)",
    )
    scale.add_argument("--ray-actors", type=_positive, default=1, metavar="N", help="actors, one model each (1)")
    scale.add_argument("--ray-gpus", type=float, default=0, metavar="G", help="GPUs per actor (0: CPU)")
    chunking = index.add_argument_group("chunking")
    chunking.add_argument(
        "--chunk-size",
        type=_positive,
        default=DEFAULT_CHUNK_SIZE,
        metavar="WORDS",
        help=f"words per chunk ({DEFAULT_CHUNK_SIZE})",
    )
    chunking.add_argument(
        "--chunk-overlap",
        type=_non_negative,
        default=DEFAULT_CHUNK_OVERLAP,
        metavar="WORDS",
        help=f"words repeated from the previous chunk ({DEFAULT_CHUNK_OVERLAP})",
    )
    _add_common(index)

    search = commands.add_parser(
        "search",
        help="find the chunks that answer a question",
        description=_fill(
            "Retrieve --top-k chunks by vector similarity, rerank them with Qwen3-Reranker and print the best "
            "--top-n with their source, chunk number and score."
        ),
        formatter_class=_formatter,
    )
    search.add_argument("query", help="the question")
    _add_retrieval(search, top_n=5)
    _add_common(search)

    ask = commands.add_parser(
        "ask",
        help="answer a question from the index with a local chat model",
        description=_fill("Search, then let a local chat model answer from the retrieved chunks, citing them as [n]."),
        formatter_class=_formatter,
    )
    ask.add_argument("query", metavar="question", help="the question")
    _add_retrieval(ask, top_n=4)
    generation = ask.add_argument_group("answer")
    generation.add_argument(
        "--llm", metavar="ID|DIR", help=f"chat model Hub id or local folder [${ENV['llm']}, default Qwen/Qwen3-0.6B]"
    )
    generation.add_argument(
        "--max-new-tokens",
        type=_positive,
        metavar="N",
        help=f"longest answer in tokens [${ENV['max_new_tokens']}, default 512]",
    )
    _add_common(ask)
    return parser


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Resolved:
    """Option values after flags and environment variables, with where each came from."""

    args: argparse.Namespace
    environ: dict[str, str]

    def setting(self, key: str) -> Any:
        from qwen3_rag._index import Setting

        flag = getattr(self.args, key, None)
        if flag is not None:
            return Setting(flag, "--" + key.replace("_", "-"))
        value = self.environ.get(ENV[key])
        if value is not None and (value.strip() or key == "instruction"):
            return Setting(value if key == "instruction" else value.strip(), ENV[key])
        return Setting()

    def value(self, key: str, default: Any = None) -> Any:
        setting = self.setting(key)
        return setting.value if setting.given else default

    def dimensions(self) -> Any:
        from qwen3_rag._index import Setting

        setting = self.setting("dimensions")
        if not setting.given:
            return setting
        try:
            return Setting(int(setting.value), setting.origin)
        except ValueError:
            raise UsageError(f"{setting.origin} must be an integer, got {setting.value!r}") from None

    def positive(self, key: str, default: int) -> int:
        setting = self.setting(key)
        if not setting.given:
            return default
        try:
            return _positive(str(setting.value))
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"{setting.origin}: {exc}") from None

    def dtype(self) -> str | None:
        dtype = self.value("dtype")
        if dtype is not None and dtype not in {"float32", "bfloat16", "float16"}:
            raise UsageError(f"{self.setting('dtype').origin} must be float32, bfloat16 or float16, got {dtype!r}")
        return dtype

    def embedding_request(self) -> Any:
        from qwen3_rag._index import EmbeddingRequest

        return EmbeddingRequest(
            model=self.setting("embedding_model"),
            dimensions=self.dimensions(),
            instruction=self.setting("instruction"),
            device=self.value("device"),
            dtype=self.dtype(),
            batch_size=self.args.batch_size,
            max_length=self.args.max_length,
            base_url=self.value("embedding_url"),
            api_key=self.value("api_key"),
        )


# ---------------------------------------------------------------------------------------------------- output


class Console:
    """Status lines on stderr (silenced by --quiet); results on stdout."""

    def __init__(self, quiet: bool, out: TextIO, err: TextIO) -> None:
        self.quiet, self.out, self.err = quiet, out, err

    def status(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.err, flush=True)

    def warn(self, message: str) -> None:
        print(f"{PROG}: warning: {message}", file=self.err, flush=True)


def display_path(source: str | Path) -> str:
    """A source as the user would type it: relative to the working folder when inside it."""
    path = Path(source)
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _where(db: str, collection: str) -> str:
    return f"the index at {db} (collection {collection!r})"


# --------------------------------------------------------------------------------------------------- commands


def run_index(opts: Resolved, console: Console) -> int:
    from tqdm.auto import tqdm

    from qwen3_rag import _index

    args = opts.args
    files = find_files(args.paths)
    if args.chunk_overlap >= args.chunk_size:
        raise UsageError(
            f"--chunk-overlap ({args.chunk_overlap}) must be smaller than --chunk-size ({args.chunk_size})"
        )
    db = opts.value("db", _index.DEFAULT_DB)
    name = opts.value("collection", _index.DEFAULT_COLLECTION)
    where = _where(db, name)
    client = _index.open_client(db, create=True)
    collection = _index.existing_collection(client, name, db)
    recorded = _index.recorded_fingerprint(collection, where) if collection is not None else None
    embedder, fingerprint = _index.load_embedder(opts.embedding_request(), recorded, where)
    if collection is None:
        collection = _index.create_collection(client, name, fingerprint, embedder)

    report = _index.IndexReport()
    planned = _index.plan(collection, files, chunk_size=args.chunk_size, overlap=args.chunk_overlap, report=report)
    total = sum(len(p.missing) for p in planned)
    console.status(
        f"{len(files)} files: {len(planned)} to index ({total} chunks), {len(report.unchanged)} unchanged, "
        f"{len(report.skipped)} skipped; {fingerprint.model}, {fingerprint.dimensions} dimensions"
    )
    if args.ray is None:
        embed, group = partial(embedder.embed_documents, dimensions=fingerprint.dimensions), {}
    else:  # one job for every missing chunk: a Ray session per group of files would cost its start-up each time
        embed = _index.ray_embed(
            fingerprint, address=args.ray or None, num_actors=args.ray_actors, num_gpus_per_actor=args.ray_gpus,
            batch_size=args.batch_size, max_length=args.max_length, dtype=opts.dtype(),
        )  # fmt: skip
        group = {"group_chunks": max(total, 1)}
    try:
        with tqdm(
            total=total, desc="Embedding", unit="chunk", disable=args.quiet or not total, file=console.err
        ) as bar:
            _index.write(
                collection,
                embed,
                planned,
                report=report,
                progress=bar.update,
                max_batch=client.get_max_batch_size(),
                **group,
            )
    except KeyboardInterrupt:
        console.warn(
            f"interrupted: {len(report.indexed)} of {len(planned)} files were written and are kept; "
            "run the same command again to index the rest"
        )
        return 130
    for path, reason in report.skipped:
        console.warn(f"skipped {display_path(path)}: {reason}")
    replaced = f", {report.replaced} of them replacing an older version" if report.replaced else ""
    console.status(
        f"Indexed {len(report.indexed)} files ({report.chunks_written} new chunks{replaced}); "
        f"{len(report.unchanged)} unchanged; {len(report.skipped)} skipped. "
        f"{where[0].upper()}{where[1:]} holds {collection.count()} chunks."
    )
    if not report.indexed and not report.unchanged:
        raise UsageError("nothing was indexed: every file was skipped")
    return 0


def _retrieve(opts: Resolved, console: Console) -> tuple[list[Any], Any]:
    from qwen3_rag import _index

    args = opts.args
    if not args.query.strip():
        raise UsageError("the question is empty")
    if args.rerank and args.top_n > args.top_k:
        raise UsageError(f"--top-n ({args.top_n}) cannot exceed --top-k ({args.top_k}): rerank more candidates")
    db = opts.value("db", _index.DEFAULT_DB)
    name = opts.value("collection", _index.DEFAULT_COLLECTION)
    where = _where(db, name)
    client = _index.open_client(db, create=False)
    collection = _index.require_collection(client, name, db)
    recorded = _index.recorded_fingerprint(collection, where)
    embedder, fingerprint = _index.load_embedder(opts.embedding_request(), recorded, where)
    hits = _index.search(collection, embedder, fingerprint, args.query, top_k=args.top_k if args.rerank else args.top_n)
    del embedder
    if not args.rerank:
        return hits[: args.top_n], fingerprint
    from qwen3_rag.prompts import DEFAULT_RERANKER_MODEL
    from qwen3_rag.reranker import Qwen3Reranker

    try:
        reranker = Qwen3Reranker(
            opts.value("reranker_model", DEFAULT_RERANKER_MODEL),
            device=opts.value("device"),
            dtype=opts.dtype(),
            instruction=fingerprint.instruction or None,
            batch_size=max(1, args.batch_size // 2),
            max_length=args.max_length,
            show_progress=False,
            base_url=opts.value("reranker_url"),
            api_key=opts.value("api_key"),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return _index.rerank(reranker, args.query, hits, top_n=args.top_n), fingerprint


def _hit_json(rank: int, hit: Any) -> dict[str, Any]:
    return {
        "rank": rank,
        "source": display_path(hit.source),
        "title": hit.title,
        "chunk": hit.chunk,
        "score": round(hit.score, 6),
        "similarity": round(hit.similarity, 6),
        "rerank_score": None if hit.rerank_score is None else round(hit.rerank_score, 6),
        "text": hit.text,
        "id": hit.id,
    }


def _score_line(hit: Any) -> str:
    if hit.rerank_score is None:
        return f"similarity {hit.similarity:.3f}"
    return f"score {hit.rerank_score:.3f}, similarity {hit.similarity:.3f}"


def run_search(opts: Resolved, console: Console) -> int:
    hits, _ = _retrieve(opts, console)
    if opts.args.json:
        payload = {
            "query": opts.args.query,
            "reranked": opts.args.rerank,
            "results": [_hit_json(r, h) for r, h in enumerate(hits, 1)],
        }
        print(json.dumps(payload, ensure_ascii=False, indent=2), file=console.out)
        return 0
    for rank, hit in enumerate(hits, 1):
        print(f"[{rank}] {display_path(hit.source)}  chunk {hit.chunk}  {_score_line(hit)}", file=console.out)
        print(textwrap.indent(hit.text.strip(), "    "), file=console.out)
        print(file=console.out)
    return 0


def run_ask(opts: Resolved, console: Console) -> int:
    from qwen3_rag._answer import DEFAULT_LLM, ChatModel, build_messages, cited_numbers

    max_new_tokens = opts.positive("max_new_tokens", 512)
    hits, _ = _retrieve(opts, console)
    labels = [f"{display_path(h.source)}, chunk {h.chunk}" for h in hits]
    messages = build_messages(opts.args.query, list(zip(labels, [h.text for h in hits], strict=False)))
    console.status(f"Answering from {len(hits)} passages with {opts.value('llm', DEFAULT_LLM)} ...")
    try:
        chat = ChatModel(opts.value("llm", DEFAULT_LLM), device=opts.value("device"), dtype=opts.dtype())
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    streaming = not opts.args.json and console.out.isatty()
    answer = chat.generate(messages, max_new_tokens=max_new_tokens, stream=console.out if streaming else None)
    cited = cited_numbers(answer, len(hits))
    if opts.args.json:
        payload = {
            "question": opts.args.query,
            "answer": answer,
            "cited": cited,
            "sources": [_hit_json(r, h) for r, h in enumerate(hits, 1)],
            "llm": chat.model_name,
        }
        print(json.dumps(payload, ensure_ascii=False, indent=2), file=console.out)
        return 0
    if not streaming:
        print(answer or "(the model returned no text)", file=console.out)
    print(file=console.out)
    print("Sources:", file=console.out)
    for rank, (hit, label) in enumerate(zip(hits, labels, strict=False), 1):
        mark = "*" if rank in cited else " "
        print(f" {mark}[{rank}] {label}  ({_score_line(hit)})", file=console.out)
    if cited:
        print("(* cited in the answer)", file=console.out)
    return 0


COMMANDS = {"index": run_index, "search": run_search, "ask": run_ask}


# ------------------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None, *, environ: dict[str, str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 a model failed to load, 2 a usage error, 130 interrupted).

    The console script calls this with no arguments and exits with its result.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a parse error (already printed, status 2)
        return int(exc.code or 0)
    console = Console(args.quiet, sys.stdout, sys.stderr)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    _quiet_transformers()
    opts = Resolved(args, dict(os.environ if environ is None else environ))
    try:
        return COMMANDS[args.command](opts, console)
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModelLoadError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _quiet_transformers() -> None:
    """transformers' own weight-loading bars and advice are noise in a CLI; Hub download bars stay."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
