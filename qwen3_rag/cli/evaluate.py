"""``qwen3-rag eval``: retrieval quality on the user's own questions -- per Matryoshka size, per query instruction,
with and without reranking -- as a table, JSON and a plot.

Each question is answered with ``search``'s own functions (:func:`~qwen3_rag.cli.search.search` and
:func:`~qwen3_rag.cli.search.rerank`): at the index's size exactly as ``qwen3-rag search`` answers it. Smaller sizes
are evaluated from the stored vectors, truncated and re-normalised, by exact search in numpy
(:mod:`qwen3_rag.cli.vectors`); other query instructions embed the questions differently against the same index
(documents are embedded without one). Neither needs re-indexing. The metrics are in :mod:`qwen3_rag.cli.metrics`,
the questions file in :mod:`qwen3_rag.cli.questions`.

From Python, :func:`evaluate` takes the command's options and returns the :class:`Report`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen3_rag._validation import check_dimensions
from qwen3_rag.cli import metrics
from qwen3_rag.cli.console import Console, display_path
from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.fingerprint import Fingerprint
from qwen3_rag.cli.options import ENV, Resolved, build_parser
from qwen3_rag.cli.questions import Matched, load_questions, match_questions
from qwen3_rag.cli.search import Hit, index_embedder, load_reranker, reading_index, rerank, search
from qwen3_rag.cli.store import DEFAULT_COLLECTION, DEFAULT_DB, index_label
from qwen3_rag.cli.vectors import StoredChunks

PLOT_FORMATS = ("png", "svg", "pdf")


@dataclass(frozen=True)
class Configuration:
    """One point of the sweep."""

    dimensions: int
    instruction: str
    rerank: bool
    exact: bool
    """Exact search over the stored vectors (a smaller size), or the index's own search (its own size)."""


@dataclass
class Result:
    configuration: Configuration
    metrics: dict[str, float]
    latency_ms: dict[str, float]
    tasks: dict[str, dict[str, Any]]
    """Per task label: ``{"questions": n, "metrics": {...}}``."""
    per_question: dict[str, dict[str, float]] = field(repr=False)
    """Per question (its position in :attr:`Report.questions`, as a string): its metrics."""
    rankings: dict[str, list[str]] = field(repr=False)
    """Per question, as in :attr:`per_question`: the sources of the chunks it ranked, best first."""


