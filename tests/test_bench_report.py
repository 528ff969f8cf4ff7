"""Benchmark report: tables and JSON equal the numbers recomputed from predictions.jsonl."""

from __future__ import annotations

import json
import random
import re
import struct
from pathlib import Path

import pytest

from memory_r1.bench.published import PUBLISHED_TABLE1, PUBLISHED_TITLE
from memory_r1.bench.report import recompute, write_bench_report
from memory_r1.metrics import aggregate, score_prediction

GOLDS = ["7 May 2023", "a dance studio", "counseling", "their jobs", "Sweden", "3"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PAPER = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper.md"


def _predictions(seed: int, n: int, judge: bool, categories=(1, 2, 3, 4)) -> list[dict]:
    """Rows in eval/runner.py ``answer_one``'s format, scored with the real metric code."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        gold, category = rng.choice(GOLDS), rng.choice(categories)
        pred = rng.choice([gold, gold.upper(), "I do not know", f"maybe {gold} or not"])
        marker = rng.random() < 0.8
        raw = f"**Memories selected as relevant:**\n- x\n\n**Answer:** {pred}" if marker else pred
        row = {
            "qid": f"conv-41/q{i}",
            "sample_id": "conv-41",
            "question": f"question {i}?",
            "gold": gold,
            "category": category,
            "category_name": category if isinstance(category, str) else None,
            "evidence": ["D1:1"],
            "prediction": pred,
            "raw": raw,
            "selected": ["x"],
            "has_marker": marker,
            "retrieval_s": 0.01,
            "llm_s": 0.5,
            "tokens_in": 100 + i,
            "tokens_out": 10,
            "wall_s": round(0.2 + 0.1 * i, 4),
        }
        row.update(score_prediction(raw, gold))
        if judge:
            row["j"] = float(rng.random() < 0.5)
            row["judge_ok"] = True
        rows.append(row)
    return rows


def _summaries(rows: list[dict], with_percentiles: bool) -> dict:
    ingest = {
        "turns": 40,
        "ops": {"ADD": 10, "INVALID": 4, "NOOP": 26},
        "invalid": 4,
        "llm_calls": 80,
        "tokens_in": 5000,
        "tokens_out": 700,
        "wall_s_per_turn": 1.2,
        "outside_llm_share": 0.01,
    }
    answer = {
        "questions": len(rows),
        "missing_answer_marker": sum(not r["has_marker"] for r in rows),
        "judge_unparseable": 0,
        "tokens_in": sum(r["tokens_in"] for r in rows),
        "tokens_out": sum(r["tokens_out"] for r in rows),
        "wall_s_per_question": 1.0,
        "retrieval_s_per_question": 0.01,
        "outside_llm_share": 0.02,
    }
    if with_percentiles:
        ingest.update(wall_s_p50=1.1, wall_s_p95=2.9)
        answer.update(wall_s_p50=0.7, wall_s_p95=1.9)
    return {"ingest": ingest, "answer": answer}


def _write_run(out: Path, name: str, rows: list[dict], stale_scores: bool = False, **extra) -> dict:
    folder = out / name
    folder.mkdir(parents=True)
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scores = aggregate(rows, percent=True)
    if stale_scores:  # e.g. a scores.json from before a resumed run added questions
        scores = aggregate(rows[:3], percent=True)
    return {
        "scores": scores,
        **_summaries(rows, extra.pop("percentiles", True)),
        "config": {"system": name},
        **extra,
    }


RUN_CONFIG = {
    "dataset": "locomo",
    "split": "test",
    "backbone": "smollm2-135m",
    "model_file_sha256": "0f" * 32,
    "embedder": "all-MiniLM-L6-v2",
    "judge": "gpt-4o-mini",
    "versions": {"memory_r1": "0.1.0", "llama_cpp": "0.3.36"},
    "limits": {"max_sessions": 8},
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench"
    results = {
        "memory-r1": _write_run(
            out, "memory-r1", _predictions(1, 30, judge=True), bank_size={"conv-41": 17, "conv-42": 5}
        ),
        "locomo-rag": _write_run(
            out, "locomo-rag", _predictions(2, 25, judge=False), stale_scores=True, percentiles=False
        ),
        "full-context": _write_run(out, "full-context", _predictions(3, 12, judge=True, categories=(1, 4))),
        "mem0": {"error": "ModuleNotFoundError: No module named 'mem0'"},
    }
    # the ingest log of locomo-rag gives its s/turn percentiles (no summary fields)
    (out / "locomo-rag" / "ingest.jsonl").write_text(
        "".join(
            json.dumps({"dia_id": f"D1:{i}", "wall_s": w}) + "\n"
            for i, w in enumerate([1.0, 2.0, 3.0, 4.0, 5.0])
        )
    )
    paths = write_bench_report(out, results, RUN_CONFIG)
    return out, results, paths


def _md_table(report: str, heading: str) -> dict[str, dict[str, str]]:
    """The first Markdown table under ``heading`` as {first cell: {column: cell}}."""
    lines = []
    for line in report.split(heading + "\n", 1)[1].splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(head[1:], cells[1:]))
    return rows


def test_files_written(bench):
    out, _, paths = bench
    names = {p.name for p in paths}
    assert names == {"results.json", "report.md", "f1.png", "bleu1.png", "em.png", "j.png", "latency.png"}
    assert all(p.parent == out and p.is_file() for p in paths)


def test_json_scores_equal_recomputed_from_predictions(bench):
    out, results, _ = bench
    data = json.loads((out / "results.json").read_text())
    again = recompute(out)
    assert set(again) == {"memory-r1", "locomo-rag", "full-context"}
    for name, scores in again.items():
        rows = [json.loads(line) for line in (out / name / "predictions.jsonl").read_text().splitlines()]
        assert scores == aggregate(rows, percent=True)
        assert data["systems"][name]["scores"] == scores
        assert data["systems"][name]["scores_source"] == f"{name}/predictions.jsonl"
    assert data["systems"]["locomo-rag"]["scores_given_differ"] is True
    assert data["systems"]["memory-r1"]["scores_given_differ"] is False
    assert data["run_config"] == RUN_CONFIG
    assert data["failed"] == {"mem0": results["mem0"]["error"]}
    assert data["categories"] == ["single-hop", "multi-hop", "open-domain", "temporal", "overall"]


def test_markdown_tables_equal_recomputed(bench):
    out, _, _ = bench
    report = (out / "report.md").read_text()
    again = recompute(out)
    counts = _md_table(report, "### Questions per category (n)")
    for label, metric in (("F1", "f1"), ("BLEU-1", "bleu1"), ("EM", "em"), ("J", "j")):
        table = _md_table(report, f"### {label}")
        assert list(table) == ["memory-r1", "locomo-rag", "full-context"]
        assert list(table["memory-r1"]) == ["single-hop", "multi-hop", "open-domain", "temporal", "overall"]
        for name, scores in again.items():
            for cat, cell in table[name].items():
                if cat not in scores:
                    assert cell == "–" and counts[name][cat] == "–"
                    continue
                assert counts[name][cat] == str(scores[cat]["n"])
                expected = f"{scores[cat][metric]:.2f}" if metric in scores[cat] else "–"
                assert cell == expected, (name, cat, metric)
    # full-context only has categories 1 and 4; locomo-rag has no judge
    assert _md_table(report, "### F1")["full-context"]["multi-hop"] == "–"
    assert set(_md_table(report, "### J")["locomo-rag"].values()) == {"–"}


def test_latency_and_cost_table(bench):
    out, results, _ = bench
    table = _md_table((out / "report.md").read_text(), "## Latency and cost")
    mr1 = table["memory-r1"]
    assert (mr1["s/turn p50"], mr1["s/turn p95"]) == ("1.100", "2.900")  # from the summaries
    assert (mr1["s/question p50"], mr1["s/question p95"]) == ("0.700", "1.900")
    assert mr1["bank size"] == "22" and mr1["ingest INVALID ops"] == "4"
    ans = results["memory-r1"]["answer"]
    assert mr1["tokens in"] == str(5000 + ans["tokens_in"]) and mr1["LLM calls"] == "80"
    assert mr1["missing `Answer:` markers"] == str(ans["missing_answer_marker"])
    rag = table["locomo-rag"]  # no percentiles given: from ingest.jsonl / predictions.jsonl rows
    assert (rag["s/turn p50"], rag["s/turn p95"]) == ("3.000", "4.800")
    walls = [round(0.2 + 0.1 * i, 4) for i in range(25)]
    assert rag["s/question p50"] == f"{walls[12]:.3f}" and rag["bank size"] == "–"


def test_failed_system_listed(bench):
    out, _, _ = bench
    report = (out / "report.md").read_text()
    failed = report.split("## Failed systems\n", 1)[1].split("\n## ", 1)[0]
    assert "**mem0**: ModuleNotFoundError: No module named 'mem0'" in failed
    assert "mem0 |" not in report.split("## Failed systems")[0]  # not a row of any score table


def test_published_numbers_labelled(bench):
    out, _, _ = bench
    report = (out / "report.md").read_text()
    assert f"## {PUBLISHED_TITLE}" in report
    assert "not comparable with a 135M backbone" in PUBLISHED_TITLE
    section = report.split(f"## {PUBLISHED_TITLE}", 1)[1].split("\n## ", 1)[0]
    assert "arXiv 2508.19828" in section and "Table 1" in section
    assert "| paper, Table 1 | LLaMA-3.1-8B | Memory-R1-GRPO | 45.02 | 37.51 | 62.74 |" in section
    assert "| this run | smollm2-135m | memory-r1 |" in section
    published = json.loads((out / "results.json").read_text())["published"]
    assert published["title"] == PUBLISHED_TITLE and len(published["table1"]) == 14


@pytest.mark.skipif(not PAPER.is_file(), reason="shared/reference/paper.md not present")
def test_published_constant_matches_reference_text():
    text = PAPER.read_text(encoding="utf-8")
    table = text.split("**Table 1, LoCoMo test", 1)[1].split("\n\n", 2)[1]
    backbone, seen = None, {}
    for line in table.splitlines()[2:]:
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        backbone = cells[0] or backbone
        method = re.sub(r"\s*\[v\d only\]|\s*\[v5\]", "", cells[1])
        seen[(backbone, method)] = cells[2:]
    for row in PUBLISHED_TABLE1:
        cells = seen[(row["backbone"], row["method"])]
        for cat, cell in zip(("single-hop", "multi-hop", "open-domain", "temporal", "overall"), cells):
            assert [float(x) for x in cell.split("/")] == [
                row["scores"][cat][m] for m in ("f1", "bleu1", "j")
            ]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_pngs_valid_and_non_trivial(bench):
    out, _, _ = bench
    for name in ("f1.png", "bleu1.png", "em.png", "j.png", "latency.png"):
        width, height = _png_size(out / name)
        assert width >= 400 and height >= 300
        assert (out / name).stat().st_size > 5_000  # bars, labels, legend: not a blank canvas
        assert f"({name})" in (out / "report.md").read_text()


def test_no_judge_no_j_chart_and_global_backend_untouched(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    out = tmp_path / "bench"
    results = {"vanilla": _write_run(out, "vanilla", _predictions(4, 8, judge=False))}
    names = {p.name for p in write_bench_report(out, results, {})}
    assert "j.png" not in names and "f1.png" in names
    assert "### J" not in (out / "report.md").read_text()
    assert matplotlib.get_backend() == backend


def test_string_categories_and_missing_systems(tmp_path):
    out = tmp_path / "bench"
    rows = _predictions(5, 10, judge=False, categories=("multi-session", "abstention", "temporal-reasoning"))
    results = {
        "memory-r1": _write_run(out, "memory-r1", rows),
        "given-only": {"scores": {"overall": {"n": 2, "f1": 50.0}}},  # no folder, no summaries
        "broken": {"error": "judge endpoint unreachable"},
    }
    write_bench_report(out, results, {"benchmark": "longmemeval"})
    assert (
        "dataset is 'longmemeval': the paper's LoCoMo numbers are context only"
        in (out / "report.md").read_text()
    )
    data = json.loads((out / "results.json").read_text())
    assert data["categories"] == ["abstention", "multi-session", "temporal-reasoning", "overall"]
    assert data["systems"]["given-only"]["scores_source"].startswith("given")
    f1 = _md_table((out / "report.md").read_text(), "### F1")
    assert f1["given-only"]["overall"] == "50.00" and f1["given-only"]["abstention"] == "–"


def test_only_failures(tmp_path):
    paths = write_bench_report(tmp_path, {"mem0": {"error": "boom"}}, {"backbone": "x"})
    assert {p.name for p in paths} == {"results.json", "report.md"}
    assert "**mem0**: boom" in (tmp_path / "report.md").read_text()


def test_run_config_as_bench_runner_records_it(tmp_path):
    out = tmp_path / "bench"
    sha = "ab" * 32
    run = _write_run(out, "memory-r1", _predictions(6, 6, judge=False))
    run["config"] = {"limits": {"max_sessions": 8, "max_turns": None}}
    config = {
        "backbone": {"backend": "llamacpp", "model": "smollm2-135m", "file": "/m/x.gguf", "sha256": sha},
        "embedder": "minilm",
        "judge": None,
        "packages": {"memory-r1": "0.1.0"},
    }
    write_bench_report(out, {"memory-r1": run}, config)
    report = (out / "report.md").read_text()
    assert f"  - sha256: `{sha}`" in report and "  - memory-r1: `0.1.0`" in report
    assert '- **limits** (every system): `{"max_sessions": 8, "max_turns": null}`' in report
    assert "| this run | smollm2-135m | memory-r1 |" in report
