"""Shared fixtures: temporary run and report folders (``memory_r1.paths``) and the synthetic
LoCoMo file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Model files assembled once per machine stay in the real cache ($MEMORY_R1_HOME); the
    # default run and report folders that commands write to are temporary.
    monkeypatch.setenv("MEMORY_R1_RUNS", str(tmp_path_factory.mktemp("runs")))
    monkeypatch.setenv("MEMORY_R1_REPORTS", str(tmp_path_factory.mktemp("reports")))


@pytest.fixture
def tiny_locomo_path(tmp_path: Path) -> Path:
    from memory_r1.data.synthetic import write_tiny_locomo

    return write_tiny_locomo(tmp_path / "locomo_tiny.json")


@pytest.fixture(params=["sqlite"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """``(kind, target)`` of a fresh, empty store for ``open_store(target, embedder, kind=kind)``:
    one parametrised suite runs on every store backend (each param adds a backend)."""
    return "sqlite", str(tmp_path / "store.sqlite")
