"""Mem0 in the benchmark ring: the metering proxy, the op accounting, and (slow) the real
``mem0ai`` library in its own venv on a real ``llama_cpp.server`` over loopback."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from memory_r1.bench.mem0_system import (
    PINS,
    WORKER,
    create_mem0,
    create_mem0_latest,
    hit_to_memory,
    map_ops,
)
from memory_r1.bench.proxy import LLMProxy, ProxyStats, llamacpp_sampling
from memory_r1.bench.worker_system import REPO_ROOT
from memory_r1.errors import ConfigError
from memory_r1.store.embedders import HashEmbedder
from memory_r1.types import OpKind

# -- proxy -------------------------------------------------------------------------------------


def _stub_upstream(seen: list[dict]) -> httpx.MockTransport:
    """An OpenAI-compatible upstream: 400 when asked to, else a reply with usage 11 / 3."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append({"path": request.url.path, "auth": request.headers.get("authorization"), **body})
        if body.get("fail"):
            return httpx.Response(400, json={"error": {"message": "too long"}})
        return httpx.Response(
            200,
            json={
                "choices": [{"message": {"role": "assistant", "content": '{"facts": []}'}}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 3},
            },
        )

    return httpx.MockTransport(handle)


def test_proxy_forwards_chat_and_counts_calls_and_tokens() -> None:
    seen: list[dict] = []
    with LLMProxy(
        "http://upstream.test/v1",
        api_key="real-key",
        inject=llamacpp_sampling,
        transport=_stub_upstream(seen),
    ) as proxy:
        before = proxy.stats()
        url = proxy.url + "/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
        r1 = httpx.post(url, json=body, headers={"Authorization": "Bearer dummy"})
        r2 = httpx.post(url, json={**body, "top_k": 5})  # what the client sent wins
        bad = httpx.post(url, json={**body, "fail": True})
        spent = proxy.stats() - before
    assert r1.status_code == r2.status_code == 200 and r1.json()["usage"]["prompt_tokens"] == 11
    assert bad.status_code == 400 and "too long" in bad.text  # passed through unchanged
    assert (spent.calls, spent.prompt_tokens, spent.completion_tokens) == (3, 22, 6)
    assert spent.http_errors == 1 and spent.unreachable == 0 and spent.seconds > 0
    assert seen[0]["path"] == "/v1/chat/completions" and seen[0]["auth"] == "Bearer real-key"
    assert (seen[0]["top_k"], seen[0]["repeat_penalty"], seen[0]["min_p"]) == (1, 1.0, 0.0)
    assert seen[1]["top_k"] == 5


def test_llamacpp_sampling_is_greedy_only_at_temperature_zero() -> None:
    assert llamacpp_sampling({"temperature": 0.0})["top_k"] == 1
    assert llamacpp_sampling({"temperature": 0.7}) == {"repeat_penalty": 1.0, "min_p": 0.0, "top_k": 0}


