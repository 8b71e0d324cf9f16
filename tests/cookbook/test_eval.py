"""``qwen3-rag eval``: the metrics against hand-computed values, the questions file and its bad inputs, and the
command end to end on the tiny checkpoints -- its numbers checked against what ``search`` returns (and against an
index rebuilt at the smaller size or without the instruction), its JSON, table and plot."""

from __future__ import annotations

import json
import math
import os
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qwen3_rag.cli import metrics
from qwen3_rag.cli.errors import UsageError
from qwen3_rag.cli.evaluate import Report, evaluate
from qwen3_rag.cli.questions import SourceIndex, match_questions, parse_questions
from qwen3_rag.cli.vectors import StoredChunks, truncate
from qwen3_rag.embedder import Qwen3Embedder

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------- metrics, by hand

RANKINGS = {
    # a's three chunks first: b is found at rank 4, the repeats of a take ranks 2 and 3 and are never relevant
    "q0": ["/d/a.md", "/d/a.md", "/d/a.md", "/d/b.md", "/d/x.md"],
    # the one relevant file at rank 3
    "q1": ["/d/x.md", "/d/y.md", "/d/c.md"],
    # the relevant file at rank 11: outside every @10 metric
    "q2": [f"/d/n{i}.md" for i in range(10)] + ["/d/z.md"],
    # nothing retrieved
    "q3": [],
}
RELEVANT = {"q0": {"/d/a.md", "/d/b.md"}, "q1": {"/d/c.md"}, "q2": {"/d/z.md"}, "q3": {"/d/w.md"}}
KS = (1, 2, 3, 11)
HAND = {
    "q0": {
        "recall@1": 0.5,
        "recall@2": 0.5,
        "recall@3": 0.5,
        "recall@11": 1.0,
        "mrr@10": 1.0,
        "ndcg@10": (1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)),
    },
    "q1": {"recall@1": 0.0, "recall@2": 0.0, "recall@3": 1.0, "recall@11": 1.0, "mrr@10": 1 / 3, "ndcg@10": 0.5},
    "q2": {"recall@1": 0.0, "recall@2": 0.0, "recall@3": 0.0, "recall@11": 1.0, "mrr@10": 0.0, "ndcg@10": 0.0},
    "q3": dict.fromkeys(["recall@1", "recall@2", "recall@3", "recall@11", "mrr@10", "ndcg@10"], 0.0),
}


def test_metrics_match_hand_computed_values_on_a_fixed_ranking():
    per_question = metrics.score(RANKINGS, RELEVANT, KS)
    assert set(per_question) == set(HAND)
    for qid, expected in HAND.items():
        assert per_question[qid] == pytest.approx(expected, abs=1e-9), qid


def test_the_mean_is_over_the_questions_asked_for():
    per_question = metrics.score(RANKINGS, RELEVANT, KS)
    names = metrics.metric_names(KS)
    assert names == ["recall@1", "recall@2", "recall@3", "recall@11", "mrr@10", "ndcg@10"]
    everything = metrics.mean(per_question, list(HAND), names)
    assert everything["recall@3"] == pytest.approx(0.375)  # (0.5 + 1 + 0 + 0) / 4
    assert everything["mrr@10"] == pytest.approx((1 + 1 / 3) / 4)
    assert metrics.mean(per_question, ["q0", "q1"], names)["recall@1"] == pytest.approx(0.25)


def test_a_file_counts_once_at_its_best_ranked_chunk():
    run = metrics.file_run(["/a", "/b", "/a", "/a"], {"/a": "file0", "/b": "file1"})
    assert sorted(run, key=run.get, reverse=True) == ["file0", "file1", "repeat3", "repeat4"]
    assert len(set(run.values())) == 4  # repeats keep their slots: scores strictly decrease with the rank


def test_paths_with_odd_characters_reach_the_metrics_intact():
    odd = ["/d/nul\x00.md", "/d/space and ünïcödé 文件.md", "/d/tab\t.md", "file0", "repeat2"]
    ranking = {"q": [odd[0], odd[0], odd[1], odd[2], odd[3], odd[4]]}
    scores = metrics.score(ranking, {"q": {odd[3], odd[4]}}, (4, 6))["q"]
    assert scores["recall@4"] == 0.0 and scores["recall@6"] == 1.0


