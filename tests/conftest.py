"""Shared fixtures: a temporary MEMORY_R1_HOME and the synthetic LoCoMo file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Model files assembled once per machine stay in the real cache; everything else is temporary.
    monkeypatch.setenv("MEMORY_R1_RUNS", str(tmp_path_factory.mktemp("runs")))


@pytest.fixture
def tiny_locomo_path(tmp_path: Path) -> Path:
    from memory_r1.data.synthetic import write_tiny_locomo

    return write_tiny_locomo(tmp_path / "locomo_tiny.json")
