"""Shared fixtures: temporary run and report folders (``memory_r1.paths``) and the synthetic
LoCoMo file."""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One local PostgreSQL 16 + pgvector server (``store.pglocal``, the pgserver wheel) for the
    whole session, in its own temporary folder; stopped and removed at the end."""
    if importlib.util.find_spec("pgserver") is None:
        pytest.skip("pgserver is not installed (pip install -e '.[test]')")
    from memory_r1.store import pglocal

    folder = Path(tempfile.mkdtemp(prefix="memory-r1-pg-"))
    try:
        server = pglocal.start(folder / "data", throwaway=True)
        yield server
        server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_PG_DATABASES = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """``(kind, target)`` of a fresh, empty store for ``open_store(target, embedder, kind=kind)``:
    one parametrised suite runs on every store backend (each param adds a backend). PostgreSQL:
    a new database on the session's server for each test."""
    if request.param == "postgres":
        server = request.getfixturevalue("pg_server")
        return "postgres", server.database(f"test_{next(_PG_DATABASES)}")
    return "sqlite", str(tmp_path / "store.sqlite")