def test_latency_is_the_median_and_95th_percentile_in_milliseconds():
    summary = metrics.latency([0.001, 0.002, 0.003, 0.004, 0.100])
    assert summary["median"] == pytest.approx(3.0)
    assert summary["p95"] == pytest.approx(4.0 + 0.8 * 96.0)  # linear interpolation between 4 ms and 100 ms


# ----------------------------------------------------------------------------------- the questions file


def test_json_jsonl_and_a_single_object_are_read_alike():
    as_json = parse_questions('[{"question": "q?", "relevant": ["a.md"], "task": "web"}]')
    as_jsonl = parse_questions('{"question": "q?", "relevant": ["a.md"], "task": "web"}\n\n')
    single = parse_questions('{\n  "question": "q?",\n  "relevant": "a.md",\n  "task": "web"\n}')
    assert [(q.text, q.relevant, q.task) for q in as_json] == [("q?", ("a.md",), "web")]
    assert [(q.text, q.relevant, q.task) for q in as_jsonl] == [("q?", ("a.md",), "web")]
    assert [(q.text, q.relevant, q.task) for q in single] == [("q?", ("a.md",), "web")]


def test_the_cookbook_questions_file_is_read_whole():
    questions = parse_questions((ROOT / "cookbook/data/questions.json").read_text(encoding="utf-8"))
    assert len(questions) == 17
    assert {q.task for q in questions} == {"web", "ecommerce", "code"}


def test_relevant_entries_match_paths_on_slash_boundaries():
    index = SourceIndex(["/home/u/docs/notes/tides.md", "/home/u/docs/atides.md", "/home/u/other/tides.md"])
    assert index.match("notes/tides.md") == {"/home/u/docs/notes/tides.md"}
    assert index.match("./notes/tides.md") == {"/home/u/docs/notes/tides.md"}
    assert index.match("/home/u/docs/notes/tides.md") == {"/home/u/docs/notes/tides.md"}
    assert index.match("tides.md") == {"/home/u/docs/notes/tides.md", "/home/u/other/tides.md"}
    assert index.match("ides.md") == set()
    assert index.match("notes/tides") == set()
    assert index.match("u/docs") == set()  # a folder is not a file


def test_matching_reports_missing_and_ambiguous_entries():
    questions = parse_questions('[{"question": "q?", "relevant": ["tides.md", "gone.md", "x/a.md"]}]')
    (m,) = match_questions(questions, ["/r/x/a.md", "/r/1/tides.md", "/r/2/tides.md"])
    assert m.relevant == {"/r/x/a.md", "/r/1/tides.md", "/r/2/tides.md"}
    assert m.missing == ("gone.md",)
    assert m.ambiguous == (("tides.md", 2),)


# ------------------------------------------------------------------------------------------ exact search


def test_truncation_equals_the_embedders_own_dimensions(tiny_embedding_path):
    embedder = Qwen3Embedder(tiny_embedding_path, device="cpu")
    texts = ["Tides follow the Moon.", "Bread rises with yeast.", "日本語のテキスト"]
    full = embedder.embed_documents(texts)
    for d in (32, 48):
        np.testing.assert_allclose(truncate(full, d), embedder.embed_documents(texts, dimensions=d), atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(truncate(full, d), axis=1), 1.0, atol=1e-6)


def test_exact_search_ranks_by_cosine_and_keeps_the_stored_order_on_ties():
    vectors = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]], np.float32)
    chunks = StoredChunks(
        ids=[f"c{i}" for i in range(5)],
        metadatas=[{"source": f"/s{i}.md", "chunk": 0} for i in range(5)],
        documents=[f"text {i}" for i in range(5)],
        vectors=vectors,
    )
    hits = chunks.nearest(np.array([1, 0, 0, 0], np.float32), 4, top_k=2)
    assert [h.id for h in hits] == ["c0", "c2"]  # three tied at 1.0: the first two stored win, in order
    hits = chunks.nearest(np.array([1, 0, 0, 0], np.float32), 4, top_k=10)
    assert [h.id for h in hits] == ["c0", "c2", "c4", "c1", "c3"]
    assert [h.similarity for h in hits] == pytest.approx([1, 1, 1, 0.6, 0])
    assert hits[0].text == "text 0" and hits[0].source == "/s0.md"
    # truncated to 2 dimensions and normalised again, [0.6, 0.8] is no longer nearer than [0, 0] (norm 0 -> 0)
    hits = chunks.nearest(np.array([0, 1, 1, 0], np.float32), 2, top_k=1)
    assert [h.id for h in hits] == ["c1"]


