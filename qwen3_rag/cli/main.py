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

from qwen3_rag._loading import ModelLoadError, is_out_of_memory
from qwen3_rag._validation import NonFiniteError, one_line
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
    """Run the CLI; returns the exit status: 0 ok, 2 a usage or data error, 1 a model that cannot load, a server
    that is down or answers an error, NaN from a model, out of memory; 130 interrupted, 141 stdout closed early
    (``| head``). Each failure is one line on stderr.

    The console script calls this with no arguments and exits with its result.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a parse error (already printed, status 2)
        return int(exc.code or 0)
    safe_streams()
    console = Console(args.quiet, sys.stdout, sys.stderr)
    _log_to_stderr()
    _quiet_transformers()
    opts = Resolved(args, dict(os.environ if environ is None else environ))
    try:
        try:
            opts.check_hardware()  # --device / --dtype this machine cannot run: refused before anything loads
            code = _command(args.command)(opts, console)
            sys.stdout.flush()  # a closed pipe is found here, not at interpreter exit
            return code
        except UsageError as exc:
            return _fail(args.command, exc, 2)
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except _runtime_errors() as exc:
            return _fail(args.command, exc, 1)
        except (RuntimeError, MemoryError) as exc:
            if not isinstance(exc, MemoryError) and not is_out_of_memory(exc):
                raise
            return _fail(args.command, _out_of_memory(exc), 1)
    except BrokenPipeError:  # from the command's output or the flush above
        return _closed_pipe()


def _fail(command: str, exc: BaseException, code: int) -> int:
    """``qwen3-rag COMMAND: error: MESSAGE`` on one line of stderr; ``code`` back to the caller."""
    print(f"{PROG} {command}: error: {one_line(exc) or type(exc).__name__}", file=sys.stderr)
    return code


def _runtime_errors() -> tuple[type[BaseException], ...]:
    """What a model, a server or the numbers can fail with, each reported as one line with exit status 1:
    a model that cannot load (ModelLoadError, also for corrupt weight files), NaN or infinity from a model
    (NonFiniteError), a vLLM server that is down or answers an error (RemoteError, looked up only if
    ``qwen3_rag.remote`` was imported: nothing else raises it)."""
    errors: list[type[BaseException]] = [ModelLoadError, NonFiniteError]
    remote = sys.modules.get("qwen3_rag.remote")
    if remote is not None:
        errors.append(remote.RemoteError)
    return tuple(errors)


def _out_of_memory(exc: BaseException) -> str:
    what = "the device ran out of memory" if isinstance(exc, RuntimeError) else "the machine ran out of memory"
    return (
        f"{what} ({type(exc).__name__}: {one_line(exc)[:200]}); lower --batch-size or --max-length, "
        "or pick a smaller model or --dtype"
    )


def _closed_pipe() -> int:
    """The reader of stdout went away (``qwen3-rag search ... | head``): stop quietly, as a program killed by
    SIGPIPE would, with its status 141 (128 + SIGPIPE). stdout is pointed at /dev/null so that the interpreter's
    own final flush does not report the broken pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a file descriptor (captured, replaced)
        pass
    return 128 + 13


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes (replaced by a test's capture, or not)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self, logging.WARNING)
        self.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr


def _log_to_stderr() -> None:
    """qwen3_rag's own warnings (truncation, ...) as ``qwen3-rag: WARNING: ...`` lines on stderr.

    The handler goes on the ``qwen3_rag`` logger only, never the root logger: third-party libraries
    (huggingface_hub, transformers, chromadb) print their warnings themselves, and a root handler printed each of
    them a second time."""
    logger = logging.getLogger("qwen3_rag")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())


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
