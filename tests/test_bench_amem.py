"""A-Mem in the benchmark ring: request adaptation, op accounting, the worker protocol, and (when
``.venv-amem`` exists) the real ``a-mem`` library on a scripted backbone and (slow) on a real
``llama_cpp.server`` over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from memory_r1.bench import amem_worker
from memory_r1.bench.amem_system import (
    VENV,
    WORKER,
    adapt_request,
    create_amem,
    hit_to_memory,
    map_ops,
)
from memory_r1.bench.proxy import LLMProxy, llamacpp_sampling
from memory_r1.bench.worker_system import REPO_ROOT
from memory_r1.errors import ConfigError
from memory_r1.types import OpKind

SCHEMA = {"type": "object", "properties": {"keywords": {"type": "array", "items": {"type": "string"}}}}


# -- request adaptation ------------------------------------------------------------------------


def test_adapt_request_is_greedy_and_turns_json_schema_into_llamacpp_json_object() -> None:
    body = {
        "model": "m",
        "temperature": 1.0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}},
    }
    out = adapt_request(body)
    assert out["temperature"] == 0.0 and out["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert body["temperature"] == 1.0  # the caller's dict is not touched
    remote = adapt_request(body, llamacpp=False)  # a real OpenAI-compatible server takes json_schema
    assert remote["response_format"] == body["response_format"] and remote["temperature"] == 0.0
    assert adapt_request({"response_format": {"type": "json_object"}})["response_format"] == {
        "type": "json_object"
    }


def test_proxy_adapts_before_injecting() -> None:
    seen: list[dict] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(
            200, json={"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
        )

    with LLMProxy(
        "http://upstream.test/v1",
        adapt=adapt_request,
        inject=lambda b: {"max_tokens": 7, **llamacpp_sampling(b)},
        transport=httpx.MockTransport(handle),
    ) as proxy:
        httpx.post(
            proxy.url + "/chat/completions",
            json={
                "messages": [],
                "temperature": 1.0,
                "response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}},
            },
        )
        stats = proxy.stats()
    assert seen[0]["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert (seen[0]["temperature"], seen[0]["top_k"], seen[0]["max_tokens"]) == (0.0, 1, 7)  # greedy
    assert (stats.calls, stats.prompt_tokens) == (1, 5)


# -- op accounting -----------------------------------------------------------------------------

ANALYSIS = {
    "kind": "analysis",
    "text": '{"keywords": ["tea"], "context": "drinks", "tags": ["food"]}',
    "error": None,
}


def test_map_ops_note_is_add_and_evolution_updates_and_bad_links() -> None:
    evolution = {"kind": "evolution", "text": '{"should_evolve": true}', "error": None}
    reply = {
        "note": {"id": "n2", "content": "Caroline: I moved to Paris", "links": ["n1", "ghost"]},
        "bad_links": ["ghost"],
        "calls": [ANALYSIS, evolution],
        "updates": [
            {
                "id": "n1",
                "ok": True,
                "content": "Caroline: I like tea",
                "old_context": "drinks",
                "old_tags": ["food"],
                "context": "habits",
                "tags": ["tea", "daily"],
            },
            {"id": "n0", "ok": False, "content": None},
        ],
        "logs": [
            {
                "logger": "agentic_memory.memory_system",
                "level": "ERROR",
                "message": "Failed to update neighbor n0 during evolution",
            }
        ],
        "prints": [],
        "exception": None,
    }
    facts, ops = map_ops(reply)
    assert facts == ["Caroline: I moved to Paris"]
    assert [op.kind for op in ops] == [
        OpKind.ADD,
        OpKind.INVALID,
        OpKind.INVALID,
        OpKind.UPDATE,
        OpKind.INVALID,
    ]
    assert (ops[0].text, ops[0].memory_id) == ("Caroline: I moved to Paris", "n2")
    update = ops[3]
    assert (
        update.memory_id == "n1" and update.text == "Caroline: I like tea [context: habits; tags: tea, daily]"
    )
    assert update.old_text == "Caroline: I like tea [context: drinks; tags: food]"
    errors = [op.error or "" for op in ops if op.kind is OpKind.INVALID]
    assert "Failed to update neighbor" in errors[0] and "'ghost'" in errors[1] and "n0" in errors[2]
    assert ops[2].raw == '{"should_evolve": true}'


def test_map_ops_failed_analysis_and_evolution_are_invalid_once() -> None:
    bad_analysis = {"kind": "analysis", "text": '{"keywords": [', "error": None}
    failed_evolution = {"kind": "evolution", "text": None, "error": "APIError: boom"}
    reply = {
        "note": {"id": "n1", "content": "Mel: hi"},
        "calls": [bad_analysis, failed_evolution],
        "logs": [
            {
                "logger": "agentic_memory.memory_system",
                "level": "ERROR",
                "message": "Error in memory evolution: boom",
            }
        ],
        "prints": ["Error analyzing content: Expecting value"],
    }
    _, ops = map_ops(reply)
    assert [op.kind for op in ops] == [OpKind.ADD, OpKind.INVALID, OpKind.INVALID]
    assert "not JSON" in (ops[1].error or "") and "memory evolution" in (ops[2].error or "")
    _, ops = map_ops({"note": {"id": "n", "content": "x"}, "calls": [{"kind": "analysis", "text": "{}"}]})
    assert [op.kind for op in ops] == [OpKind.ADD, OpKind.INVALID]  # parsed, but nothing in it
    facts, ops = map_ops(
        {
            "note": None,
            "exception": "ValueError: no key",
            "calls": [{"kind": "analysis", "error": "APIError: x"}],
        }
    )
    assert facts == [] and [op.kind for op in ops] == [OpKind.INVALID, OpKind.INVALID]
    assert "add_note raised ValueError" in (ops[0].error or "") and ops[0].raw == "APIError: x"
    assert [(op.kind, op.error) for op in map_ops({})[1]] == [(OpKind.NOOP, "no operations")]


def test_hit_to_memory_keeps_the_session_date_and_note_fields() -> None:
    hit = {
        "id": "n1",
        "content": "Caroline: I like tea",
        "timestamp": "1:56 pm on 8 May, 2023",
        "context": "drinks",
        "keywords": ["tea"],
        "tags": ["food"],
        "links": [],
        "distance": 0.4,
    }
    m = hit_to_memory(hit, "Caroline")
    assert (m.id, m.text, m.owner, m.timestamp) == (
        "n1",
        "Caroline: I like tea",
        "Caroline",
        "1:56 pm on 8 May, 2023",
    )
    assert m.metadata["distance"] == 0.4 and m.metadata["context"] == "drinks"


# -- wiring without the a-mem venv -------------------------------------------------------------


def test_registry_and_missing_venv_is_a_config_error(tmp_path: Path) -> None:
    from memory_r1.bench.context import BenchContext
    from memory_r1.bench.systems import SYSTEMS, create_system
    from memory_r1.config import ModelConfig

    assert SYSTEMS["a-mem"] == "memory_r1.bench.amem_system:create_amem"
    ctx = BenchContext(
        llm=ModelConfig(), embedder="hash", out_dir=tmp_path, options={"venv": str(tmp_path / "absent")}
    )
    with pytest.raises(ConfigError, match=r"a-mem venv missing: run `make amem-venv`"):
        create_system("a-mem", ctx)


def test_worker_protocol_errors_are_replies_not_crashes() -> None:
    requests = [
        {"id": 1, "op": "nope"},
        {"id": 2, "op": "search", "bank": "b", "query": "q"},
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


def test_worker_stubs_block_any_use_of_absent_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "memory_r1_absent_torch_stack"
    monkeypatch.setattr(amem_worker, "STUBBED", (name, "json"))  # json exists: never stubbed
    monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        assert amem_worker.install_stubs() == [name]
        from memory_r1_absent_torch_stack import SentenceTransformer  # type: ignore[import-not-found]

        with pytest.raises(RuntimeError, match="no model is loaded or downloaded"):
            SentenceTransformer("all-MiniLM-L6-v2")
        with pytest.raises(AttributeError):
            sys.modules[name].__version__  # noqa: B018
    finally:
        sys.modules.pop(name, None)


def test_call_kind_tells_a_mem_prompts_apart() -> None:
    assert amem_worker.call_kind("Generate a structured analysis of the following content") == "analysis"
    assert amem_worker.call_kind("You are an AI memory evolution agent responsible") == "evolution"
    assert amem_worker.call_kind("hello") == "other"


# -- the real library --------------------------------------------------------------------------


def _venv_or_skip() -> None:
    python = REPO_ROOT / VENV / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{python} is absent: build it with `make amem-venv`")


class _ScriptedUpstream:
    """A loopback OpenAI-compatible server answering chat calls from a script, in order."""

    def __init__(self, replies: list[dict]) -> None:
        self.replies, self.bodies = list(replies), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                content = json.dumps(outer.replies.pop(0) if outer.replies else {})
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


def test_real_amem_notes_evolution_and_resume(tmp_path: Path, tiny_locomo_path: Path) -> None:
    """Real a-mem 0.2.6 on a scripted OpenAI-compatible backbone: the note, a neighbour update and a
    hallucinated link become our ops, metered per turn; answers split hits by speaker; resume."""
    _venv_or_skip()
    from memory_r1.bench.context import BenchContext
    from memory_r1.config import ModelConfig
    from memory_r1.data.locomo import load_locomo
    from memory_r1.testing import FakeChatModel

    conv = load_locomo(tiny_locomo_path)[0]
    turns = conv.turns()[:3]
    analysis = {"keywords": ["career"], "context": "Talking about plans", "tags": ["life"]}
    script = [
        analysis,  # turn 1: analysis only (an empty memory has nothing to evolve against)
        analysis,
        {
            "should_evolve": True,
            "actions": ["strengthen", "update_neighbor"],
            "suggested_connections": ["no-such-id"],
            "tags_to_update": ["plans"],
            "new_context_neighborhood": ["Plans and careers"],
            "new_tags_neighborhood": [["career", "plans"]],
        },
        analysis,
        {
            "should_evolve": False,
            "actions": [],
            "suggested_connections": [],
            "tags_to_update": [],
            "new_context_neighborhood": [],
            "new_tags_neighborhood": [],
        },
    ]
    upstream = _ScriptedUpstream(script)
    answer = FakeChatModel(["**Answer:** counseling"])

    def ctx(models: dict) -> BenchContext:
        return BenchContext(
            llm=ModelConfig(backend="openai", model="stub", base_url=upstream.url),
            embedder="hash",
            out_dir=tmp_path,
            models=models,
            options={"max_tokens": 77},
        )

    try:
        system = create_amem(ctx({"answer": answer}))
        try:
            assert system.version == "0.2.6" and "proxy -> " + upstream.url in system.describe()["llm"]
            results = [system.ingest_turn(conv.sample_id, t) for t in turns]
            reply, search_s = system.answer(conv.sample_id, "What career?", conv.speakers)
            size = system.bank_size(conv.sample_id)
        finally:
            system.close()
        again = create_amem(ctx({"answer": answer}))  # resume: a new worker on the same folder
        try:
            assert again.done_turns(conv.sample_id) == {t.dia_id for t in turns}
            assert again.bank_size(conv.sample_id) == size == 3
            a, b = again.search(conv.sample_id, "career", conv.speakers)
        finally:
            again.close()
    finally:
        upstream.close()
    kinds = [[op.kind.value for op in r.ops] for r in results]
    assert kinds == [["ADD"], ["ADD", "INVALID", "UPDATE"], ["ADD"]]
    assert "no-such-id" in (results[1].ops[1].error or "")
    assert results[1].ops[2].text.endswith("[context: Plans and careers; tags: career, plans]")
    assert [(r.llm_calls, r.tokens_in, r.tokens_out) for r in results] == [
        (1, 100, 10),
        (2, 200, 20),
        (2, 200, 20),
    ]
    assert reply.answer == "counseling" and search_s > 0
    prompt = answer.calls[0][0].user
    assert all(f"{t.date_time}: {t.render()}" in prompt for t in turns)
    owners = {m.owner for m in a} | {m.owner for m in b}
    assert len(a) + len(b) == 3 and all(m.owner == conv.speakers[0] for m in a)
    assert owners == {t.speaker for t in turns}
    sent = upstream.bodies[0]  # a remote server keeps json_schema; greedy and max_tokens are ours
    assert sent["response_format"]["type"] == "json_schema" and sent["temperature"] == 0.0
    assert sent["max_tokens"] == 77 and "repeat_penalty" not in sent
    log = (tmp_path / "a-mem" / "worker.log").read_text()
    assert "huggingface" not in log.lower()


@pytest.fixture(scope="module")
def answer_model():
    pytest.importorskip("llama_cpp.server")
    from memory_r1.llm import create_model

    return create_model("llamacpp", model="smollm2-135m", n_threads=1)


@pytest.mark.slow
def test_real_amem_end_to_end(tmp_path: Path, tiny_locomo_path: Path, answer_model) -> None:
    """a-mem 0.2.6 in .venv-amem on SmolLM2 (llama_cpp.server, grammar-constrained JSON) via the
    proxy, run by the runner on 3 turns and 1 question."""
    _venv_or_skip()
    from memory_r1.bench.context import BenchContext
    from memory_r1.config import ModelConfig
    from memory_r1.data.locomo import load_locomo
    from memory_r1.eval.runner import EvalLimits, LocomoEval, read_jsonl

    conv = load_locomo(tiny_locomo_path)[0]
    out = tmp_path / "amem"
    ctx = BenchContext(
        llm=ModelConfig(backend="llamacpp", model="smollm2-135m"),
        embedder="hash",
        out_dir=out,
        models={"answer": answer_model},
        options={"max_tokens": 160, "n_threads": 1},
    )
    system = create_amem(ctx)
    try:
        info = system.describe()
        assert "llama_cpp.server" in info["llm"] and "json_object" in info["response_format"]
        scores = LocomoEval(system, out, progress=False, run_config={"system": info}).run(
            [conv], EvalLimits(max_turns=3, max_questions=1)
        )
        size = system.bank_size(conv.sample_id)
    finally:
        system.close()
    ingest = read_jsonl(out / "ingest.jsonl")
    assert [r["dia_id"] for r in ingest] == ["D1:1", "D1:2", "D1:3"]
    assert [r["llm_calls"] for r in ingest] == [1, 2, 2]  # analysis; analysis + evolution
    for row in ingest:
        assert row["tokens_in"] > 100 and row["llm_s"] > 0 and row["ops"]
        assert set(row["ops"]) <= {"ADD", "UPDATE", "NOOP", "INVALID"}
        assert len(row["invalid"]) == row["ops"].count("INVALID")
    (pred,) = read_jsonl(out / "predictions.jsonl")
    assert pred["tokens_in"] > 50 and pred["llm_calls"] == 1
    assert scores["bank_size"] == {conv.sample_id: size} and size == 3
    assert json.loads((out / "run.json").read_text())["system"]["a-mem"] == "0.2.6"
    assert (out / "a-mem" / "chroma").is_dir()