# --------------------------------------------------------------------------------------- end to end

LIBRARY = {
    "astronomy/stars.md": "# Stars\n\nThe sun is a star. Stars shine because fusion turns hydrogen into helium. "
    "A star forms when a cloud of gas collapses under gravity.\n\nPlanets orbit stars. The Earth orbits the sun "
    "once a year and the Moon orbits the Earth once a month. Comets fall in from the edge of the system.\n",
    "kitchen/bread.txt": "Bread needs flour, water, salt and yeast. Knead the dough until it is smooth and "
    "elastic. Let it rise in a warm place for two hours. Shape the loaf, let it rise again, then bake it hot "
    "until the crust is brown and the loaf sounds hollow when tapped.\n",
    "notes/tides.md": "# Tides\n\nThe Moon's gravity raises two bulges in the oceans, so most coasts see two high "
    "tides a day. Spring tides come at new and full moon, neap tides at the quarters. The Sun adds a smaller pull "
    "of its own.\n",
    "kitchen/coffee.md": "Pour-over coffee wants water just off the boil, about 94 degrees. Grind the beans medium "
    "fine, bloom them for thirty seconds, then pour slowly in circles. Espresso needs a much finer grind.\n",
    "garden/compost.txt": "A compost heap needs greens and browns: kitchen scraps and dry leaves. Turn it every "
    "few weeks so air reaches the middle. Worms and fungi do the rest, and in a year it is soil.\n",
    "code/dedupe.md": "To remove duplicates from a Python list and keep the order, use dict.fromkeys: "
    "list(dict.fromkeys(items)). A set loses the order. For unhashable items loop and keep a seen list.\n",
}
QUESTIONS = [
    {"question": "Why does the sun shine?", "relevant": ["stars.md"], "task": "web"},
    {"question": "How do I bake a loaf?", "relevant": ["kitchen/bread.txt"], "task": "web"},
    {"question": "Why are there two tides a day?", "relevant": ["notes/tides.md", "stars.md"], "task": "web"},
    {"question": "water temperature for pour-over", "relevant": ["coffee.md"], "task": "shopping"},
    {"question": "dedupe a python list keeping order", "relevant": ["code/dedupe.md"], "task": "code"},
    {"question": "what do worms do in compost", "relevant": ["compost.txt"]},
]
CHUNKING = ("--chunk-size", "24", "--chunk-overlap", "0")  # several chunks per file: repeats matter


@pytest.fixture
def library(tmp_path: Path) -> Path:
    root = tmp_path / "library"
    for name, text in LIBRARY.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def questions_file(tmp_path: Path) -> Path:
    path = tmp_path / "questions.json"
    path.write_text(json.dumps(QUESTIONS), encoding="utf-8")
    return path


@pytest.fixture
def indexed(qwen3_rag, library) -> Path:
    result = qwen3_rag("index", library, *CHUNKING, "-q")
    assert result.code == 0, result.err
    return library


def eval_json(qwen3_rag, *args) -> dict:
    result = qwen3_rag("eval", *args, "--json", "-q")
    assert result.code == 0, result.err
    return json.loads(result.out)


