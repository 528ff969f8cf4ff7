"""The bench systems through the real runner with a scripted model and the hash embedder, and
the baselines' own rules: full-context truncation, vanilla's similarity thresholds."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memory_r1.agents.answer import ANSWER_SYSTEM
from memory_r1.agents.extract import EXTRACT_SYSTEM
from memory_r1.agents.manager import MANAGER_SYSTEM
from memory_r1.bench.baselines import FullContext, HeuristicManager, conversation_prompt
from memory_r1.bench.context import BenchContext
from memory_r1.bench.runner import run_bench
from memory_r1.bench.systems import create_system
from memory_r1.config import ModelConfig
from memory_r1.data.locomo import load_locomo
from memory_r1.errors import ConfigError
from memory_r1.eval.runner import EvalLimits, percentile, plan, read_jsonl
from memory_r1.llm.base import Prompt, Sampling
from memory_r1.metrics import aggregate
from memory_r1.testing import FakeChatModel
from memory_r1.types import Memory, OpKind, Turn

FAKE_LLM = ModelConfig(backend="llamacpp", model="fake")
BUILT_IN = ("memory-r1", "locomo-rag", "full-context", "vanilla")
_HEADERS = ("Memories for user", "Conversation:", "[", "Question:", "(none)")


def scripted_reply(prompt: Prompt, sampling: Sampling) -> str:
    """Extraction: the utterance is the fact; manager: ADD every fact; any answer prompt: the
    last word of its first memory / conversation line (so answers depend on the bank)."""
    if prompt.system == EXTRACT_SYSTEM:
        utterance = prompt.user.split("\n", 1)[-1]
        return '{"facts": []}' if "thanks" in utterance.lower() else json.dumps({"facts": [utterance]})
    if prompt.system == MANAGER_SYSTEM:
        facts = json.loads(prompt.user.split("New facts: ", 1)[1])
        return json.dumps({"memory": [{"id": None, "text": f, "event": "ADD"} for f in facts]})
    lines = [ln for ln in prompt.user.splitlines() if ln.strip() and not ln.startswith(_HEADERS)]
    word = lines[0].split()[-1].strip(".,!?") if lines else "none"
    return ("- x\n\n" if prompt.system == ANSWER_SYSTEM else "") + f"**Answer:** {word}"


def fake_models(model: FakeChatModel | None = None) -> dict[str, FakeChatModel]:
    m = model or FakeChatModel(reply_fn=scripted_reply)
    return {"extract": m, "manager": m, "answer": m}


def bench(systems: Sequence[str], convs: list, out: Path, models: dict | None = None, **kw: object) -> dict:
    return run_bench(
        systems,
        convs,
        EvalLimits(),
        out,
        FAKE_LLM,
        "hash",
        models=models or fake_models(),
        progress=False,
        **kw,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("name", BUILT_IN)
def test_each_system_runs_through_the_runner(name: str, tiny_locomo_path: Path, tmp_path: Path) -> None:
    convs = load_locomo(tiny_locomo_path)
    model = FakeChatModel(reply_fn=scripted_reply)
    results = bench([name], convs, tmp_path, fake_models(model))
    out = tmp_path / name
    for f in ("ingest.jsonl", "predictions.jsonl", "scores.json", "run.json", "report.md"):
        assert (out / f).exists(), f
    scores = json.loads((out / "scores.json").read_text())
    assert json.loads(json.dumps(results[name], default=str)) == scores
    preds = read_jsonl(out / "predictions.jsonl")
    ingest = read_jsonl(out / "ingest.jsonl")
    assert len(preds) == sum(len(plan(c, EvalLimits())[1]) for c in convs) > 0
    assert len(ingest) == sum(len(c.turns()) for c in convs)
    assert scores["scores"] == aggregate(preds, percent=True)
    assert scores["config"]["system"] == name and scores["config"]["embedder"] == "hash"
    assert set(scores["bank_size"]) == {"conv-26", "conv-30"}
    assert all(p["prediction"] and p["prediction"] != "none" for p in preds)
    extracted = any(p.system == EXTRACT_SYSTEM for p, _ in model.calls)
    if name in ("locomo-rag", "full-context"):  # no LLM at ingest; one item per turn
        assert not extracted and all(r["llm_calls"] == 0 for r in ingest)
        assert scores["bank_size"] == {c.sample_id: len(c.turns()) for c in convs}
    else:
        assert extracted and scores["ingest"]["llm_calls"] > 0
    if name == "full-context":
        assert all(p["truncated_turns"] == 0 for p in preds)
        assert "truncated" in scores["answer"]
    if name == "vanilla":  # the heuristic manager never calls the model
        assert not any(p.system == MANAGER_SYSTEM for p, _ in model.calls)
        assert "DELETE" not in scores["ingest"]["ops"]


def test_rag_stores_turns_verbatim_with_speaker_and_date(tiny_locomo_path: Path, tmp_path: Path) -> None:
    conv = load_locomo(tiny_locomo_path)[0]
    ctx = BenchContext(FAKE_LLM, "hash", tmp_path, models=fake_models())
    rag = create_system("locomo-rag", ctx)
    for turn in conv.turns():
        rag.ingest_turn(conv.sample_id, turn)
    stored = rag.store.list(conv.sample_id)  # type: ignore[attr-defined]
    assert [(m.text, m.owner, m.timestamp) for m in stored] == [
        (t.render(), t.speaker, t.date_time) for t in conv.turns()
    ]
    result, _ = rag.answer(conv.sample_id, "What does Melanie do to destress?", conv.speakers)
    assert not result.raw.startswith("**Memories selected")  # no distillation
    rag.close()


def test_memory_r1_checkpoint_option_replaces_only_its_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import memory_r1.bench.systems as systems

    built: list[tuple[str, dict]] = []
    monkeypatch.setattr(
        systems,
        "create_model",
        lambda backend, **kw: built.append((backend, kw)) or FakeChatModel(name="ckpt"),
    )
    models = fake_models()
    ctx = BenchContext(FAKE_LLM, "hash", tmp_path, models=models, options={"answer_agent": "/ckpt/aa"})
    pipe = create_system("memory-r1", ctx)
    assert built == [("hf", {"model": "/ckpt/aa"})]
    assert pipe.answer_agent.model.name == "ckpt"  # type: ignore[attr-defined]
    assert pipe.extractor.model is models["extract"]  # type: ignore[attr-defined]
    assert ctx.models is models  # the shared backbone is not mutated
    pipe.close()


def test_unavailable_system_module_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import memory_r1.bench.systems as systems

    monkeypatch.setitem(systems.SYSTEMS, "ghost", "memory_r1.bench.no_such_module:create")
    with pytest.raises(ConfigError, match="ghost"):
        create_system("ghost", BenchContext(FAKE_LLM, "hash", tmp_path))
    if importlib.util.find_spec("memory_r1.bench.mem0_system") is None:
        with pytest.raises(ConfigError, match="mem0"):
            create_system("mem0", BenchContext(FAKE_LLM, "hash", tmp_path))


# ---------------------------------------------------------------------------- full context


def _turns(n: int) -> list[Turn]:
    return [
        Turn(
            f"D{1 + i // 5}:{i}",
            "Ann" if i % 2 else "Bob",
            f"turn number {i} " + "x" * 40,
            1 + i // 5,
            f"day {1 + i // 5}",
        )
        for i in range(n)
    ]


def test_full_context_drops_oldest_turns_to_fit(tmp_path: Path) -> None:
    model = FakeChatModel(reply_fn=lambda p, s: "**Answer:** ok")  # no tokenizer: chars / 4
    fc = FullContext(model, tmp_path, context_tokens=500)
    for t in _turns(20):
        fc.ingest_turn("b", t)
    result, _ = fc.answer("b", "What number?", ("Ann", "Bob"))
    dropped = result.extra["truncated_turns"]  # type: ignore[attr-defined]
    assert 0 < dropped < 20
    seen = model.calls[-1][0].user
    assert "turn number 19 " in seen and f"turn number {dropped} " in seen
    assert f"turn number {dropped - 1} " not in seen  # the oldest ones went
    room = 500 - fc.sampling.max_tokens
    assert fc.count_tokens(model.calls[-1][0]) <= room
    assert fc.count_tokens(conversation_prompt(_turns(20)[dropped - 1 :], "What number?")) > room
    # a new instance on the same folder knows what was ingested (resume)
    assert FullContext(model, tmp_path).done_turns("b") == {t.dia_id for t in _turns(20)}


def test_full_context_counts_with_the_model_tokenizer_when_it_has_one(tmp_path: Path) -> None:
    class Tokenizing(FakeChatModel):
        def render(self, prompt: Prompt) -> str:
            return prompt.system + prompt.user

        def tokenize_count(self, text: str) -> int:
            return len(text.split())

    model = Tokenizing(reply_fn=lambda p, s: "**Answer:** ok", context_window=300)
    fc = FullContext(model, tmp_path)  # the window comes from the ChatModel protocol
    assert fc.exact and fc.context_tokens == 300
    for t in _turns(40):
        fc.ingest_turn("b", t)
    result, _ = fc.answer("b", "q?", ("Ann", "Bob"))
    prompt = model.calls[-1][0]
    assert len(model.render(prompt).split()) <= 300 - 32
    assert result.extra["truncated_turns"] > 0  # type: ignore[attr-defined]


def test_full_context_truncation_is_reported_by_the_runner(tiny_locomo_path: Path, tmp_path: Path) -> None:
    convs = load_locomo(tiny_locomo_path)
    results = bench(["full-context"], convs, tmp_path, options={"context_tokens": 420})
    preds = read_jsonl(tmp_path / "full-context" / "predictions.jsonl")
    assert any(p["truncated_turns"] > 0 for p in preds)
    summary = results["full-context"]["answer"]["truncated"]
    assert summary["questions"] == sum(p["truncated_turns"] > 0 for p in preds)
    assert summary["turns_max"] == max(p["truncated_turns"] for p in preds)


# --------------------------------------------------------------------------------- vanilla


class TableEmbedder:
    """Vectors looked up by text: unit vectors in 2-D at a chosen cosine to (1, 0)."""

    name, dim = "table", 2

    def __init__(self, cosines: dict[str, float]) -> None:
        self.cosines = cosines

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        c = np.array([self.cosines.get(t, 0.0) for t in texts], dtype=np.float64)
        return np.stack([c, np.sqrt(1 - c**2)], axis=1).astype(np.float32)


def _mem(text: str, mid: str = "m1") -> Memory:
    return Memory(mid, text, "Ann", "", 0.0, 0.0)


@pytest.mark.parametrize(
    ("cosine", "kind"),
    [
        (1.0, OpKind.NOOP),
        (0.95, OpKind.NOOP),
        (0.97, OpKind.NOOP),
        (0.949, OpKind.UPDATE),
        (0.90, OpKind.UPDATE),
        (0.80, OpKind.UPDATE),
        (0.799, OpKind.ADD),
        (0.2, OpKind.ADD),
    ],
)
def test_vanilla_heuristic_thresholds(cosine: float, kind: OpKind) -> None:
    emb = TableEmbedder({"Ann likes tea": 1.0, "fact": cosine})
    ops = HeuristicManager(emb).decide(["fact"], [_mem("Ann likes tea")]).ops
    assert [op.kind for op in ops] == [kind]
    if kind is OpKind.UPDATE:
        assert (ops[0].memory_id, ops[0].text, ops[0].old_text) == ("m1", "fact", "Ann likes tea")
    if kind is OpKind.NOOP:
        assert ops[0].memory_id == "m1"


def test_vanilla_heuristic_edge_cases() -> None:
    emb = TableEmbedder({"Ann likes tea": 1.0, "close a": 0.9, "close b": 0.85, "far": 0.1})
    manager = HeuristicManager(emb)
    # same normalised text is a NOOP whatever the cosine; no related memory -> ADD
    assert [o.kind for o in manager.decide(["  ANN likes  TEA "], [_mem("Ann likes tea")]).ops] == [
        OpKind.NOOP
    ]
    assert [o.kind for o in manager.decide(["far"], []).ops] == [OpKind.ADD]
    # one UPDATE per memory per turn; a repeated new fact is added once
    ops = manager.decide(["close a", "close b", "far", "far"], [_mem("Ann likes tea")]).ops
    assert [o.kind for o in ops] == [OpKind.UPDATE, OpKind.ADD, OpKind.ADD, OpKind.NOOP]
    assert manager.decide(["far"], [_mem("Ann likes tea")]).completion is None
    # the most similar memory is the one acted on; custom thresholds are honoured
    ops = (
        HeuristicManager(emb, noop_at=0.99, update_at=0.5)
        .decide(["close a"], [_mem("far", "m0"), _mem("Ann likes tea", "m1")])
        .ops
    )
    assert (ops[0].kind, ops[0].memory_id) == (OpKind.UPDATE, "m1")
    with pytest.raises(ConfigError):
        HeuristicManager(emb, noop_at=0.7, update_at=0.8)


def test_percentile_matches_numpy() -> None:
    xs = [0.3, 1.2, 0.7, 5.0, 2.2, 0.1]
    for q in (50, 95):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