def test_proxy_serves_embeddings_from_our_embedder() -> None:
    emb = HashEmbedder()
    with LLMProxy(None, emb) as proxy:
        url = proxy.url + "/embeddings"
        many = httpx.post(url, json={"input": ["Alice likes tea", "Bob"], "model": "x", "dimensions": 1536})
        one = httpx.post(url, json={"input": "Alice likes tea", "encoding_format": "base64"})
        bad = httpx.post(url, json={"input": [1, 2]})
        models = httpx.get(proxy.url + "/models")
        stats = proxy.stats()
    data = many.json()["data"]
    assert [d["index"] for d in data] == [0, 1] and len(data[0]["embedding"]) == emb.dim  # not 1536
    np.testing.assert_allclose(
        np.array([d["embedding"] for d in data]), emb.embed(["Alice likes tea", "Bob"]), rtol=1e-6
    )
    decoded = np.frombuffer(base64.b64decode(one.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, emb.embed(["Alice likes tea"])[0], rtol=1e-6)
    assert bad.status_code == 400 and models.json()["data"][0]["id"] == "backbone"
    assert (stats.embed_calls, stats.embed_texts, stats.calls) == (2, 3, 0)


def test_proxy_reports_an_unreachable_upstream() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with LLMProxy(dead) as proxy:
        r = httpx.post(proxy.url + "/chat/completions", json={"messages": []})
        stats = proxy.stats()
    assert r.status_code == 502 and "unreachable" in r.text
    assert (stats.calls, stats.unreachable, stats.http_errors) == (1, 1, 0)


def test_proxy_stats_subtract() -> None:
    assert ProxyStats(calls=3, seconds=2.5, prompt_tokens=9) - ProxyStats(calls=1, seconds=0.5) == ProxyStats(
        calls=2, seconds=2.0, prompt_tokens=9
    )


# -- op accounting -----------------------------------------------------------------------------


def test_map_ops_classic_counts_every_action_once() -> None:
    reply = {
        "calls": [{"text": '{"facts": ["a", "b"]}'}, {"text": "{...}"}],
        "facts": ["Likes tea", "Moved to Paris"],
        "results": [
            {"id": "u1", "memory": "Likes tea", "event": "ADD"},
            {"id": "u2", "memory": "Lives in Paris", "event": "UPDATE", "previous_memory": "Lives in Rome"},
            {"id": "u3", "memory": "Lives in Rome", "event": "DELETE"},
        ],
        "actions": [
            {"id": "0", "text": "Likes tea", "event": "ADD"},
            {"id": "1", "text": "Lives in Paris", "event": "UPDATE"},
            {"id": "2", "text": "Lives in Rome", "event": "DELETE"},
            {"id": "3", "text": "Has a cat", "event": "NONE"},
            {"id": "9", "text": "Hallucinated id", "event": "UPDATE"},  # failed: logged below
            {"id": "4", "text": "No event"},
            {"id": "5", "text": "", "event": "ADD"},
            "not an object",
        ],
        "logs": [
            {
                "logger": "mem0.memory.main",
                "level": "ERROR",
                "message": "Error processing memory action: {...}, Error: '9'",
            },
            {"logger": "mem0.utils.spacy_models", "level": "WARNING", "message": "spaCy missing"},
        ],
    }
    facts, ops = map_ops(reply, "classic")
    kinds = [op.kind for op in ops]
    assert facts == ["Likes tea", "Moved to Paris"]
    assert kinds.count(OpKind.ADD) == kinds.count(OpKind.UPDATE) == kinds.count(OpKind.DELETE) == 1
    assert kinds.count(OpKind.NOOP) == 1 and kinds.count(OpKind.INVALID) == 4
    update = next(op for op in ops if op.kind is OpKind.UPDATE)
    assert (update.memory_id, update.old_text) == ("u2", "Lives in Rome")
    errors = " | ".join(op.error or "" for op in ops if op.kind is OpKind.INVALID)
    assert "Error processing memory action" in errors and "unknown event None" in errors
    assert "ADD without text" in errors and "spaCy" not in errors


def test_map_ops_add_only_dedup_and_missing_text() -> None:
    reply = {
        "calls": [{"text": "{}"}],
        "facts": ["Likes tea", "Likes tea"],
        "results": [{"id": "u1", "memory": "Likes tea", "event": "ADD"}],
        "actions": [{"text": "Likes tea"}, {"text": "Known already"}, {"attributed_to": "user"}],
    }
    _, ops = map_ops(reply, "add-only")
    assert [op.kind for op in ops] == [OpKind.ADD, OpKind.NOOP, OpKind.INVALID]
    assert "de-duplication" in (ops[1].error or "")


def test_map_ops_failures_are_invalid_once_and_empty_turns_noop() -> None:
    raised = {
        "exception": "LLMError: LLM extraction failed: boom",
        "calls": [{"error": "APIError: boom"}],
        "logs": [{"logger": "mem0.memory.main", "level": "ERROR", "message": "LLM extraction failed: boom"}],
    }
    facts, ops = map_ops(raised, "add-only")
    assert facts == [] and [op.kind for op in ops] == [OpKind.INVALID] and ops[0].raw == "APIError: boom"
    unparsed = {
        "facts": None,
        "calls": [{"text": '{"facts": ["a'}],
        "logs": [
            {
                "logger": "mem0.memory.main",
                "level": "ERROR",
                "message": "Error in new_retrieved_facts: Unterminated string",
            }
        ],
    }
    assert [op.kind for op in map_ops(unparsed, "classic")[1]] == [OpKind.INVALID]
    _, ops = map_ops({"facts": [], "calls": [{"text": '{"facts": []}'}]}, "classic")
    assert [(op.kind, op.error) for op in ops] == [(OpKind.NOOP, "no facts")]
    _, ops = map_ops({"facts": ["x"], "actions": []}, "classic")
    assert [(op.kind, op.error) for op in ops] == [(OpKind.NOOP, "no operations")]


def test_hit_to_memory_keeps_the_session_timestamp() -> None:
    hit = {
        "id": "u1",
        "memory": "Likes tea",
        "score": 0.8,
        "created_at": "2026-01-02T03:04:05+00:00",
        "metadata": {"timestamp": "1:56 pm on 8 May, 2023", "dia_id": "D1:1"},
    }
    m = hit_to_memory(hit, "Caroline")
    assert (m.id, m.text, m.owner, m.timestamp) == ("u1", "Likes tea", "Caroline", "1:56 pm on 8 May, 2023")
    assert m.created_at == m.updated_at > 1.7e9 and m.metadata["score"] == 0.8
    assert hit_to_memory({"id": 1, "memory": "x"}, "B").created_at == 0.0


# -- wiring without Mem0 -----------------------------------------------------------------------


def test_missing_venv_is_a_config_error(tmp_path: Path) -> None:
    from memory_r1.bench.context import BenchContext
    from memory_r1.config import ModelConfig

    ctx = BenchContext(
        llm=ModelConfig(), embedder="hash", out_dir=tmp_path, options={"venv": str(tmp_path / "absent")}
    )
    with pytest.raises(ConfigError, match=r"mem0 venv missing: run `make mem0-venv`"):
        create_mem0(ctx)
    with pytest.raises(ConfigError, match=r"make mem0-latest-venv"):
        create_mem0_latest(ctx)


def test_worker_protocol_errors_are_replies_not_crashes() -> None:
    # The worker imports mem0 lazily, so the protocol itself runs under any Python.
    requests = [
        {"id": 1, "op": "nope"},
        {"id": 2, "op": "search", "bank": "b", "speaker": "s", "query": "q"},
        {"id": 3, "op": "close"},
    ]
    out = subprocess.run(
        [sys.executable, "-I", str(WORKER)],
        input="\n".join(map(json.dumps, requests)) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    replies = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["id"], r["ok"]) for r in replies] == [(1, False), (2, False), (3, True)]
    assert "op_nope" in replies[0]["error"] and "send init first" in replies[1]["error"]