def configuration(payload: dict, **match) -> dict:
    found = [c for c in payload["configurations"] if all(c[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, payload["configurations"])
    return found[0]


def relevant_files(entries: list[str], sources: set[str]) -> set[str]:
    return {s for s in sources for e in entries if s == e or s.endswith("/" + e)}


def searched_sources(qwen3_rag, question: str, *args: str) -> list[str]:
    result = qwen3_rag("search", question, "--json", "-q", *args)
    assert result.code == 0, result.err
    return [r["source"] for r in json.loads(result.out)["results"]]


def plain_metrics(ranked: list[str], relevant: set[str]) -> tuple[float, float]:
    """MRR@10 and nDCG@10 of a chunk ranking over files, written out (a file counts at its first chunk)."""
    first: dict[str, int] = {}
    for rank, source in enumerate(ranked[:10], 1):
        first.setdefault(source, rank)
    ranks = sorted(r for s, r in first.items() if s in relevant)
    rr = 1 / ranks[0] if ranks else 0.0
    dcg = sum(1 / math.log2(r + 1) for r in ranks)
    ideal = sum(1 / math.log2(i + 1) for i in range(1, min(len(relevant), 10) + 1))
    return rr, dcg / ideal


def all_sources(qwen3_rag) -> set[str]:
    return set(searched_sources(qwen3_rag, "anything", "--no-rerank", "--top-n", "1000"))


def test_recall_at_k_equals_what_search_returns(qwen3_rag, indexed, questions_file):
    payload = eval_json(qwen3_rag, questions_file, "--no-rerank")
    assert payload["questions"] == len(QUESTIONS) and payload["unmatched"] == []
    result = configuration(payload, rerank=False)
    assert result["search"] == "index" and result["dimensions"] == 64
    sources = all_sources(qwen3_rag)
    for k in (1, 3, 5, 10):
        shares = []
        for q in QUESTIONS:
            relevant = relevant_files(q["relevant"], sources)
            found = set(searched_sources(qwen3_rag, q["question"], "--no-rerank", "--top-n", str(k)))
            shares.append(len(found & relevant) / len(relevant))
        assert result["metrics"][f"recall@{k}"] == pytest.approx(float(np.mean(shares)), abs=1e-6), k
    plain = [
        plain_metrics(
            searched_sources(qwen3_rag, q["question"], "--no-rerank", "--top-n", "10"),
            relevant_files(q["relevant"], sources),
        )
        for q in QUESTIONS
    ]
    assert result["metrics"]["mrr@10"] == pytest.approx(np.mean([p[0] for p in plain]), abs=1e-6)
    assert result["metrics"]["ndcg@10"] == pytest.approx(np.mean([p[1] for p in plain]), abs=1e-6)


def test_reranked_recall_equals_what_search_returns_after_reranking(qwen3_rag, indexed, tmp_path):
    questions = QUESTIONS[:3]
    path = tmp_path / "three.jsonl"
    path.write_text("\n".join(json.dumps(q) for q in questions), encoding="utf-8")
    payload = eval_json(qwen3_rag, path, "--top-k", "12", "--k", "1,3")
    assert [(c["rerank"], c["search"]) for c in payload["configurations"]] == [(False, "index"), (True, "index")]
    reranked = configuration(payload, rerank=True)
    sources = all_sources(qwen3_rag)
    for k in (1, 3):
        shares = []
        for q in questions:
            relevant = relevant_files(q["relevant"], sources)
            found = set(searched_sources(qwen3_rag, q["question"], "--top-k", "12", "--top-n", str(k)))
            shares.append(len(found & relevant) / len(relevant))
        assert reranked["metrics"][f"recall@{k}"] == pytest.approx(float(np.mean(shares)), abs=1e-6), k
    assert reranked["latency_ms"]["median"] > 0 and reranked["latency_ms"]["p95"] >= reranked["latency_ms"]["median"]


def test_a_smaller_size_scores_as_an_index_built_at_that_size(qwen3_rag, library, questions_file, tmp_path):
    assert qwen3_rag("index", library, *CHUNKING, "-q").code == 0
    payload = eval_json(qwen3_rag, questions_file, "--no-rerank", "--dimensions", "32,40,64")
    assert [(c["dimensions"], c["search"]) for c in payload["configurations"]] == [
        (32, "exact"),
        (40, "exact"),
        (64, "index"),
    ]
    small = configuration(payload, dimensions=32)["metrics"]
    rebuilt = tmp_path / "db32"
    assert qwen3_rag("index", library, *CHUNKING, "--dimensions", "32", "--db", rebuilt, "-q").code == 0
    sources = all_sources(qwen3_rag)
    for k in (1, 3, 5):
        shares = []
        for q in QUESTIONS:
            relevant = relevant_files(q["relevant"], sources)
            found = searched_sources(qwen3_rag, q["question"], "--no-rerank", "--top-n", str(k), "--db", rebuilt)
            shares.append(len(set(found) & relevant) / len(relevant))
        assert small[f"recall@{k}"] == pytest.approx(float(np.mean(shares)), abs=1e-6), k


def test_another_instruction_scores_as_an_index_built_with_it(qwen3_rag, library, questions_file, tmp_path):
    assert qwen3_rag("index", library, *CHUNKING, "-q").code == 0
    shop = "Given a shopping query, retrieve product listings that match the query"
    payload = eval_json(qwen3_rag, questions_file, "--no-rerank", "--instruction", "", "--instruction", shop)
    assert [c["instruction"] for c in payload["configurations"]] == ["", shop]
    bare = configuration(payload, instruction="")["metrics"]
    rebuilt = tmp_path / "db-bare"  # documents carry no instruction: the same vectors, queried without one
    assert qwen3_rag("index", library, *CHUNKING, "--instruction", "", "--db", rebuilt, "-q").code == 0
    sources = all_sources(qwen3_rag)
    shares = []
    for q in QUESTIONS:
        relevant = relevant_files(q["relevant"], sources)
        found = searched_sources(qwen3_rag, q["question"], "--no-rerank", "--top-n", "3", "--db", rebuilt)
        shares.append(len(set(found) & relevant) / len(relevant))
    assert bare["recall@3"] == pytest.approx(float(np.mean(shares)), abs=1e-6)


def test_the_json_has_the_documented_shape_and_per_task_breakdown(qwen3_rag, indexed, questions_file):
    payload = eval_json(qwen3_rag, questions_file, "--top-k", "10", "--dimensions", "32,64")
    assert payload["questions"] == 6 and payload["k"] == [1, 3, 5, 10] and payload["unmatched"] == []
    assert payload["index"]["dimensions"] == 64 and payload["index"]["chunks"] > len(LIBRARY)
    assert [(c["dimensions"], c["rerank"]) for c in payload["configurations"]] == [
        (32, False),
        (32, True),
        (64, False),
        (64, True),
    ]
    for c in payload["configurations"]:
        assert list(c["metrics"]) == ["recall@1", "recall@3", "recall@5", "recall@10", "mrr@10", "ndcg@10"]
        assert all(0.0 <= v <= 1.0 for v in c["metrics"].values())
        assert set(c["latency_ms"]) == {"median", "p95"} and 0 < c["latency_ms"]["median"] <= c["latency_ms"]["p95"]
        assert {t: v["questions"] for t, v in c["tasks"].items()} == {"web": 3, "shopping": 1, "code": 1}
        assert set(c["tasks"]["web"]["metrics"]) == set(c["metrics"])
    assert all(c["metrics"]["recall@10"] >= c["metrics"]["recall@1"] for c in payload["configurations"])


def test_the_table_lists_every_configuration_and_explains_the_columns(qwen3_rag, indexed, questions_file):
    result = qwen3_rag("eval", questions_file, "--no-rerank", "--dimensions", "32,64", "-q")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["dimensions", "instruction"])
    assert header.split() == ["dimensions", "instruction", "rerank", "recall@1", "recall@3", "recall@5",
                              "recall@10", "mrr@10", "ndcg@10", "median", "ms", "p95", "ms"]  # fmt: skip
    rows = [line.split() for line in lines if line.lstrip()[:3] in {"32*", "64 "}]
    assert [r[:3] for r in rows] == [["32*", "A", "no"], ["64", "A", "no"]]
    assert "A: Given a web search query" in result.out and "(the index's)" in result.out
    assert "*: exact search over the stored vectors" in result.out
    assert result.err == ""  # --quiet: no progress bar, no status


def test_the_python_function_returns_the_report(cli_env, qwen3_rag, indexed, questions_file):
    report = evaluate(questions_file, "--no-rerank", "--dimensions", "32,64", "--quiet")
    assert isinstance(report, Report)
    assert report.result(dimensions=32).configuration.exact
    assert report.to_json()["configurations"][1]["metrics"] == pytest.approx(report.result().metrics, abs=1e-6)
    assert set(report.result().per_question) == {str(i) for i in range(len(QUESTIONS))}
    with pytest.raises(UsageError, match="must be an integer between 32 and 64"):
        evaluate(questions_file, "--no-rerank", "--dimensions", "16")


# ------------------------------------------------------------------------------------------------- plot


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def test_the_plot_is_a_png_drawn_without_a_display(indexed, questions_file, cli_env, tmp_path, tiny_models_env):
    """In a fresh process with no display and an interactive backend asked for: a pyplot figure would fail or
    switch backends; the object API draws the file all the same and never imports pyplot."""
    plot = tmp_path / "quality.png"
    env = {k: v for k, v in os.environ.items() if k not in {"DISPLAY", "WAYLAND_DISPLAY"}}
    env.update(tiny_models_env, QWEN3_RAG_DB=str(cli_env), MPLBACKEND="tkagg")
    code = (
        "import sys; from qwen3_rag.cli import main; "
        f"status = main(['eval', {str(questions_file)!r}, '--dimensions', '32,48,64', '--no-rerank', "
        f"'--plot', {str(plot)!r}, '-q']); "
        "print('pyplot imported' if 'matplotlib.pyplot' in sys.modules else 'no pyplot'); sys.exit(status)"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "no pyplot" in done.stdout
    width, height = png_size(plot)
    assert width > 400 and height > 200


def test_the_plot_draws_each_metric_with_and_without_reranking(cli_env, indexed, questions_file, tmp_path):
    report = evaluate(questions_file, "--dimensions", "32,64", "--top-k", "10", "--instruction", "", "-q")
    drawing = report.plot(tmp_path / "quality.svg").read_text(encoding="utf-8")
    for label in [*report.metric_names, "retrieval", "+ rerank", "A: (no instruction)", "dimensions"]:
        assert f"<!-- {label} -->" in drawing, label  # matplotlib writes each text as a comment
    assert drawing.count("stroke-dasharray") >= len(report.metric_names)  # the reranked lines are dashed


def test_plot_into_a_missing_folder_is_refused_before_measuring(qwen3_rag, indexed, questions_file, tmp_path):
    for target, message in [
        (tmp_path / "no" / "such" / "q.png", "no such folder"),
        (tmp_path, "is a folder"),
        (tmp_path / "quality.jpeg", "must end in .png, .svg or .pdf"),
    ]:
        result = qwen3_rag("eval", questions_file, "--no-rerank", "--plot", target)
        assert result.code == 2
        assert result.err.count("\n") == 1 and message in result.err, result.err
        assert result.out == ""


# --------------------------------------------------------------------------------------------- bad input


BAD_FILES = [
    ("", "is empty"),
    ("   \n\n", "is empty"),
    ("[]", "holds no questions"),
    ('[{"question": "q?", "relevant": ["a.md"]},]', "is not valid JSON (line 1 column"),
    ('{"question": "q?", "relevant": ["a.md"]}\n{"question": oops}\n', "is not valid JSON (line 2"),
    ('[{"question": "q?"}]', "question 1 ('q?') has no \"relevant\" list"),
    ('{"question": "q?", "relevant": null}', 'has no "relevant" list'),
    ('[{"question": "q?", "relevant": []}]', "must name at least one file"),
    ('[{"question": "q?", "relevant": [""]}]', "must name at least one file"),
    ('[{"question": "q?", "relevant": [3]}]', '"relevant" must be a list of file names, got a list'),
    ('[{"question": "", "relevant": ["a.md"]}]', '"question" must be a non-empty string'),
    ('[{"relevant": ["a.md"]}]', '"question" must be a non-empty string, got nothing'),
    ('[{"question": "q?", "relevant": ["a.md"], "task": 3}]', '"task" must be a string'),
    ('["just a string"]', "expected an object"),
    ('"a string"', "expected a JSON list of questions"),
    ("[" * 100_000, "nested too deeply"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES, ids=[m for _, m in BAD_FILES])
def test_a_bad_questions_file_is_one_line_and_exit_2(qwen3_rag, tmp_path, text, message):
    path = tmp_path / "questions.json"
    path.write_text(text, encoding="utf-8")
    result = qwen3_rag("eval", path)  # no index needed: the file is read first
    assert result.code == 2
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith("qwen3-rag eval: error: ") and message in result.err, result.err


def test_unreadable_questions_files_are_one_line_and_exit_2(qwen3_rag, tmp_path):
    binary = tmp_path / "latin1.json"
    binary.write_bytes('[{"question": "caf\xe9", "relevant": ["a.md"]}]'.encode("latin-1"))
    for path, message in [
        (tmp_path / "missing.json", "no such questions file"),
        (tmp_path, "is a folder"),
        (binary, "is not UTF-8 text"),
        ("/dev/null", "is not a regular file"),
    ]:
        result = qwen3_rag("eval", path)
        assert result.code == 2 and result.err.count("\n") == 1 and message in result.err, result.err


def test_relevant_files_not_in_the_index_are_reported_not_counted(qwen3_rag, indexed, tmp_path):
    path = tmp_path / "q.json"
    path.write_text(
        json.dumps(
            [
                {"question": "Why does the sun shine?", "relevant": ["stars.md", "gone.md"]},
                {"question": "Where is it?", "relevant": ["nowhere.md"]},
                {"question": "How do I bake a loaf?", "relevant": ["bread.txt"]},
            ]
        ),
        encoding="utf-8",
    )
    result = qwen3_rag("eval", path, "--no-rerank", "--json", "-q")
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    assert payload["questions"] == 2
    assert payload["unmatched"] == [
        {"question": "Why does the sun shine?", "relevant": ["gone.md"], "scored": True},
        {"question": "Where is it?", "relevant": ["nowhere.md"], "scored": False},
    ]
    assert "warning: question 1: no indexed file matches 'gone.md' (not counted)" in result.err
    assert "warning: question 2: no indexed file matches 'nowhere.md' (the question is not scored)" in result.err
    # the first question is scored on stars.md alone: the same numbers as a file that names only it
    alone = tmp_path / "alone.json"
    alone.write_text(
        json.dumps(
            [
                {"question": "Why does the sun shine?", "relevant": ["stars.md"]},
                {"question": "How do I bake a loaf?", "relevant": ["bread.txt"]},
            ]
        ),
        encoding="utf-8",
    )
    assert [c["metrics"] for c in eval_json(qwen3_rag, alone, "--no-rerank")["configurations"]] == [
        c["metrics"] for c in payload["configurations"]
    ]


def test_when_no_relevant_file_is_indexed_nothing_can_be_measured(qwen3_rag, indexed, tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"question": "q?", "relevant": ["nowhere.md", "stars"]}]), encoding="utf-8")
    result = qwen3_rag("eval", path, "--no-rerank")
    assert result.code == 2
    assert "warning: question 1: no indexed file matches 'nowhere.md', 'stars'" in result.err
    assert result.err.splitlines()[-1].startswith("qwen3-rag eval: error: none of the 1 questions' relevant files")


