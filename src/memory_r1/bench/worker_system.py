"""A memory library run in its own venv as a bench system: the lifecycle Mem0 and A-Mem share (L3).

:class:`WorkerSystem` holds everything but the library: the venv check, the upstream LLM (a
``llama_cpp.server`` started on the backbone GGUF, or the backbone's own ``openai`` endpoint),
the metering :class:`~memory_r1.bench.proxy.LLMProxy` in front of it (which also serves our
embedder), the worker subprocess (:class:`~memory_r1.bench.worker.WorkerClient`) and its
sandboxed environment, the pin check of the library version the worker reports, resume from
``done.jsonl``, per-turn metering of ``add`` and answering with the shared backbone
``AnswerAgent(distill=False)``. Everything lives in ``<out>/<system name>/``.

A subclass (:class:`memory_r1.bench.mem0_system.Mem0System`,
:class:`memory_r1.bench.amem_system.AMemSystem`) sets ``label`` (the library's short name in
messages), ``package`` (its distribution name), ``script`` (the worker file) and supplies the
library-specific parts: ``_proxy_hooks``, ``_worker_config``, ``_library_env``, ``_add``,
``_ops``, ``_retrieve``, ``bank_size`` and ``describe``, optionally ``_setup``, ``_remember``,
``_done_fields`` and ``_check_init``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memory_r1.agents.answer import AnswerAgent
from memory_r1.bench.context import BenchContext, role_models, shared_embedder
from memory_r1.bench.proxy import Inject, LlamaCppServer, LLMProxy
from memory_r1.bench.worker import WorkerClient
from memory_r1.config import ModelConfig
from memory_r1.errors import ConfigError, ModelError
from memory_r1.llm.models import resolve_model
from memory_r1.types import AnswerResult, Memory, Op, Turn, TurnResult

REPO_ROOT = Path(__file__).resolve().parents[3]
DUMMY_KEY = "sk-loopback-dummy"  # the worker only ever talks to the loopback proxy
DEAD_PROXY = "http://127.0.0.1:9"  # any non-loopback request of the worker fails at once


class WorkerSystem:
    """One library worker on the backbone; see the module docstring.

    ``ctx.options`` read here: ``answer_k`` (memories retrieved to answer), ``n_ctx``
    (llama.cpp server context, default min(16384, model's)), ``n_threads`` (server threads;
    default the backbone's ``n_threads`` option, else all CPUs), ``venv`` (the venv folder),
    ``startup_timeout`` (seconds for llama_cpp.server).
    """

    label: str
    package: str
    script: Path

    def __init__(
        self, ctx: BenchContext, *, name: str, venv: str, make_target: str, version: str, answer_k: int
    ) -> None:
        self.name = name
        self.venv, self.make_target, self.pin_version = venv, make_target, version
        self.dir = Path(ctx.out_dir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        options = dict(ctx.options or {})
        python = Path(options.get("venv") or REPO_ROOT / venv) / "bin" / "python"
        if not python.exists():
            raise ConfigError(f"{self.label} venv missing: run `make {make_target}` ({python} not found)")
        self.answer_k = int(options.get("answer_k", answer_k))
        self._setup(options)
        self._lock = threading.Lock()
        self._done_path = self.dir / "done.jsonl"
        self._done: dict[str, set[str]] = {}
        self._load_done()
        self.server: LlamaCppServer | None = None
        self.proxy: LLMProxy | None = None
        self.worker: WorkerClient | None = None
        try:
            self._start(ctx, options, python)
        except BaseException:
            self.close()
            raise

    # -- start -------------------------------------------------------------------------------
    def _start(self, ctx: BenchContext, options: dict[str, Any], python: Path) -> None:
        llm = ctx.llm
        embedder = shared_embedder(ctx.embedder)
        upstream, api_key = self._upstream(llm, options)
        inject, adapt = self._proxy_hooks(llamacpp=self.server is not None)
        self.proxy = LLMProxy(
            upstream, embedder, model=llm.model, api_key=api_key, inject=inject, adapt=adapt
        ).start()
        self.worker = WorkerClient(
            self.label, self.script, python, self._worker_env(), self.dir / "worker.log"
        )
        self.embedder_name = embedder.name
        self.dims = int(getattr(embedder, "dim", 0) or len(embedder.embed(["x"])[0]))
        self.config = self._worker_config(llm, options)
        self._check_init(self.worker.request("init", config=self.config))
        models = ctx.models if ctx.models and "answer" in ctx.models else role_models(ctx)
        self.answer_agent = AnswerAgent(models["answer"], distill=False)

    def _upstream(self, llm: ModelConfig, options: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """(url, api key) of the LLM the proxy forwards to; starts llama_cpp.server for a GGUF."""
        if llm.backend == "openai":
            api_key = llm.options.get("api_key") or os.environ.get("OPENAI_API_KEY")
            self.llm_route = f"proxy -> {llm.base_url} (model {llm.model})"
            return llm.base_url, api_key  # a remote server: its own sampling defaults
        try:
            spec = resolve_model(llm.model)
        except ModelError as e:
            raise ConfigError(f"{self.label} needs a GGUF backbone or --backend openai: {e}") from e
        n_ctx = int(options.get("n_ctx") or min(16384, spec.context))
        threads = options.get("n_threads") or llm.options.get("n_threads")
        self.server = LlamaCppServer(
            spec.path,
            self.dir / "llama_server.log",
            n_ctx=n_ctx,
            n_threads=int(threads) if threads else None,
            startup_timeout=float(options.get("startup_timeout", 180)),
        )
        self.server.start()
        self.llm_route = " ".join(self.server.command)
        return self.server.url, None

    def _worker_env(self) -> dict[str, str]:
        """A sandbox: HOME and TMPDIR in the run folder, offline, proxies at a dead port."""
        assert self.proxy is not None
        home, tmp = self.dir / "home", self.dir / "tmp"
        for d in (home, tmp):
            d.mkdir(exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "OPENAI_API_KEY": DUMMY_KEY,
            "OPENAI_BASE_URL": self.proxy.url,
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            **self._library_env(),
        }
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env[var] = env[var.lower()] = DEAD_PROXY
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        return env

    def _check_init(self, info: dict[str, Any]) -> None:
        """Keep the worker's ``init`` reply; a library version other than the pin is an error."""
        self.info, self.version = info, info["version"]
        if self.version != self.pin_version:
            raise ConfigError(
                f"{self.venv} has {self.package} {self.version}, the pin is {self.pin_version}: "
                f"rerun `make {self.make_target}`"
            )

    # -- resume ------------------------------------------------------------------------------
    def _load_done(self) -> None:
        if not self._done_path.exists():
            return
        for line in self._done_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash: that turn is simply redone
            self._remember(row)

    def _mark_done(self, bank: str, turn: Turn, **fields: Any) -> None:
        row = {"bank": bank, "dia_id": turn.dia_id, "speaker": turn.speaker, **fields}
        with self._done_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._remember(row)

    def _remember(self, row: dict[str, Any]) -> None:
        """Take in one ``done.jsonl`` row (read back, or just written)."""
        self._done.setdefault(row["bank"], set()).add(row["dia_id"])

    def done_turns(self, bank: str) -> set[str]:
        return set(self._done.get(bank, ()))

    # -- MemorySystem ------------------------------------------------------------------------
    def ingest_turn(self, bank: str, turn: Turn) -> TurnResult:
        """One library ``add``; LLM calls / seconds / tokens are the proxy's counts for it.

        An unreachable upstream raises ``ModelError`` and the turn is not marked done (a rerun
        resumes there); any other library failure is an INVALID op of a done turn.
        """
        assert self.worker is not None and self.proxy is not None
        with self._lock:  # per-turn counters: one add at a time
            before = self.proxy.stats()
            reply = self._add(bank, turn)
            spent = self.proxy.stats() - before
            if spent.unreachable:
                raise ModelError(
                    f"{self.name}: the LLM upstream was unreachable during {bank} "
                    f"{turn.dia_id}; see {self.dir}/llama_server.log"
                )
            facts, ops = self._ops(reply)
            self._mark_done(bank, turn, **self._done_fields(reply))
        return TurnResult(
            turn.dia_id,
            facts=facts,
            ops=ops,
            llm_seconds=spent.seconds,
            llm_calls=spent.calls,
            tokens_in=spent.prompt_tokens,
            tokens_out=spent.completion_tokens,
        )

    def answer(self, bank: str, question: str, speakers: tuple[str, str]) -> tuple[AnswerResult, float]:
        """The library's search (:meth:`_retrieve`), then the shared Answer Agent."""
        t0 = time.perf_counter()
        a, b = self._retrieve(bank, question, speakers)
        search_s = time.perf_counter() - t0
        return self.answer_agent.answer(question, speakers[0], a, speakers[1], b), search_s

    def close(self) -> None:
        for part in (self.worker, self.proxy, self.server):
            if part is not None:
                part.close()
        self.worker = self.proxy = self.server = None

    # -- what a library supplies -------------------------------------------------------------
    def _setup(self, options: Mapping[str, Any]) -> None:
        """Read library options and set up state, before ``done.jsonl`` is read back."""

    def _proxy_hooks(self, llamacpp: bool) -> tuple[Inject | None, Inject | None]:
        """(inject, adapt) for the proxy; ``llamacpp``: the upstream is our llama_cpp.server."""
        raise NotImplementedError

    def _worker_config(self, llm: ModelConfig, options: Mapping[str, Any]) -> dict[str, Any]:
        """The worker's ``init`` config (``self.proxy``, ``embedder_name`` and ``dims`` are set)."""
        raise NotImplementedError

    def _library_env(self) -> dict[str, str]:
        """Environment variables the library needs beyond the shared sandbox."""
        raise NotImplementedError

    def _add(self, bank: str, turn: Turn) -> dict[str, Any]:
        """The worker's reply to ``add`` for one turn."""
        raise NotImplementedError

    def _ops(self, reply: Mapping[str, Any]) -> tuple[list[str], list[Op]]:
        """(facts, ops) of one ``add`` reply."""
        raise NotImplementedError

    def _done_fields(self, reply: Mapping[str, Any]) -> dict[str, Any]:
        """Extra fields of the turn's ``done.jsonl`` row."""
        return {}

    def _retrieve(
        self, bank: str, question: str, speakers: tuple[str, str]
    ) -> tuple[list[Memory], list[Memory]]:
        """The memories of each speaker to answer ``question`` from."""
        raise NotImplementedError

    def bank_size(self, bank: str) -> int:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the run config records about this system."""
        raise NotImplementedError