@dataclass
class Report:
    questions_file: str
    index: str
    fingerprint: Fingerprint
    chunks: int
    questions: list[Matched]
    """The questions scored (at least one relevant file is in the index)."""
    unmatched: list[Matched]
    """Questions with relevant entries that match no indexed file (scored on the rest, if any)."""
    ks: tuple[int, ...]
    top_k: int
    results: list[Result]

    @property
    def metric_names(self) -> list[str]:
        return metrics.metric_names(self.ks)

    def result(self, *, dimensions: int | None = None, instruction: str | None = None, rerank: bool = False) -> Result:
        """The result of one configuration (``None``: the index's size or instruction)."""
        dimensions = self.fingerprint.dimensions if dimensions is None else dimensions
        instruction = self.fingerprint.instruction if instruction is None else instruction
        for result in self.results:
            c = result.configuration
            if (c.dimensions, c.instruction, c.rerank) == (dimensions, instruction, rerank):
                return result
        raise KeyError(f"no configuration with {dimensions} dimensions, instruction {instruction!r}, rerank={rerank}")

    # ------------------------------------------------------------------------------------------- output

    def to_json(self) -> dict[str, Any]:
        return {
            "questions": len(self.questions),
            "questions_file": self.questions_file,
            "index": {
                "label": self.index,
                "model": self.fingerprint.model,
                "dimensions": self.fingerprint.dimensions,
                "instruction": self.fingerprint.instruction,
                "chunks": self.chunks,
            },
            "k": list(self.ks),
            "top_k": self.top_k,
            "unmatched": [
                {
                    "question": m.question.text,
                    "relevant": list(m.missing),
                    "scored": bool(m.relevant),
                }
                for m in self.unmatched
            ],
            "configurations": [
                {
                    "dimensions": r.configuration.dimensions,
                    "instruction": r.configuration.instruction,
                    "rerank": r.configuration.rerank,
                    "search": "exact" if r.configuration.exact else "index",
                    "metrics": _rounded(r.metrics),
                    "latency_ms": _rounded(r.latency_ms, 3),
                    "tasks": {
                        task: {"questions": t["questions"], "metrics": _rounded(t["metrics"])}
                        for task, t in r.tasks.items()
                    },
                }
                for r in self.results
            ],
        }

    def instruction_labels(self) -> dict[str, str]:
        """A short label per evaluated instruction: A, B, C, ..."""
        instructions = list(dict.fromkeys(r.configuration.instruction for r in self.results))
        return {text: _letter(i) for i, text in enumerate(instructions)}

    def table(self) -> str:
        """The results as a text table, with the instructions and the search used below it."""
        names = self.metric_names
        labels = self.instruction_labels()
        header = ["dimensions", "instruction", "rerank", *names, "median ms", "p95 ms"]
        rows = []
        for r in self.results:
            c = r.configuration
            rows.append(
                [
                    f"{c.dimensions}{'*' if c.exact else ''}",
                    labels[c.instruction],
                    "yes" if c.rerank else "no",
                    *(f"{r.metrics[n]:.3f}" for n in names),
                    f"{r.latency_ms['median']:.1f}",
                    f"{r.latency_ms['p95']:.1f}",
                ]
            )
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

        def line(values: list[str]) -> str:
            return "  ".join(
                v.ljust(w) if i == 1 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))
            )

        own = " (the index's)"
        notes = [
            f"{label}: {text or '(no instruction)'}{own if text == self.fingerprint.instruction else ''}"
            for text, label in labels.items()
        ]
        if any(r.configuration.exact for r in self.results):
            notes.append(
                "*: exact search over the stored vectors, truncated to that size and re-normalised; the index's own "
                "size is searched as `qwen3-rag search` searches it."
            )
        reranked = any(r.configuration.rerank for r in self.results)
        notes.append(
            f"recall@k: the share of a question's relevant files among the top k results; mrr@{metrics.CUTOFF}, "
            f"ndcg@{metrics.CUTOFF}: rank-weighted; a file counts at its best-ranked chunk. Latency per query: "
            f"embedding and search{f', then reranking {self.top_k} candidates' if reranked else ''}."
        )
        head = (
            f"{_count(len(self.questions), 'question')} ({self.questions_file}) against {self.index}: "
            f"{_count(self.chunks, 'chunk')}, "
            f"model {self.fingerprint.model}, {self.fingerprint.dimensions} dimensions stored"
        )
        return "\n".join(
            [
                textwrap.fill(head, 100),
                "",
                line(header),
                *(line(row) for row in rows),
                "",
                *(textwrap.fill(note, 100, subsequent_indent="   ") for note in notes),
            ]
        )

    def plot(self, path: str | os.PathLike) -> Path:
        """Draw quality against dimensions -- one line per metric, solid without and dashed with reranking, one panel
        per instruction -- into ``path`` (.png, .svg or .pdf). Uses matplotlib's object API: no pyplot, no display,
        and the interactive backend, if any, is left alone."""
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D

        path = plot_path(path)
        labels = self.instruction_labels()
        names = self.metric_names
        figure = Figure(figsize=(5.2 * len(labels) + 2.4, 4.2), layout="constrained")
        axes = figure.subplots(1, len(labels), squeeze=False, sharey=True)[0]
        for ax, (instruction, label) in zip(axes, labels.items(), strict=True):
            sizes: set[int] = set()
            for rerank_, style in ((False, "-"), (True, "--")):
                points = sorted(
                    (
                        r
                        for r in self.results
                        if r.configuration.instruction == instruction and r.configuration.rerank == rerank_
                    ),
                    key=lambda r: r.configuration.dimensions,
                )
                dims = [r.configuration.dimensions for r in points]
                sizes.update(dims)
                for i, name in enumerate(names):
                    if dims:
                        ax.plot(dims, [r.metrics[name] for r in points], style, marker="o", color=f"C{i}")
            ticks = sorted(sizes)
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(d) for d in ticks])
            ax.minorticks_off()
            ax.set_ylim(0, 1.05)
            ax.set_xlabel("dimensions")
            ax.grid(alpha=0.3)
            title = f"{label}: {instruction or '(no instruction)'}"
            ax.set_title(textwrap.shorten(title, 60, placeholder=" ..."), fontsize="medium")
        axes[0].set_ylabel(f"mean over {len(self.questions)} questions")
        handles = [Line2D([], [], color=f"C{i}", marker="o", label=name) for i, name in enumerate(names)]
        if any(r.configuration.rerank for r in self.results):
            handles += [
                Line2D([], [], color="0.3", linestyle="-", label="retrieval"),
                Line2D([], [], color="0.3", linestyle="--", label="+ rerank"),
            ]
        figure.legend(handles=handles, loc="outside right upper", fontsize="small")
        figure.suptitle(f"{self.fingerprint.model}: retrieval quality by Matryoshka size", fontsize="medium")
        try:
            figure.savefig(path, format=path.suffix.lower().lstrip("."), dpi=120)
        except OSError as exc:
            raise UsageError(f"cannot write the plot to {path}: {exc.strerror or exc}") from None
        return path


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _letter(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"I{i + 1}"


def _rounded(values: Mapping[str, float], digits: int = 6) -> dict[str, float]:
    return {k: round(v, digits) for k, v in values.items()}


# ---------------------------------------------------------------------------------------------- the command


def run_eval(opts: Resolved, console: Console) -> int:
    report = measure(opts, console)
    if opts.args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2), file=console.out)
    else:
        print(report.table(), file=console.out)
    if opts.args.plot:
        console.status(f"Wrote the plot to {report.plot(opts.args.plot)}")
    return 0