def test_an_entry_naming_several_files_counts_them_all_and_warns(qwen3_rag, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / "docs" / folder).mkdir(parents=True)
        (tmp_path / "docs" / folder / "notes.md").write_text(f"Notes of {folder}: tides and stars.", encoding="utf-8")
    assert qwen3_rag("index", tmp_path / "docs", "-q").code == 0
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"question": "tides", "relevant": ["notes.md"]}]), encoding="utf-8")
    result = qwen3_rag("eval", path, "--no-rerank", "--json", "-q", "--k", "1,2")
    assert result.code == 0
    assert "'notes.md' matches 2 indexed files; all count as relevant" in result.err
    metrics_ = json.loads(result.out)["configurations"][0]["metrics"]
    assert metrics_["recall@1"] == pytest.approx(0.5) and metrics_["recall@2"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--k", "junk"), "argument --k: expected positive integers separated by commas, got 'junk'"),
        (("--k", "1,0"), "argument --k: expected positive integers"),
        (("--k", ""), "argument --k: expected positive integers"),
        (("--top-k", "10", "--k", "20"), "--top-k (10) must be at least 20 to rank 20 reranked results"),
        (("--top-k", "5"), "--top-k (5) must be at least 10"),
        (("--dimensions", "64,abc"), "--dimensions must be integers separated by commas"),
        (("--dimensions", "16"), "--dimensions: dimensions must be an integer between 32 and 64"),
        (("--dimensions", "32,65"), "between 32 and 64"),
    ],
)
def test_bad_options_exit_2_with_one_message(qwen3_rag, indexed, questions_file, args, message):
    result = qwen3_rag("eval", questions_file, *args)
    assert result.code == 2
    assert message in result.err, result.err
    assert "Traceback" not in result.err