# -- the real thing (slow) ---------------------------------------------------------------------


def _venv_or_skip(system: str) -> None:
    python = REPO_ROOT / PINS[system].venv / "bin" / "python"
    if not python.exists():
        target = "mem0-venv" if system == "mem0" else "mem0-latest-venv"
        pytest.skip(f"{python} is absent: build it with `make {target}` (make test does for mem0)")


class _ScriptedUpstream:
    """A loopback OpenAI-compatible server answering chat calls from a script, in order."""

    def __init__(self, replies: list[dict]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.replies, self.bodies = list(replies), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                content = json.dumps(outer.replies.pop(0)) if outer.replies else '{"facts": []}'
                payload = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "stub",
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": content},
                            }
                        ],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_real_mem0_events_map_to_ops(tmp_path: Path, tiny_locomo_path: Path) -> None:
    """Real mem0ai 1.0.11 on a scripted OpenAI-compatible backbone (``backend="openai"``): its
    ADD / UPDATE / NONE / DELETE and a hallucinated id become our ops, metered per turn."""
    _venv_or_skip("mem0")
    from memory_r1.bench.context import BenchContext
    from memory_r1.config import ModelConfig
    from memory_r1.data.locomo import load_locomo
    from memory_r1.testing import FakeChatModel

    script = [  # (extraction, update) per turn
        {"facts": ["Lives in Rome"]},
        {"memory": [{"id": "0", "text": "Lives in Rome", "event": "ADD"}]},
        {"facts": ["Lives in Paris", "Has a cat"]},
        {
            "memory": [
                {"id": "0", "text": "Lives in Paris", "event": "UPDATE", "old_memory": "Lives in Rome"},
                {"id": "1", "text": "Has a cat", "event": "ADD"},
            ]
        },
        {"facts": ["Has a cat"]},
        {
            "memory": [
                {"id": "0", "text": "Lives in Paris", "event": "NONE"},
                {"id": "7", "text": "Has a dog", "event": "UPDATE"},  # no memory 7: Mem0 logs, skips
                {"id": "1", "text": "Has a cat", "event": "DELETE"},
            ]
        },
    ]
    upstream = _ScriptedUpstream(script)
    conv = load_locomo(tiny_locomo_path)[0]
    turns = [t for t in conv.turns() if t.speaker == conv.speaker_a][:3]
    answer = FakeChatModel(["**Answer:** Paris"])
    ctx = BenchContext(
        llm=ModelConfig(backend="openai", model="stub", base_url=upstream.url),
        embedder="hash",
        out_dir=tmp_path,
        models={"answer": answer},
    )
    try:
        system = create_mem0(ctx)
        try:
            results = [system.ingest_turn(conv.sample_id, t) for t in turns]
            reply, search_s = system.answer(conv.sample_id, "Where does Caroline live?", conv.speakers)
            size = system.bank_size(conv.sample_id)
            assert "proxy -> " + upstream.url in system.describe()["llm"]
        finally:
            system.close()
    finally:
        upstream.close()
    kinds = [sorted(op.kind.value for op in r.ops) for r in results]
    assert kinds == [["ADD"], ["ADD", "UPDATE"], ["DELETE", "INVALID", "NOOP"]]
    assert results[1].facts == ["Lives in Paris", "Has a cat"]
    update = next(op for op in results[1].ops if op.kind is OpKind.UPDATE)
    assert update.text == "Lives in Paris" and update.old_text == "Lives in Rome"
    assert [(r.llm_calls, r.tokens_in, r.tokens_out) for r in results] == [(2, 200, 20)] * 3
    assert size == 1 and reply.answer == "Paris" and search_s > 0
    # The one memory left (which one DELETE "1" hit depends on Mem0's retrieval order) reaches
    # our answer prompt with the session timestamp of the turn that wrote it.
    prompt = answer.calls[0][0].user
    assert any(f"{turns[1].date_time}: {text}" in prompt for text in ("Lives in Paris", "Has a cat"))
    sent = upstream.bodies[0]  # what Mem0 sent upstream: greedy, JSON mode, nothing injected
    assert sent["temperature"] == 0.0 and sent["response_format"] == {"type": "json_object"}
    assert "repeat_penalty" not in sent


