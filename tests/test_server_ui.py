"""``GET /ui``, the read-only audit page: what it shows (owners, memories, every operation with old
and new text), that it escapes everything and shows a key only its owners — and the page in a
real headless Debian Chromium against a real ``memory-r1 serve`` (DOM text + a screenshot)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from memory_r1 import Memory
from memory_r1.server.auth import ApiKeys
from memory_r1.server.rest import create_app
from server_support import fast_memory, served, write_config

EVIL = "<script>alert('x')</script> & \"quotes\""
REPORT_PNG = Path(__file__).resolve().parents[1] / "reports" / "ui.png"


def populate(memory: Memory) -> None:
    """Alice: ADD, UPDATE, NOOP, INVALID, an ADD of markup, then its DELETE; Bob: one ADD."""
    for text in (
        "I live in Paris",
        "I live in Paris -> I live in Lyon",
        "again I live in Lyon",
        "bogus",
        EVIL,
    ):
        memory.add(text, user_id="alice")
    memory.add(f"forget {EVIL}", user_id="alice")
    memory.add("Bob's secret plan", user_id="bob", infer=False)


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    with fast_memory(tmp_path / "m.sqlite") as m:
        populate(m)
        yield m


def _text(html: str) -> str:
    """The page's visible text, tags dropped and entities decoded, whitespace collapsed."""
    return " ".join(
        unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>", "", html, flags=re.S))).split()
    )


def test_the_page_lists_owners_memories_and_every_operation(memory: Memory) -> None:
    with TestClient(create_app(memory)) as c:
        r = c.get("/ui")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert (
        "script-src" not in r.headers["content-security-policy"]
        and "default-src 'none'" in r.headers["content-security-policy"]
    )
    text = _text(r.text)
    for owner in ("user:alice", "user:bob"):
        assert owner in text
    assert "I live in Lyon" in text and "Bob's secret plan" in text
    assert re.search(r"UPDATE I live in Paris I live in Lyon", text)  # event, old text, new text
    assert re.search(r"ADD I live in Paris", text) and "NOOP" in text
    assert "INVALID error: UPDATE with unknown id; raw:" in text and "dia_id" not in text
    assert re.search(r"DELETE " + re.escape(EVIL), text)  # the deleted memory keeps its history
    assert "ADD 2, UPDATE 1, NOOP 1, INVALID 1, DELETE 1" in text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text)


def test_everything_is_escaped(memory: Memory) -> None:
    with TestClient(create_app(memory)) as c:
        html = c.get("/ui").text
    assert (
        "<script>" not in html
        and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in html
    )


def test_with_keys_a_key_sees_only_its_owners(memory: Memory) -> None:
    keys = ApiKeys({"key-alice": ["user:alice"], "key-bob": ["user:bob"]})
    with TestClient(create_app(memory, keys=keys)) as c:
        refused = c.get("/ui")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert c.get("/ui", auth=("anyone", "wrong")).status_code == 401
        alice = _text(c.get("/ui", auth=("anyone", "key-alice")).text)
        bob = _text(c.get("/ui", headers={"Authorization": "Bearer key-bob"}).text)
        only = _text(c.get("/ui", params={"owner": "user:bob"}, auth=("", "key-alice")).text)
    assert "I live in Lyon" in alice and "user:bob" not in alice and "Bob's secret" not in alice
    assert "Bob's secret plan" in bob and "user:alice" not in bob and "Lyon" not in bob
    assert "Bob's secret" not in only and "0 owner(s)" in only


def test_owner_filter_and_an_empty_store(tmp_path: Path, memory: Memory) -> None:
    with TestClient(create_app(memory)) as c:
        text = _text(c.get("/ui", params={"owner": "user:bob"}).text)
    assert "Bob's secret plan" in text and "Lyon" not in text
    with fast_memory(tmp_path / "empty.sqlite") as empty, TestClient(create_app(empty)) as c:
        assert "No memories yet." in c.get("/ui").text


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]
    return subprocess.run(
        ["chromium", *flags, *args], capture_output=True, text=True, timeout=120, check=True
    )


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (make browser)")
def test_the_page_in_headless_chromium(tmp_path: Path) -> None:
    store = tmp_path / "m.sqlite"
    with fast_memory(store) as m:
        populate(m)
    cfg = write_config(tmp_path, store)
    with served(["--config", str(cfg)], tmp_path / "serve.log") as url:
        dom = _chromium("--virtual-time-budget=5000", "--dump-dom", f"{url}/ui").stdout
        png = tmp_path / "ui.png"
        _chromium(f"--screenshot={png}", "--window-size=1280,1900", f"{url}/ui")
    text = _text(dom)
    assert "memory-r1 audit" in text and "user:alice" in text and "user:bob" in text
    assert "UPDATE I live in Paris I live in Lyon" in text and "NOOP" in text and "INVALID" in text
    assert "DELETE " + EVIL in text and "<script>alert" not in dom
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    REPORT_PNG.parent.mkdir(exist_ok=True)
    shutil.copyfile(png, REPORT_PNG)
