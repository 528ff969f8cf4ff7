"""The OpenAI-compatible client: offline against httpx.MockTransport, then against a REAL
``python -m llama_cpp.server`` serving SmolLM2 (slow)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest

from memory_r1.errors import ConfigError, ModelError
from memory_r1.llm import Prompt, Sampling, create_model
from memory_r1.llm.openai_compat import OpenAICompatModel

QA = Prompt(
    "Answer the question using the memories. Be brief.",
    "Memories: Caroline moved from Sweden.\nQuestion: Where did Caroline move from?",
)
SCHEMA = {
    "type": "object",
    "properties": {"op": {"type": "string", "enum": ["ADD", "NOOP"]}, "text": {"type": "string"}},
    "required": ["op", "text"],
}


def _reply(text: str, chat: bool = True) -> dict[str, Any]:
    choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
    return {
        "choices": [{**choice, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    }


def _mock(handler: Any, **kw: Any) -> OpenAICompatModel:
    kw.setdefault("backoff", 0.0)
    return OpenAICompatModel("http://mock/v1", "m", api_key="k", transport=httpx.MockTransport(handler), **kw)


# -- offline: request shapes, retries, errors ------------------------------------------------


def test_chat_request_shape_and_json_schema_modes() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/chat/completions"
        assert request.headers["authorization"] == "Bearer k"
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=_reply("Sweden"))

    sampling = Sampling(max_tokens=5, json_schema=SCHEMA)
    out = _mock(handler).complete(Prompt("s", "u", response_prefix="{"), sampling)
    assert (out.text, out.prompt_tokens, out.completion_tokens) == ("Sweden", 7, 3)
    body = seen[0]
    assert body["messages"] == [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert body["max_tokens"] == 5 and body["temperature"] == 0.0 and "stop" not in body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA},
    }
    _mock(handler, schema_mode="json_object").complete(QA, sampling)
    assert seen[1]["response_format"] == {"type": "json_object", "schema": SCHEMA}
    _mock(handler, schema_mode="none").complete(QA, sampling)
    assert "response_format" not in seen[2]
    with pytest.raises(ConfigError):
        _mock(handler, schema_mode="grammar")  # type: ignore[arg-type]


def test_completion_endpoint_renders_text_and_cuts_stops() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert request.url.path == "/v1/completions"
        assert body["prompt"].endswith("### Response:\nIt is")  # prefix is in the prompt
        assert "\n" in body["stop"] and "\n### " in body["stop"]
        return httpx.Response(200, json=_reply(" Paris\n### Input: more", chat=False))

    model = _mock(handler, chat=False)
    out = model.complete(Prompt("", "Capital?", response_prefix="It is"), Sampling(stop=("\n",)))
    assert out.text == " Paris" and out.finish_reason == "stop"


def test_retries_5xx_then_succeeds() -> None:
    calls = iter([503, 429, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(calls)
        return httpx.Response(status, json=_reply("ok") if status == 200 else {"error": "busy"})

    assert _mock(handler).complete(QA, Sampling()).text == "ok"


def test_gives_up_with_status_and_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="engine exploded")

    with pytest.raises(ModelError, match=r"4 attempts.*HTTP 500: engine exploded"):
        _mock(handler).complete(QA, Sampling())


def test_client_error_is_not_retried() -> None:
    count = []

    def handler(request: httpx.Request) -> httpx.Response:
        count.append(1)
        return httpx.Response(400, text="bad max_tokens")

    with pytest.raises(ModelError, match="HTTP 400: bad max_tokens"):
        _mock(handler).complete(QA, Sampling())
    assert len(count) == 1


def test_dead_port_is_a_clear_model_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        OpenAICompatModel(f"http://127.0.0.1:{port}", "m", retries=1, backoff=0.01) as model,
        pytest.raises(ModelError, match=rf"127.0.0.1:{port}.*2 attempts.*ConnectError"),
    ):
        model.complete(QA, Sampling())


# -- a real llama_cpp.server -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("llama_cpp.server")
    from memory_r1.llm.models import resolve_model

    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(resolve_model("smollm2-135m").path),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]  # fmt: skip
    # A file, not a pipe: the server logs ~200 kB at load and would block on a full pipe.
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text()[-2000:]
                pytest.fail(f"llama_cpp.server exited {proc.returncode}: {tail}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer /v1/models within 90 s")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow
def test_server_chat_completion(server_url: str) -> None:
    model = create_model("openai", base_url=server_url + "/v1", model="smollm2-135m")
    with closing(model):
        out = model.complete(QA, Sampling(max_tokens=24))
    assert "Sweden" in out.text
    assert out.prompt_tokens > 20 and 0 < out.completion_tokens <= 24


@pytest.mark.slow
def test_server_json_object_schema(server_url: str) -> None:
    prompt = Prompt("Reply with one JSON memory operation.", "New fact: Caroline likes hiking.")
    with OpenAICompatModel(server_url, "smollm2-135m", schema_mode="json_object") as model:
        out = model.complete(prompt, Sampling(max_tokens=64, json_schema=SCHEMA))
    data = json.loads(out.text)
    assert data["op"] in ("ADD", "NOOP") and isinstance(data["text"], str)


@pytest.mark.slow
def test_server_rejects_openai_schema_form(server_url: str) -> None:
    # Documents why schema_mode exists: llama_cpp.server 0.3.36 answers 500 to this form.
    with (
        OpenAICompatModel(server_url, "smollm2-135m", retries=0) as model,
        pytest.raises(ModelError, match="HTTP 500"),
    ):
        model.complete(QA, Sampling(max_tokens=8, json_schema=SCHEMA))


@pytest.mark.slow
def test_server_complete_many_keeps_order(server_url: str) -> None:
    names = ["Sweden", "Kenya", "Peru"]
    prompts = [
        Prompt(QA.system, f"Memories: Caroline moved from {n}.\nQuestion: Where did Caroline move from?")
        for n in names
    ]
    with OpenAICompatModel(server_url, "smollm2-135m", max_concurrency=3) as model:
        outs = model.complete_many(prompts, Sampling(max_tokens=24))
    assert [n in o.text for n, o in zip(names, outs)] == [True, True, True]