def evaluate(questions: str | os.PathLike, *options: str, environ: Mapping[str, str] | None = None) -> Report:
    """``qwen3-rag eval QUESTIONS OPTIONS...`` from Python: the same options and environment variables, the
    :class:`Report` instead of printed output (``report.table()``, ``report.to_json()``, ``report.plot(path)``).

    Raises UsageError where the command exits with status 2, ModelLoadError where it exits with 1.

    Example:
        >>> report = evaluate("questions.json", "--db", "my-db", "--dimensions", "128,256,1024", "--no-rerank")
        >>> report.result(dimensions=256).metrics["recall@5"]
    """
    try:
        args = build_parser().parse_args(["eval", os.fspath(questions), *map(str, options)])
    except SystemExit as exc:  # argparse printed why
        raise UsageError(f"invalid options for eval: {' '.join(map(str, options))}") from exc
    return measure(
        Resolved(args, dict(os.environ if environ is None else environ)), Console(args.quiet, sys.stdout, sys.stderr)
    )


def measure(opts: Resolved, console: Console) -> Report:
    """Run the sweep the options describe and return its report (nothing printed but status lines and warnings)."""
    from tqdm.auto import tqdm

    args = opts.args
    opts.check_hardware()  # also when called as evaluate() from Python, not through main()
    metrics.require()
    questions = load_questions(args.questions)
    if args.plot:
        plot_path(args.plot)
    ks = args.k
    depth = max(*ks, metrics.CUTOFF)
    if args.rerank and args.top_k < depth:
        raise UsageError(
            f"--top-k ({args.top_k}) must be at least {depth} to rank {depth} reranked results "
            f"(the largest --k, and {metrics.CUTOFF} for MRR and nDCG): raise --top-k, or pass --no-rerank"
        )
    asked_sizes = _sizes(opts)
    asked_instructions = _instructions(opts)

    embedder, fingerprint = index_embedder(opts, console, _index_request(opts))
    with reading_index(opts, console) as collection:  # one consistent view: index runs wait until the end
        where = index_label(opts.value("db", DEFAULT_DB), opts.value("collection", DEFAULT_COLLECTION))
        sizes = _check_sizes(asked_sizes, embedder, fingerprint)
        instructions = asked_instructions if asked_instructions is not None else [fingerprint.instruction]
        smaller = [d for d in sizes if d != fingerprint.dimensions]
        stored = StoredChunks.read(collection, vectors=bool(smaller), documents=bool(smaller) and args.rerank)
        if not stored.ids:
            raise UsageError(f"{where} is empty: run `qwen3-rag index PATH` first")
        if smaller and stored.dimensions != fingerprint.dimensions:
            raise UsageError(
                f"{where} records {fingerprint.dimensions} dimensions but stores {stored.dimensions}-dimension vectors"
            )

        matched = match_questions(questions, stored.sources)
        scored = [m for m in matched if m.relevant]
        unmatched = [m for m in matched if m.missing]
        _warn_unmatched(console, matched)
        if not scored:
            raise UsageError(
                f"none of the {len(questions)} questions' relevant files is in {where}: nothing to measure "
                "(relevant entries match an indexed path that equals them or ends with /ENTRY)"
            )

        configurations = [
            Configuration(d, instruction, rerank_, d != fingerprint.dimensions)
            for instruction in instructions
            for d in sizes
            for rerank_ in ((False, True) if args.rerank else (False,))
        ]
        rankings: dict[Configuration, dict[str, list[str]]] = {c: {} for c in configurations}
        times: dict[Configuration, list[float]] = {c: [] for c in configurations}
        console.status(
            f"Evaluating {_count(len(scored), 'question')}: {_count(len(sizes), 'size')} x "
            f"{_count(len(instructions), 'instruction')}"
            f"{', with and without reranking' if args.rerank else ''}"
        )
        with tqdm(
            total=len(scored) * len(instructions), desc="Questions", unit="q", disable=args.quiet, file=console.err
        ) as bar:
            for instruction in instructions:
                sweep = _Sweep(
                    collection,
                    _with_instruction(embedder, instruction),
                    fingerprint,
                    load_reranker(opts, instruction) if args.rerank else None,
                    stored,
                    [c for c in configurations if c.instruction == instruction],
                    depth=depth,
                    top_k=args.top_k,
                )
                sweep.ask(scored[0].question.text)  # warm-up, not counted: the index and the prefix caches load
                for i, m in enumerate(scored):
                    for configuration, (hits, seconds) in sweep.ask(m.question.text).items():
                        rankings[configuration][str(i)] = [h.source for h in hits]
                        times[configuration].append(seconds)
                    bar.update()

    results = _results(configurations, rankings, times, scored, ks)
    return Report(
        questions_file=display_path(args.questions),
        index=where,
        fingerprint=fingerprint,
        chunks=len(stored.ids),
        questions=scored,
        unmatched=unmatched,
        ks=ks,
        top_k=args.top_k,
        results=results,
    )


