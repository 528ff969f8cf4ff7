"""Prompt rendering, the backend registry and the model catalogue (no model is run here)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import memory_r1.llm as llm
from memory_r1.errors import ModelError, UnknownModelError
from memory_r1.llm import COMPLETION_STOPS, Message, Prompt, create_model, render_completion
from memory_r1.llm.models import (
    CATALOGUE,
    GEMMA_SIZE,
    file_sha256,
    gguf_metadata,
    resolve_model,
)
from memory_r1.testing import FakeChatModel


def test_render_completion_with_examples_and_prefix() -> None:
    p = Prompt("Answer briefly.", "Q3", examples=(("Q1", "A1"), ("Q2", "A2")), response_prefix='{"')
    assert render_completion(p) == (
        "Answer briefly.\n\n"
        "### Input:\nQ1\n\n### Response:\nA1\n\n"
        "### Input:\nQ2\n\n### Response:\nA2\n\n"
        '### Input:\nQ3\n\n### Response:\n{"'
    )


def test_render_completion_without_system_or_examples() -> None:
    assert render_completion(Prompt("", "  hi  ")) == "### Input:\nhi\n\n### Response:\n"


def test_completion_stops_cut_before_next_block() -> None:
    text = render_completion(Prompt("", "q", examples=(("a", "b"),)))
    # every block after the first starts with one of the stops: generation ends there
    assert text.count("\n### ") >= 2 and "\n### " in COMPLETION_STOPS


def test_messages_order_and_roles() -> None:
    p = Prompt("sys", "u2", examples=(("u1", "a1"),))
    assert p.messages() == [
        Message("system", "sys"),
        Message("user", "u1"),
        Message("assistant", "a1"),
        Message("user", "u2"),
    ]
    assert Prompt("", "u").messages() == [Message("user", "u")]


def test_unknown_backend_lists_known_ones() -> None:
    with pytest.raises(UnknownModelError) as info:
        create_model("nope")
    assert isinstance(info.value, KeyError)
    for name in ("llamacpp", "openai", "hf"):
        assert name in str(info.value)


def test_entry_point_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    ep = EntryPoint("fake", "memory_r1.testing:FakeChatModel", llm.ENTRY_POINT_GROUP)
    monkeypatch.setattr(llm, "entry_points", lambda group: [ep] if group == ep.group else [])
    model = create_model("fake", replies=["hi"])
    assert isinstance(model, FakeChatModel) and isinstance(model, llm.ChatModel)
    assert "fake" in llm.available_backends()


def test_importing_llm_stays_light() -> None:
    code = (
        "import sys, memory_r1.llm, memory_r1.llm.models, memory_r1.llm.openai_compat;"
        "print(sorted(m for m in ('torch', 'transformers', 'llama_cpp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_model_lists_catalogue() -> None:
    with pytest.raises(UnknownModelError) as info:
        resolve_model("gpt-17")
    assert "smollm2-135m" in str(info.value) and "gemma3-270m" in str(info.value)


def test_not_a_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"nope" * 10)
    with pytest.raises(ModelError):
        resolve_model(str(bad))


def test_smollm2_in_catalogue() -> None:
    spec = resolve_model("smollm2-135m")
    path = spec.locate()
    assert path.stat().st_size == 98_362_432
    meta = gguf_metadata(path)
    assert meta["general.architecture"] == "llama" and meta["llama.block_count"] == 30
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    assert spec.chat and spec.context == meta["llama.context_length"] == 8192
    by_path = resolve_model(str(path))  # a path works too, and reads chat from the template
    assert by_path.chat and by_path.context == 8192 and by_path.locate() == path.resolve()


def test_gemma3_assembled_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_R1_HOME", str(tmp_path))
    spec = CATALOGUE["gemma3-270m"]
    path = spec.locate()
    assert path == tmp_path / "models" / "gemma-3-270m-q4_k_m.gguf"
    assert path.stat().st_size == GEMMA_SIZE
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left over
    mtime = path.stat().st_mtime_ns
    assert spec.locate() == path and path.stat().st_mtime_ns == mtime  # not re-assembled
    meta = gguf_metadata(path)
    assert meta["general.architecture"] == "gemma3" and meta["gemma3.block_count"] == 18
    assert "tokenizer.chat_template" not in meta
    by_path = resolve_model(str(path))
    assert not by_path.chat and by_path.stops == COMPLETION_STOPS and by_path.context == 32768


def test_file_sha256_cached_by_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_R1_HOME", str(tmp_path / "home"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    assert file_sha256(f) == hashlib.sha256(b"abc").hexdigest()
    cache = json.loads((tmp_path / "home" / "sha256.json").read_text())
    assert list(cache.values()) == [hashlib.sha256(b"abc").hexdigest()]
    f.write_bytes(b"xyz")  # same size, new mtime: must rehash
    os.utime(f, ns=(1, 1))
    assert file_sha256(f) == hashlib.sha256(b"xyz").hexdigest()
