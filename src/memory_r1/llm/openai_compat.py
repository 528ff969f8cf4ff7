"""Client for OpenAI-compatible HTTP servers (OpenAI, vLLM, llama_cpp.server, ...) (L1; httpx).

* ``chat=True``: ``POST {base}/v1/chat/completions`` with ``prompt.messages()``. The endpoint
  renders the template, so ``prompt.response_prefix`` is **not** sent (OpenAI has no portable
  assistant prefill): the reply may or may not start with the prefix, and parsers must accept
  both.
* ``chat=False``: ``POST {base}/v1/completions`` with :func:`render_completion` text (which
  ends with the prefix, so the reply continues after it); :data:`COMPLETION_STOPS` are added.

``Sampling.json_schema`` (chat only) becomes ``response_format`` according to ``schema_mode``:

* ``"json_schema"``: OpenAI's ``{"type": "json_schema", "json_schema": {"name", "schema"}}``;
* ``"json_object"``: ``{"type": "json_object", "schema": S}``, the form llama_cpp.server
  accepts (it answers HTTP 500 to the OpenAI form);
* ``"none"``: not sent; the caller's parser copes.

Completion endpoints have no portable constraint field, so the schema is not sent there.
Stop strings are also applied client-side (some servers cap them at 4). 429, 5xx and connection
failures are retried ``retries`` times with exponential backoff, then raise :class:`ModelError`
carrying the status and the start of the body.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import httpx

from memory_r1.errors import ConfigError, ModelError
from memory_r1.llm.base import COMPLETION_STOPS, Prompt, Sampling, render_completion
from memory_r1.types import Completion

SchemaMode = Literal["json_schema", "json_object", "none"]
_RETRY_STATUS = {429, 500, 502, 503, 504}


def _cut_at_stops(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class OpenAICompatModel:
    """A model behind an OpenAI-compatible endpoint.

    ``base_url`` may end in ``/v1`` or not (``http://127.0.0.1:8000`` and
    ``http://127.0.0.1:8000/v1`` are the same). ``api_key`` defaults to ``$OPENAI_API_KEY``
    (servers without auth ignore it). The client is thread-safe; ``complete_many`` keeps up to
    ``max_concurrency`` requests in flight and returns results in prompt order. ``retries`` and
    ``backoff`` (seconds, doubled per attempt) bound the retry loop.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        chat: bool = True,
        timeout: float = 120.0,
        max_concurrency: int = 8,
        schema_mode: SchemaMode = "json_schema",
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        context_window: int | None = None,
    ) -> None:
        if schema_mode not in ("json_schema", "json_object", "none"):
            raise ConfigError(
                f"schema_mode={schema_mode!r}: use 'json_schema' (OpenAI), "
                "'json_object' (llama_cpp.server) or 'none'"
            )
        if max_concurrency < 1 or retries < 0:
            raise ConfigError("max_concurrency must be >= 1 and retries >= 0")
        root = base_url.rstrip("/")
        self.base_url = root[: -len("/v1")] if root.endswith("/v1") else root
        self.name = model
        self.chat = chat
        self.context_window = context_window  # the server's limit, where the caller knows it
        self.schema_mode: SchemaMode = schema_mode
        self.max_concurrency = max_concurrency
        self.retries = retries
        self.backoff = backoff
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # ``transport`` is the test seam (httpx.MockTransport); None = real network.
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    # -- request building ----------------------------------------------------------------------

    def _payload(self, prompt: Prompt, sampling: Sampling) -> tuple[str, dict[str, Any], list[str]]:
        stops = list(sampling.stop)
        body: dict[str, Any] = {
            "model": self.name,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if self.chat:
            path = "/v1/chat/completions"
            body["messages"] = [{"role": m.role, "content": m.content} for m in prompt.messages()]
            if sampling.json_schema is not None and self.schema_mode == "json_schema":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": dict(sampling.json_schema)},
                }
            elif sampling.json_schema is not None and self.schema_mode == "json_object":
                body["response_format"] = {
                    "type": "json_object",
                    "schema": dict(sampling.json_schema),
                }
        else:
            path = "/v1/completions"
            body["prompt"] = render_completion(prompt)
            stops += [s for s in COMPLETION_STOPS if s not in stops]
        if stops:
            body["stop"] = stops
        return path, body, stops

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with bounded retries; any final failure is a ModelError naming the cause."""
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                resp = self._client.post(path, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as e:
                problem = f"{type(e).__name__}: {e}"
                continue  # server starting, restarting or overloaded: worth another try
            except httpx.HTTPError as e:  # read timeout etc.: retrying would double the wait
                raise ModelError(f"{self.base_url}{path}: {type(e).__name__}: {e}") from e
            if resp.status_code in _RETRY_STATUS:
                problem = f"HTTP {resp.status_code}: {resp.text[:300]}"
                continue
            if resp.status_code >= 400:
                raise ModelError(f"{self.base_url}{path}: HTTP {resp.status_code}: {resp.text[:300]}")
            try:
                return resp.json()
            except ValueError as e:
                raise ModelError(f"{self.base_url}{path}: non-JSON reply: {resp.text[:300]}") from e
        raise ModelError(f"{self.base_url}{path}: failed after {self.retries + 1} attempts; last: {problem}")

    # -- ChatModel -----------------------------------------------------------------------------

    def complete(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """One request; ``text`` excludes the prefix for completion endpoints (see module doc)."""
        start = time.perf_counter()
        path, body, stops = self._payload(prompt, sampling)
        data = self._post(path, body)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] if self.chat else choice["text"]
        except (KeyError, IndexError, TypeError) as e:
            raise ModelError(f"{self.base_url}{path}: unexpected reply shape: {str(data)[:300]}") from e
        text, cut = _cut_at_stops(text or "", stops)
        usage = data.get("usage") or {}
        return Completion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason="stop" if cut else (choice.get("finish_reason") or "stop"),
            seconds=time.perf_counter() - start,
            meta={"backend": "openai", "model": self.name, "url": self.base_url},
        )

    def complete_many(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[Completion]:
        """Up to ``max_concurrency`` requests in flight; results in the order of ``prompts``.

        The first failure (a ModelError) is raised once the in-flight requests finish.
        """
        if len(prompts) <= 1:
            return [self.complete(p, sampling) for p in prompts]
        workers = min(self.max_concurrency, len(prompts))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai") as pool:
            return list(pool.map(lambda p: self.complete(p, sampling), prompts))

    def close(self) -> None:
        """Close the HTTP connection pool (its sockets); the model cannot be used after."""
        self._client.close()

    def __enter__(self) -> OpenAICompatModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenAICompatModel({self.base_url!r}, {self.name!r}, chat={self.chat})"