def _results(
    configurations: Sequence[Configuration],
    rankings: Mapping[Configuration, dict[str, list[str]]],
    times: Mapping[Configuration, list[float]],
    scored: Sequence[Matched],
    ks: Sequence[int],
) -> list[Result]:
    """The metrics of every configuration: over all questions, per task, per question; and its latency."""
    relevant = {str(i): m.relevant for i, m in enumerate(scored)}
    tasks: dict[str, list[str]] = {}
    for i, m in enumerate(scored):
        if m.question.task:
            tasks.setdefault(m.question.task, []).append(str(i))
    names = metrics.metric_names(ks)
    results = []
    for configuration in configurations:
        per_question = metrics.score(rankings[configuration], relevant, ks)
        by_task = {
            t: {"questions": len(ids), "metrics": metrics.mean(per_question, ids, names)} for t, ids in tasks.items()
        }
        results.append(
            Result(
                configuration,
                metrics.mean(per_question, list(relevant), names),
                metrics.latency(times[configuration]),
                by_task,
                per_question,
                rankings[configuration],
            )
        )
    return results


@dataclass
class _Sweep:
    """Every configuration of one instruction, for one question at a time."""

    collection: Any
    embedder: Any
    fingerprint: Fingerprint
    reranker: Any
    stored: StoredChunks
    configurations: list[Configuration]
    depth: int
    top_k: int

    def ask(self, question: str) -> dict[Configuration, tuple[list[Hit], float]]:
        """The ranked hits and the seconds they took, per configuration."""
        out: dict[Configuration, tuple[list[Hit], float]] = {}
        own = [c for c in self.configurations if not c.exact]
        for c in own:  # the index's size: exactly `qwen3-rag search`
            start = time.perf_counter()
            if c.rerank:
                candidates = search(self.collection, self.embedder, self.fingerprint, question, top_k=self.top_k)
                hits = rerank(self.reranker, question, candidates, top_n=self.depth)
            else:
                hits = search(self.collection, self.embedder, self.fingerprint, question, top_k=self.depth)
            out[c] = hits, time.perf_counter() - start
        smaller = [c for c in self.configurations if c.exact]
        if smaller:  # one stored-size query vector, truncated per size
            start = time.perf_counter()
            vector = self.embedder.embed_queries([question], dimensions=self.fingerprint.dimensions)[0]
            embedding = time.perf_counter() - start
            for c in smaller:
                start = time.perf_counter()
                if c.rerank:
                    candidates = self.stored.nearest(vector, c.dimensions, top_k=self.top_k)
                    hits = rerank(self.reranker, question, candidates, top_n=self.depth)
                else:
                    hits = self.stored.nearest(vector, c.dimensions, top_k=self.depth)
                out[c] = hits, embedding + time.perf_counter() - start
        return out


