"""House rules for ``src/`` that a reviewer would otherwise check by hand."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "memory_r1"
FILES = sorted(SRC.rglob("*.py"))
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
# Design notes that live outside the repository: code must state the fact, not cite the note.
OUTSIDE_NOTES = re.compile(r"\b(paper|rl_stack|data_and_metrics|models|services|anchors)\.md\b")


def _rel(path: Path) -> str:
    return str(path.relative_to(SRC.parent))


def test_the_source_tree_is_found() -> None:
    assert len(FILES) > 50


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_file_length(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= MAX_FILE_LINES, f"{_rel(path)} has {n} lines (at most {MAX_FILE_LINES}): split it"


def test_function_length() -> None:
    long = []
    for path in FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{_rel(path)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_no_citation_of_notes_outside_the_repository() -> None:
    cited = [
        f"{_rel(p)}:{i}"
        for p in FILES
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if OUTSIDE_NOTES.search(line)
    ]
    assert not cited, "cites a file that is not in the repository:\n" + "\n".join(cited)


def _resolve(dotted: str) -> bool:
    """``a.b.c`` under ``memory_r1``: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module("memory_r1." + ".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_architecture_names_real_code() -> None:
    text = (SRC.parents[1] / "ARCHITECTURE.md").read_text()
    path = text.split("## One turn's path through the code", 1)[1].split("## Where things live", 1)[0]
    dotted = {
        d
        for d in re.findall(r"`([a-z_]+(?:\.[A-Za-z_]+)+)(?:\([^`]*\))?`", path)
        if not d.endswith((".json", ".md", ".py"))
    }
    files = set(re.findall(r"`([a-z_/]+\.py)`", path))
    assert len(dotted) > 20 and files
    missing = sorted(d for d in dotted if not _resolve(d)) + sorted(
        f for f in files if not (SRC / f).is_file()
    )
    assert not missing, f"ARCHITECTURE.md names code that does not exist: {missing}"


def test_importing_the_cli_and_the_pipeline_loads_no_torch() -> None:
    """Torch loads only when a command needs it (the hf backend, MiniLM, training)."""
    code = (
        "import sys, memory_r1.cli, memory_r1.agents.system, memory_r1.eval.runner, memory_r1.store;"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules);"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"imported at start-up: {done.stdout.strip()} {done.stderr[-500:]}"
