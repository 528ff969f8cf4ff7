"""Default output folders come from the environment (tests point them at temporary folders)."""

from __future__ import annotations

from pathlib import Path

import pytest

from memory_r1.paths import reports_dir, runs_dir


def test_the_suite_writes_runs_and_reports_outside_the_checkout() -> None:
    checkout = Path(__file__).resolve().parents[1]
    for folder in (runs_dir(), reports_dir()):
        assert folder.is_absolute() and checkout not in folder.parents


def test_unset_variables_mean_folders_in_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMORY_R1_RUNS")
    monkeypatch.delenv("MEMORY_R1_REPORTS")
    assert (runs_dir(), reports_dir()) == (Path("runs"), Path("reports"))


def test_a_set_variable_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEMORY_R1_RUNS", str(tmp_path / "r"))
    assert runs_dir() == tmp_path / "r"