@pytest.fixture(scope="module")
def answer_model():
    pytest.importorskip("llama_cpp.server")
    from memory_r1.llm import create_model

    # One thread: llama.cpp threads spin on barriers and collapse on a CPU shared with other jobs.
    return create_model("llamacpp", model="smollm2-135m", n_threads=1)


def _ctx(out: Path, answer_model, **options):
    from memory_r1.bench.context import BenchContext
    from memory_r1.config import ModelConfig

    return BenchContext(
        llm=ModelConfig(backend="llamacpp", model="smollm2-135m"),
        embedder="hash",
        out_dir=out,
        models={"answer": answer_model},
        options={"max_tokens": 96, "n_threads": 1, **options},
    )


@pytest.mark.slow
def test_real_mem0_classic_end_to_end(tmp_path: Path, tiny_locomo_path: Path, answer_model) -> None:
    """mem0ai 1.0.11 in .venv-mem0 on SmolLM2 (llama_cpp.server) via the proxy, run by the runner."""
    _venv_or_skip("mem0")
    from memory_r1.data.locomo import load_locomo
    from memory_r1.eval.runner import EvalLimits, LocomoEval, read_jsonl

    conv = load_locomo(tiny_locomo_path)[0]  # conv-26; D1:3 answers "What career ..."
    out = tmp_path / "mem0"
    system = create_mem0(_ctx(out, answer_model))
    try:
        info = system.describe()
        assert (system.version, info["pipeline"]) == ("1.0.11", "classic")
        assert "llama_cpp.server" in info["llm"] and "--host 127.0.0.1" in info["llm"]
        scores = LocomoEval(system, out, progress=False, run_config={"system": info}).run(
            [conv], EvalLimits(max_turns=3, max_questions=1)
        )
        size = system.bank_size(conv.sample_id)
    finally:
        system.close()
    ingest = read_jsonl(out / "ingest.jsonl")
    assert [r["dia_id"] for r in ingest] == ["D1:1", "D1:2", "D1:3"]
    for row in ingest:  # every turn: at least the extraction call, metered, and >= 1 op
        assert row["llm_calls"] >= 1 and row["tokens_in"] > 500 and row["llm_s"] > 0 and row["ops"]
        assert set(row["ops"]) <= {"ADD", "UPDATE", "DELETE", "NOOP", "INVALID"}
        assert len(row["invalid"]) == row["ops"].count("INVALID")
    (pred,) = read_jsonl(out / "predictions.jsonl")
    assert pred["tokens_in"] > 50 and pred["tokens_out"] > 0 and pred["llm_calls"] == 1
    assert scores["bank_size"] == {conv.sample_id: size} and size >= 0
    store = out / "mem0"
    assert (store / "qdrant").is_dir() and (store / "history.db").is_file()
    assert json.loads((out / "run.json").read_text())["system"]["mem0ai"] == "1.0.11"
    assert not list((store / "home").glob(".mem0*"))  # MEM0_DIR kept it out of HOME
    # Resume: a new instance on the same folder knows the turns and finds the same bank.
    again = create_mem0(_ctx(out, answer_model))
    try:
        assert again.done_turns(conv.sample_id) == {"D1:1", "D1:2", "D1:3"}
        assert again.bank_size(conv.sample_id) == size
    finally:
        again.close()


@pytest.mark.slow
def test_real_mem0_latest_is_add_only_and_overflows_smollm2(
    tmp_path: Path, tiny_locomo_path: Path, answer_model
) -> None:
    """mem0ai 2.2.1: its ~8.6k-token extraction prompt does not fit SmolLM2's 8,192 tokens; the
    failure is one metered call and one INVALID op, never a silent empty turn."""
    _venv_or_skip("mem0-latest")
    from memory_r1.data.locomo import load_locomo

    conv = load_locomo(tiny_locomo_path)[0]
    system = create_mem0_latest(_ctx(tmp_path, answer_model))
    try:
        assert (system.version, system.describe()["pipeline"]) == ("2.2.1", "add-only")
        result = system.ingest_turn(conv.sample_id, conv.turns()[0])
        answer, _ = system.answer(conv.sample_id, conv.qa[0].question, conv.speakers)
    finally:
        system.close()
    assert result.llm_calls == 1 and [op.kind for op in result.ops] == [OpKind.INVALID]
    assert "maximum context length" in (result.ops[0].error or "")
    assert answer.completion.prompt_tokens > 0
