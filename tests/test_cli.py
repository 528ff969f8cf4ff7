"""The ``memory-r1`` CLI: errors are clean, and one real run on the embedded default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from memory_r1.cli import main
from memory_r1.eval.runner import read_jsonl
from memory_r1.metrics import aggregate


def test_missing_data_file_is_a_clean_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main,
        [
            "eval",
            "locomo",
            "--data",
            str(tmp_path / "nope.json"),
            "--embedder",
            "hash",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert res.exit_code != 0
    assert "nope.json" in res.output and "Traceback" not in res.output


def test_unknown_conversation_is_a_clean_error(tiny_locomo_path: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main,
        [
            "eval",
            "locomo",
            "--data",
            str(tiny_locomo_path),
            "-c",
            "conv-99",
            "--embedder",
            "hash",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert res.exit_code != 0 and "conv-99" in res.output


@pytest.mark.slow
def test_eval_locomo_real_default_model(tiny_locomo_path: Path, tmp_path: Path) -> None:
    """The main job end to end on the embedded default (llama.cpp, real GGUF), small limits."""
    out = tmp_path / "run"
    args = [
        "eval",
        "locomo",
        "--data",
        str(tiny_locomo_path),
        "-c",
        "conv-30",
        "--max-turns",
        "5",
        "--max-questions",
        "2",
        "--all-questions",
        "--embedder",
        "hash",
        "--out",
        str(out),
        "--no-progress",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "| **overall** |" in res.output
    preds = read_jsonl(out / "predictions.jsonl")
    ingest = read_jsonl(out / "ingest.jsonl")
    assert len(preds) == 2 and len(ingest) == 5
    scores = json.loads((out / "scores.json").read_text())
    assert scores["scores"] == aggregate(preds, percent=True)
    assert scores["config"]["system"]["answer_model"]
    # resuming does nothing new
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert len(read_jsonl(out / "predictions.jsonl")) == 2
    assert len(read_jsonl(out / "ingest.jsonl")) == 5
