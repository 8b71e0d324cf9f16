"""The numbers ``qwen3-rag eval`` reports: recall@k, MRR@10 and nDCG@10 over files, computed by ir-measures (with
trec_eval underneath, through pytrec_eval), and latency percentiles.

Files, not chunks, are scored, and the ranking is the one ``search`` prints: a file stands at the rank of its
best-ranked chunk, and its other chunks keep their places in the list as results that are never relevant (a file
found twice is found once, and the duplicate still takes a slot). So recall@k is the share of a question's relevant
files among the files of ``search --top-n k``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from qwen3_rag.cli.errors import UsageError

CUTOFF = 10
"""The depth of MRR and nDCG."""


def require() -> Any:
    """The ir_measures module, or a UsageError saying which extra installs it."""
    try:
        import ir_measures
    except ImportError as exc:
        raise UsageError('qwen3-rag eval computes its metrics with ir-measures: pip install "qwen3-rag[eval]"') from exc
    return ir_measures


def metric_names(ks: Sequence[int]) -> list[str]:
    """The reported metrics, in order: ``recall@k`` for each k, then ``mrr@10`` and ``ndcg@10``."""
    return [f"recall@{k}" for k in ks] + [f"mrr@{CUTOFF}", f"ndcg@{CUTOFF}"]


def file_run(sources: Sequence[str], ids: Mapping[str, str]) -> dict[str, float]:
    """A ranked list of chunk sources as a run over files (``ids``: each file's document id): each file at the rank
    of its first chunk, each later chunk of a file as a document of its own that is never relevant; scores strictly
    decreasing with the rank."""
    run: dict[str, float] = {}
    for rank, source in enumerate(sources, 1):
        key = ids[source]
        run[key if key not in run else f"repeat{rank}"] = float(len(sources) - rank + 1)
    return run


def score(
    rankings: Mapping[str, Sequence[str]], relevant: Mapping[str, Collection[str]], ks: Sequence[int]
) -> dict[str, dict[str, float]]:
    """Per question id: each metric of :func:`metric_names` for its ranking (chunk sources, best first) against its
    relevant files. A question with no ranking scores 0 everywhere."""
    ir_measures = require()
    from ir_measures import RR, R, nDCG

    names = {R @ k: f"recall@{k}" for k in ks} | {RR @ CUTOFF: f"mrr@{CUTOFF}", nDCG @ CUTOFF: f"ndcg@{CUTOFF}"}
    # trec_eval sees plain ids ("file3", "repeat7"), never the paths: C strings end at a NUL, and no name can collide
    ids: dict[str, str] = {}
    for source in [s for files in relevant.values() for s in files] + [s for r in rankings.values() for s in r]:
        ids.setdefault(source, f"file{len(ids)}")
    qrels = {qid: {ids[s]: 1 for s in files} for qid, files in relevant.items()}
    run = {qid: file_run(sources, ids) for qid, sources in rankings.items() if sources}
    out = {qid: dict.fromkeys(metric_names(ks), 0.0) for qid in relevant}
    for metric in ir_measures.iter_calc(list(names), qrels, run):
        out[metric.query_id][names[metric.measure]] = float(metric.value)
    return out


def mean(
    per_question: Mapping[str, Mapping[str, float]], ids: Collection[str], names: Sequence[str]
) -> dict[str, float]:
    """The mean of each metric over the questions ``ids``."""
    return {name: float(np.mean([per_question[i][name] for i in ids])) if ids else 0.0 for name in names}


def latency(seconds: Sequence[float]) -> dict[str, float]:
    """Median and 95th percentile (linear interpolation) of per-query times, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if not ms.size:
        return {"median": 0.0, "p95": 0.0}
    return {"median": float(np.median(ms)), "p95": float(np.percentile(ms, 95))}