# ------------------------------------------------------------------------------------------------- options


def _index_request(opts: Resolved) -> Any:
    """The embedding options without the sizes and instructions to evaluate: the index's own settings are loaded."""
    args = argparse.Namespace(**{**vars(opts.args), "dimensions": None, "instruction": None})
    environ = {k: v for k, v in opts.environ.items() if k not in {ENV["dimensions"], ENV["instruction"]}}
    return Resolved(args, environ).embedding_request()


def _sizes(opts: Resolved) -> tuple[list[int], str] | None:
    setting = opts.setting("dimensions")
    if not setting.given:
        return None
    try:
        sizes = sorted({int(part) for part in str(setting.value).split(",")})
    except ValueError:
        raise UsageError(
            f"{setting.origin} must be integers separated by commas (e.g. 64,128,256), got {setting.value!r}"
        ) from None
    return sizes, setting.origin


def _check_sizes(asked: tuple[list[int], str] | None, embedder: Any, fingerprint: Fingerprint) -> list[int]:
    if asked is None:
        return [fingerprint.dimensions]
    sizes, origin = asked
    for d in sizes:
        try:  # the one Matryoshka range check: 32..hidden size
            check_dimensions(d, hidden_size=embedder.hidden_size, model=embedder.model_name)
        except ValueError as exc:
            raise UsageError(f"{origin}: {exc}") from None
        if d > fingerprint.dimensions:
            raise UsageError(
                f"{origin} asks for {d} dimensions, but the index stores {fingerprint.dimensions}-dimension vectors "
                f"(it was built with --dimensions {fingerprint.dimensions}): smaller sizes are cut from the stored "
                f"vectors, larger ones need an index built at full size ({embedder.hidden_size}) -- index again into "
                "a new --collection without --dimensions"
            )
    return sizes


def _instructions(opts: Resolved) -> list[str] | None:
    setting = opts.setting("instruction")
    if not setting.given:
        return None
    values = setting.value if isinstance(setting.value, list) else [setting.value]
    return list(dict.fromkeys(v or "" for v in values))


def _with_instruction(embedder: Any, instruction: str) -> Any:
    """The embedder with another query instruction: the same weights (a shallow copy), ``''`` for none."""
    if (instruction or None) == embedder.instruction:
        return embedder
    variant = copy.copy(embedder)
    variant.instruction = instruction or None
    return variant


def plot_path(value: str | os.PathLike) -> Path:
    """Where ``--plot`` writes, checked before anything is measured; matplotlib must be installed."""
    path = Path(value).expanduser()
    shown = os.fspath(value)
    if path.is_dir():
        raise UsageError(f"--plot {shown} is a folder: give a file name, such as {Path(shown) / 'quality.png'}")
    if path.suffix.lower().lstrip(".") not in PLOT_FORMATS:
        raise UsageError(f"--plot {shown}: the file name must end in .png, .svg or .pdf")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"--plot {shown}: no such folder {os.fspath(folder)}")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"--plot {shown}: cannot write there (permission denied)")
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UsageError('--plot draws with matplotlib: pip install "qwen3-rag[eval]"') from exc
    return path


def _warn_unmatched(console: Console, matched: Sequence[Matched], limit: int = 10) -> None:
    missing = [m for m in matched if m.missing]
    for m in missing[:limit]:
        what = "not counted" if m.relevant else "the question is not scored"
        files = ", ".join(repr(e) for e in m.missing)
        console.warn(f"{m.question.where}: no indexed file matches {files} ({what})")
    if len(missing) > limit:
        console.warn(f"... and {len(missing) - limit} more questions with relevant files not in the index (see --json)")
    for m in matched:
        for entry, count in m.ambiguous:
            console.warn(
                f"{m.question.where}: {entry!r} matches {count} indexed files; all count as relevant "
                "(give more of the path to name one)"
            )


__all__ = ["Configuration", "Report", "Result", "evaluate", "measure", "run_eval"]