def test_the_dimensions_variable_is_read_like_the_flag(qwen3_rag, indexed, questions_file, monkeypatch):
    monkeypatch.setenv("QWEN3_RAG_DIMENSIONS", "32, 64")
    payload = eval_json(qwen3_rag, questions_file, "--no-rerank")
    assert [c["dimensions"] for c in payload["configurations"]] == [32, 64]
    monkeypatch.setenv("QWEN3_RAG_DIMENSIONS", "big")
    result = qwen3_rag("eval", questions_file, "--no-rerank")
    assert result.code == 2 and "QWEN3_RAG_DIMENSIONS must be integers separated by commas" in result.err


def test_sizes_above_the_stored_size_name_the_stored_dimension(qwen3_rag, library, questions_file):
    assert qwen3_rag("index", library, "--dimensions", "40", "-q").code == 0
    result = qwen3_rag("eval", questions_file, "--no-rerank", "--dimensions", "32,48")
    assert result.code == 2 and result.err.count("\n") == 1
    assert "the index stores 40-dimension vectors (it was built with --dimensions 40)" in result.err
    payload = eval_json(qwen3_rag, questions_file, "--no-rerank", "--dimensions", "32,40")
    assert [(c["dimensions"], c["search"]) for c in payload["configurations"]] == [(32, "exact"), (40, "index")]


