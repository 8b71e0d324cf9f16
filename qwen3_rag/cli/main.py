"""``qwen3-rag``: a local RAG over an embedded Chroma database, from the command line.

    qwen3-rag index PATH...        read documents (text, Markdown, HTML, PDF, Word, code), chunk, embed, store in --db
    qwen3-rag search "question"    retrieve --top-k chunks, rerank to --top-n, print source, chunk and score
    qwen3-rag ask "question"       search, then answer with a local chat model, citing the sources
    qwen3-rag eval QUESTIONS       score retrieval on your own questions: sizes, instructions, reranking

Every model, the database, the Matryoshka size, device and dtype can also be set through environment variables
(``QWEN3_RAG_EMBEDDING_MODEL``, ``QWEN3_RAG_RERANKER_MODEL``, ``QWEN3_RAG_LLM``, ``QWEN3_RAG_DB``, ...), so an
offline machine can point them at local folders once. A flag beats its variable.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence

from qwen3_rag._loading import ModelLoadError
from qwen3_rag.cli.console import PROG, Console, safe_streams
from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.options import Resolved, build_parser


def _command(name: str) -> Callable[[Resolved, Console], int]:
    """The function behind a command, imported only when it runs (``--help`` stays light)."""
    if name == "index":
        from qwen3_rag.cli.indexing import run_index

        return run_index
    if name == "search":
        from qwen3_rag.cli.search import run_search

        return run_search
    if name == "eval":
        from qwen3_rag.cli.evaluate import run_eval

        return run_eval
    from qwen3_rag.cli.answer import run_ask

    return run_ask


def main(argv: Sequence[str] | None = None, *, environ: dict[str, str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 a model failed to load, 2 a usage error, 130 interrupted).

    The console script calls this with no arguments and exits with its result.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a parse error (already printed, status 2)
        return int(exc.code or 0)
    safe_streams()
    console = Console(args.quiet, sys.stdout, sys.stderr)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    _quiet_transformers()
    opts = Resolved(args, dict(os.environ if environ is None else environ))
    try:
        return _command(args.command)(opts, console)
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
