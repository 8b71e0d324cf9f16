"""The command line's options: the parser, the environment variable behind each option, and their resolution
(a flag beats its variable) into the settings the commands use."""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import dataclass
from typing import Any

from qwen3_rag import __version__
from qwen3_rag.cli.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE
from qwen3_rag.cli.console import PROG
from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.loaders import CODE_SUFFIXES, DOCUMENT_SUFFIXES

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

DTYPES = ("float32", "bfloat16", "float16", "int8")
"""``--dtype`` / ``QWEN3_RAG_DTYPE``: the core's names (``int8`` is its CPU int8 mode, ``qwen3_rag/_quantize.py``)."""


# ------------------------------------------------------------------------------------------------- parsing


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32, width=100)


def _fill(text: str) -> str:
    return textwrap.fill(text, width=100)


def _add_common(parser: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    """The index, embedding and hardware options; ``sweep`` (eval) takes several sizes and instructions."""
    from qwen3_rag.cli.store import DEFAULT_COLLECTION, DEFAULT_DB

    store = parser.add_argument_group("index")
    store.add_argument(
        "--db",
        metavar="PATH|URL",
        help="Chroma database: a folder, or a Chroma server's URL (http://HOST:PORT, https://HOST[:PORT]; tenant, "
        "database and key from CHROMA_TENANT, CHROMA_DATABASE, CHROMA_API_KEY) "
        f"[${ENV['db']}, default {DEFAULT_DB}]",
    )
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
    if sweep:
        models.add_argument(
            "--dimensions",
            metavar="N[,N...]",
            help="Matryoshka sizes to evaluate from the stored vectors, 32..the index's size, comma-separated "
            f"[${ENV['dimensions']}; default: the index's]",
        )
        models.add_argument(
            "--instruction",
            action="append",
            metavar="TEXT",
            help=f"a query instruction to evaluate, '' for none; repeat for several [${ENV['instruction']}; "
            "default: the index's]",
        )
    else:
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
    run.add_argument(
        "--device",
        help=f"cpu, cuda, cuda:1, mps; checked before any model loads [${ENV['device']}; default: cuda > mps > cpu]",
    )
    run.add_argument(
        "--dtype",
        choices=DTYPES,
        help=f"int8: linear layers in int8, CPU only (the chat model of ask keeps its float default) "
        f"[${ENV['dtype']}; default: bfloat16 on CUDA and on CPUs with native bf16, float32 elsewhere]",
    )
    run.add_argument("--batch-size", type=_positive, default=32, metavar="N", help="texts per forward pass (32)")
    run.add_argument("--max-length", type=_positive, default=8192, metavar="N", help="tokens per text (8192)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars or status lines")


def _add_retrieval(parser: argparse.ArgumentParser, *, top_n: int | None) -> None:
    """The retrieval and reranking options; ``top_n=None`` (eval, which ranks as deep as its cut-offs) has no
    --top-n."""
    group = parser.add_argument_group("retrieval")
    group.add_argument("--top-k", type=_positive, default=20, metavar="K", help="candidates retrieved (20)")
    if top_n is not None:
        group.add_argument(
            "--top-n", type=_positive, default=top_n, metavar="N", help=f"results kept after reranking ({top_n})"
        )
    group.add_argument(
        "--no-rerank",
        dest="rerank",
        action="store_false",
        help="keep the top-n by vector similarity" if top_n is not None else "evaluate retrieval alone",
    )
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


def _positive_list(value: str) -> tuple[int, ...]:
    """``1,3,5,10`` -> (1, 3, 5, 10): positive integers, sorted, without repeats."""
    try:
        numbers = {_positive(part.strip()) for part in value.split(",")}
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {value!r}") from None
    return tuple(sorted(numbers))


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
              {PROG} eval cookbook/data/questions.json --dimensions 128,256,1024 --plot quality.png

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
        description="\n\n".join(
            _fill(paragraph)
            for paragraph in (
                "Chunk, embed and store files. Unchanged files are skipped, changed files replace their own chunks, "
                "a renamed or copied file reuses the vectors of its text, and an interrupted run keeps every file "
                "it finished: run it again to resume.",
                "Folders are searched for documents -- "
                + " ".join(sorted(DOCUMENT_SUFFIXES))
                + " -- and source code ("
                + " ".join(sorted(CODE_SUFFIXES))
                + "); hidden entries are passed over; a file named explicitly is read as text whatever its suffix. "
                'PDF (text layer, page by page) and Word need pip install "qwen3-rag[documents]". Each chunk records '
                "its file, character offsets, and its pages (PDF) or lines (text, code).",
                "The index mirrors the folders given: files that are gone from them lose their chunks (--no-prune "
                "keeps them). What cannot be read -- an encrypted or corrupt PDF, a FIFO, a symbolic link loop -- is "
                "skipped and named, and so are PDF pages without a text layer; the rest is indexed. One index run "
                "per database at a time: a second waits for the first; search and ask keep working meanwhile.",
            )
        ),
        formatter_class=_formatter,
    )
    index.add_argument("paths", nargs="+", metavar="PATH", help="files and folders to index")
    index.add_argument(
        "--no-prune",
        action="store_true",
        help="keep the chunks of files that are no longer in the folders given",
    )
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
    chunking = index.add_argument_group("chunking (in tokens of the embedding model's tokenizer)")
    chunking.add_argument(
        "--chunk-size",
        type=_positive,
        default=DEFAULT_CHUNK_SIZE,
        metavar="TOKENS",
        help=f"most tokens per chunk, {MIN_CHUNK_SIZE} to --max-length - 1 ({DEFAULT_CHUNK_SIZE}); chunks end at "
        "paragraph, sentence or word boundaries in any script",
    )
    chunking.add_argument(
        "--chunk-overlap",
        type=_non_negative,
        default=DEFAULT_CHUNK_OVERLAP,
        metavar="TOKENS",
        help=f"most tokens repeated from the end of the previous chunk ({DEFAULT_CHUNK_OVERLAP})",
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

    evaluate = commands.add_parser(
        "eval",
        help="measure retrieval quality on your own questions",
        description=_fill(
            'Ask every question of a questions file (a JSON list, or JSONL, of {"question": ..., "relevant": '
            '[file names or paths], "task": ...}) and score the files retrieved, as `search` ranks them, '
            "with and without reranking: recall@k, MRR@10, nDCG@10 and the latency per query. Smaller Matryoshka "
            "sizes (--dimensions 64,128) are evaluated from the stored vectors and other query instructions "
            "(--instruction, repeatable) against the same index, without re-indexing."
        ),
        formatter_class=_formatter,
    )
    evaluate.add_argument("questions", metavar="QUESTIONS", help="the questions file (JSON or JSONL)")
    scoring = evaluate.add_argument_group("evaluation")
    scoring.add_argument(
        "--k", type=_positive_list, default=(1, 3, 5, 10), metavar="K[,K...]", help="recall@k cut-offs (1,3,5,10)"
    )
    scoring.add_argument(
        "--plot", metavar="FILE.png", help="draw quality against dimensions, with and without reranking (matplotlib)"
    )
    _add_retrieval(evaluate, top_n=None)
    _add_common(evaluate, sweep=True)
    return parser


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Setting:
    """A value the user asked for, and where it came from (a flag or an environment variable), or nothing."""

    value: Any = None
    origin: str = ""

    @property
    def given(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class EmbeddingRequest:
    model: Setting = Setting()
    dimensions: Setting = Setting()
    instruction: Setting = Setting()
    device: str | None = None
    dtype: str | None = None
    batch_size: int = 32
    max_length: int = 8192
    base_url: str | None = None
    api_key: str | None = None


@dataclass(frozen=True)
class Resolved:
    """Option values after flags and environment variables, with where each came from."""

    args: argparse.Namespace
    environ: dict[str, str]

    def setting(self, key: str) -> Any:
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
        """--dtype (or its variable): one of :data:`DTYPES`, or ``None`` for the device's default."""
        dtype = self.value("dtype")
        if dtype is not None and dtype not in DTYPES:
            raise UsageError(f"{self.setting('dtype').origin} must be {', '.join(DTYPES[:-1])} or int8, got {dtype!r}")
        return dtype

    def chat_dtype(self) -> str | None:
        """The chat model's dtype (``ask``): --dtype, except int8 (an embedding/reranker CPU mode), which leaves the
        chat model at its float default."""
        dtype = self.dtype()
        return None if dtype == "int8" else dtype

    def device(self) -> str | None:
        """--device (or its variable), checked against this machine together with --dtype, before any model loads:
        ``cuda`` without a CUDA GPU, ``mps`` off Apple silicon, ``int8`` on a GPU are each a UsageError naming what
        is available."""
        setting = self.setting("device")
        dtype = self.dtype()
        if not setting.given and dtype is None:
            return None
        from qwen3_rag._loading import check_available, resolve_device, resolve_precision

        try:
            device = resolve_device(setting.value, check=False)
        except ValueError as exc:
            raise UsageError(f"{setting.origin}: {exc}") from None
        try:
            if dtype is not None:  # int8 on a GPU (asked for, or the one picked by default) is refused here
                resolve_precision(dtype, device)
        except ValueError as exc:
            raise UsageError(f"{self.setting('dtype').origin} {dtype}: {exc}") from None
        try:
            if setting.given:
                check_available(device, setting.value)
        except ValueError as exc:
            raise UsageError(f"{setting.origin}: {exc}") from None
        return setting.value

    def check_hardware(self) -> None:
        """Refuse an unusable --device / --dtype before a command starts (nothing is read, written or loaded).

        ``index --ray`` is the exception: there --device names what the Ray actors run on, which need not be this
        machine's hardware; ``indexing.check_ray_options`` checks it against --ray-gpus first thing instead."""
        if getattr(self.args, "ray", None) is not None:
            return
        self.device()

    def embedding_request(self) -> Any:
        return EmbeddingRequest(
            model=self.setting("embedding_model"),
            dimensions=self.dimensions(),
            instruction=self.setting("instruction"),
            device=self.device(),
            dtype=self.dtype(),
            batch_size=self.args.batch_size,
            max_length=self.args.max_length,
            base_url=self.value("embedding_url"),
            api_key=self.value("api_key"),
        )