def test_an_empty_or_missing_index_is_a_usage_error(qwen3_rag, tmp_path, questions_file):
    result = qwen3_rag("eval", questions_file)
    assert result.code == 2 and "no index at" in result.err
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "one.md").write_text("# One\n\nSome text about tides.", encoding="utf-8")
    assert qwen3_rag("index", docs).code == 0
    (docs / "one.md").unlink()
    (docs / "empty.md").write_text("   \n", encoding="utf-8")
    assert qwen3_rag("index", docs).code == 0  # its chunks pruned: the collection exists, empty
    result = qwen3_rag("eval", questions_file, "--no-rerank")
    assert result.code == 2 and "is empty: run `qwen3-rag index PATH` first" in result.err


def test_without_the_eval_extra_the_command_says_what_to_install(qwen3_rag, questions_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "ir_measures", None)  # import fails
    result = qwen3_rag("eval", questions_file)
    assert result.code == 2 and 'pip install "qwen3-rag[eval]"' in result.err


def test_stored_chunks_are_read_whole_across_pages(qwen3_rag, indexed, cli_env):
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(cli_env), settings=Settings(anonymized_telemetry=False))
    collection = client.get_collection("qwen3_rag")
    paged = StoredChunks.read(collection, vectors=True, documents=True, page=3)
    whole = StoredChunks.read(collection, vectors=True, documents=True, page=10_000)
    assert len(paged.ids) == collection.count() > 3
    assert paged.ids == whole.ids and paged.documents == whole.documents
    np.testing.assert_array_equal(paged.vectors, whole.vectors)
    assert paged.dimensions == 64


def test_the_readme_eval_commands_parse_and_its_sample_is_labelled():
    from qwen3_rag.cli.options import build_parser

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Measuring retrieval on your own questions") :]
    section = section[: section.index("\n## ")]
    commands = [line.split("  #")[0].removeprefix("$ ") for line in section.splitlines() if "qwen3-rag eval " in line]
    commands = [c for c in commands if c.startswith("qwen3-rag eval ")]
    assert len(commands) >= 4
    parser = build_parser()
    for command in commands:
        args = parser.parse_args(shlex.split(command)[1:])
        assert args.command == "eval" and args.questions.endswith("questions.json")
    assert "from the tiny random test checkpoints" in section
