"""``run_bench``: resume, one failing system among others, concurrency, numbers recomputed from
the files, and ``memory-r1 bench locomo`` once on the real default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from memory_r1.bench.runner import default_concurrency, run_bench
from memory_r1.config import ModelConfig
from memory_r1.data.locomo import load_locomo
from memory_r1.errors import ConfigError
from memory_r1.eval.runner import EvalLimits, percentile, read_jsonl
from memory_r1.llm.base import Prompt, Sampling
from memory_r1.metrics import aggregate
from memory_r1.testing import FakeChatModel
from test_bench_systems import BUILT_IN, FAKE_LLM, bench, fake_models, scripted_reply


class Interrupt(Exception):
    pass


def failing_after(n: int) -> FakeChatModel:
    calls = {"n": 0}

    def reply(prompt: Prompt, sampling: Sampling) -> str:
        calls["n"] += 1
        if calls["n"] > n:
            raise Interrupt()
        return scripted_reply(prompt, sampling)

    return FakeChatModel(reply_fn=reply)


def broken_system(ctx: object) -> object:
    raise ConfigError("the broken system needs a venv that is not there")


def _preds(out: Path, name: str) -> dict[str, str]:
    return {p["qid"]: p["prediction"] for p in read_jsonl(out / name / "predictions.jsonl")}


@pytest.mark.parametrize("name", BUILT_IN)
def test_interrupted_bench_resumes_without_redoing_work(
    name: str, tiny_locomo_path: Path, tmp_path: Path
) -> None:
    convs = load_locomo(tiny_locomo_path)
    bench([name], convs, tmp_path / "ref")
    out = tmp_path / "run"
    with pytest.raises(Interrupt):  # dies mid-run (mid-ingest for the LLM-ingesting systems)
        bench([name], convs, out, fake_models(failing_after(4)))
    model = FakeChatModel(reply_fn=scripted_reply)
    bench([name], convs, out, fake_models(model))
    n_calls = len(model.calls)
    bench([name], convs, out, fake_models(model))  # a third run does nothing new
    assert len(model.calls) == n_calls
    ingest = read_jsonl(out / name / "ingest.jsonl")
    keys = [(r["sample_id"], r["dia_id"]) for r in ingest]
    assert len(keys) == len(set(keys)) == sum(len(c.turns()) for c in convs)
    assert _preds(out, name) == _preds(tmp_path / "ref", name)
    assert len(read_jsonl(out / name / "predictions.jsonl")) == len(_preds(out, name))
    ref = json.loads((tmp_path / "ref" / name / "scores.json").read_text())
    got = json.loads((out / name / "scores.json").read_text())
    assert got["bank_size"] == ref["bank_size"] and got["scores"] == ref["scores"]


def test_a_failing_system_does_not_stop_the_others(
    tiny_locomo_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import memory_r1.bench.systems as systems

    monkeypatch.setitem(systems.SYSTEMS, "broken", f"{__name__}:broken_system")
    monkeypatch.setitem(systems.SYSTEMS, "absent", "memory_r1.bench.not_written_yet:create")
    convs = load_locomo(tiny_locomo_path)
    results = bench(["broken", "locomo-rag", "absent", "full-context"], convs, tmp_path)
    assert "venv that is not there" in results["broken"]["error"]
    assert "absent" in results["absent"]["error"]
    assert results["locomo-rag"]["scores"]["overall"]["n"] > 0
    assert results["full-context"]["scores"]["overall"]["n"] > 0
    assert "venv that is not there" in (tmp_path / "results.json").read_text()


def test_without_the_report_module_results_json_is_written(
    tiny_locomo_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "memory_r1.bench.report", None)  # import fails
    results = bench(["locomo-rag"], load_locomo(tiny_locomo_path), tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"]["locomo-rag"]["scores"] == results["locomo-rag"]["scores"]
    assert saved["run_config"]["systems"] == ["locomo-rag"]
    assert not (tmp_path / "report.md").exists()


def test_concurrency_gives_the_same_predictions(tiny_locomo_path: Path, tmp_path: Path) -> None:
    convs = load_locomo(tiny_locomo_path)
    serial = bench(BUILT_IN, convs, tmp_path / "serial", concurrency=1)
    parallel = bench(BUILT_IN, convs, tmp_path / "parallel", concurrency=4)
    for name in BUILT_IN:
        assert _preds(tmp_path / "parallel", name) == _preds(tmp_path / "serial", name)
        assert parallel[name]["scores"] == serial[name]["scores"]
        assert parallel[name]["bank_size"] == serial[name]["bank_size"]
        assert parallel[name]["config"]["concurrency"] == 4
    # an interrupted parallel run stops, and resumes to the same result
    out = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        bench(["memory-r1"], convs, out, fake_models(failing_after(6)), concurrency=4)
    bench(["memory-r1"], convs, out, concurrency=4)
    assert _preds(out, "memory-r1") == _preds(tmp_path / "serial", "memory-r1")
    ingest = read_jsonl(out / "memory-r1" / "ingest.jsonl")
    assert len({(r["sample_id"], r["dia_id"]) for r in ingest}) == len(ingest)


def test_scores_json_is_recomputed_from_the_files(tiny_locomo_path: Path, tmp_path: Path) -> None:
    convs = load_locomo(tiny_locomo_path)
    bench(["memory-r1"], convs, tmp_path)
    out = tmp_path / "memory-r1"
    scores = json.loads((out / "scores.json").read_text())
    preds, ingest = read_jsonl(out / "predictions.jsonl"), read_jsonl(out / "ingest.jsonl")
    assert scores["scores"] == aggregate(preds, percent=True)
    for summary, rows in ((scores["ingest"], ingest), (scores["answer"], preds)):
        assert summary["tokens_in"] == sum(r["tokens_in"] for r in rows)
        assert summary["tokens_out"] == sum(r["tokens_out"] for r in rows)
        assert summary["llm_calls"] == sum(r["llm_calls"] for r in rows)
        assert summary["wall_s_p50"] == percentile([r["wall_s"] for r in rows], 50)
        assert summary["wall_s_p95"] == percentile([r["wall_s"] for r in rows], 95)
    assert scores["ingest"]["wall_s_per_turn"] == pytest.approx(
        sum(r["wall_s"] for r in ingest) / len(ingest)
    )
    cfg = scores["config"]
    assert cfg["backbone"]["model"] == "fake" and cfg["backbone"]["sha256"] is None
    assert cfg["seed"] == 0 and cfg["packages"]["memory-r1"]
    assert cfg["limits"]["categories"] == [1, 2, 3, 4]


def test_all_categories_when_none(tiny_locomo_path: Path, tmp_path: Path) -> None:
    convs = load_locomo(tiny_locomo_path)
    limits = EvalLimits(categories=None, max_questions=100)
    results = run_bench(
        ["locomo-rag"], convs, limits, tmp_path, FAKE_LLM, "hash", models=fake_models(), progress=False
    )
    assert results["locomo-rag"]["answer"]["questions"] == sum(len(c.qa) for c in convs)


def test_default_concurrency_follows_the_backend() -> None:
    assert default_concurrency(ModelConfig(backend="openai", model="m", base_url="http://x/v1")) == 8
    assert default_concurrency(ModelConfig()) == 1


@pytest.mark.slow
def test_bench_locomo_cli_real_default_model(tiny_locomo_path: Path, tmp_path: Path) -> None:
    """``memory-r1 bench locomo`` on the embedded llama.cpp SmolLM2, two no-ingest-LLM systems."""
    from memory_r1.cli import main

    out = tmp_path / "report"
    args = [
        "bench",
        "locomo",
        "--data",
        str(tiny_locomo_path),
        "--conversations",
        "conv-30",
        "--systems",
        "locomo-rag,full-context",
        "--limit",
        "2",
        "--max-turns",
        "6",
        "--embedder",
        "hash",
        "--out",
        str(out),
        "--no-progress",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "locomo-rag" in res.output and "full-context" in res.output
    assert (out / "results.json").exists()
    for name in ("locomo-rag", "full-context"):
        scores = json.loads((out / name / "scores.json").read_text())
        preds = read_jsonl(out / name / "predictions.jsonl")
        assert len(preds) == scores["answer"]["questions"] == 2
        assert scores["scores"] == aggregate(preds, percent=True)
        assert scores["bank_size"] == {"conv-30": 6}
        backbone = scores["config"]["backbone"]
        assert backbone["backend"] == "llamacpp" and len(backbone["sha256"]) == 64
    assert all(p["truncated_turns"] == 0 for p in read_jsonl(out / "full-context" / "predictions.jsonl"))
