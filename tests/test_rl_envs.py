"""RL environments and bank snapshots on the synthetic fixture (HashEmbedder, FakeChatModel)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from memory_r1.agents.answer import AnswerAgent
from memory_r1.agents.extract import FactExtractor, extract_prompt
from memory_r1.agents.manager import MemoryManager
from memory_r1.agents.pipeline import MemoryR1Pipeline
from memory_r1.data.locomo import parse_locomo
from memory_r1.data.synthetic import tiny_locomo
from memory_r1.llm.base import Prompt, Sampling, render_completion
from memory_r1.rl.envs.answer import AnswerEnv
from memory_r1.rl.envs.evidence import link_questions
from memory_r1.rl.envs.manager import ManagerEnv
from memory_r1.rl.envs.snapshots import Snapshot, build_snapshots, load_snapshots
from memory_r1.store.embedders import HashEmbedder
from memory_r1.store.sqlite import SQLiteStore
from memory_r1.testing import FakeChatModel
from memory_r1.types import Memory, Turn

CAREER_FACT = "Caroline is considering a career in counseling"


@pytest.fixture
def convs():
    return parse_locomo(tiny_locomo())


def new_store(path: str = ":memory:") -> SQLiteStore:
    return SQLiteStore(path, HashEmbedder())


def _extract(prompt: Prompt, _: Sampling) -> str:
    line = prompt.user.splitlines()[-1]  # "Speaker: text" -> one fact, the utterance itself
    return json.dumps({"facts": [line]})


def _fact(turn: Turn) -> str:
    """The one fact ``_extract`` makes of ``turn``."""
    return extract_prompt(turn).user.splitlines()[-1]


def _manage(prompt: Prompt, _: Sampling) -> str:
    facts = json.loads(prompt.user.split("New facts: ", 1)[1])
    return json.dumps({"memory": [{"id": None, "text": f, "event": "ADD"} for f in facts]})


def add_all_pipeline(store: SQLiteStore) -> tuple[MemoryR1Pipeline, FakeChatModel]:
    """A pipeline whose 'LLM' stores every utterance as one fact (deterministic)."""
    ext = FakeChatModel(reply_fn=_extract)
    manager = MemoryManager(FakeChatModel(reply_fn=_manage))
    answer = AnswerAgent(FakeChatModel(["**Answer:** x"]))
    return MemoryR1Pipeline(store, FactExtractor(ext), manager, answer), ext


def knows_counseling(prompt: Prompt, _: Sampling) -> str:
    """A frozen Answer Agent that answers right only when the fact is among its memories."""
    if "counseling" in prompt.user:
        return "- memory\n**Answer:** counseling"
    return "**Answer:** unknown"


# ------------------------------------------------------------------------------------ AnswerEnv


def test_answer_env_prompts_hold_memories_and_question_and_reward_em(convs) -> None:
    store = new_store()
    store.add("conv-26", "Caroline is thinking about a career in counseling", "Caroline", "8 May")
    store.add("conv-26", "Melanie paints to unwind", "Melanie", "8 May")
    env = AnswerEnv(convs, store, split="train")
    assert len(env) == 5  # conv-26, categories 1-4
    items = env.prompts(20, random.Random(0))
    prompt, meta = next((p, m) for p, m in items if "What career" in p.user)
    assert isinstance(prompt, Prompt) and prompt.response_prefix.startswith("**Memories selected")
    assert "Question: What career is Caroline considering?" in prompt.user
    assert "8 May: Caroline is thinking about a career in counseling" in prompt.user
    assert "Memories for user Melanie:\n8 May: Melanie paints to unwind" in prompt.user
    outs = ["- a memory\n**Answer:** Counseling.", "counseling", "**Answer:** painting"]
    assert env.score(outs, [meta] * 3) == [1.0, 0.0, 0.0]
    assert env.stats()["format_failure_rate"] == pytest.approx(1 / 3)
    again = env.prompts(20, random.Random(0))
    assert [m["qid"] for _, m in again] == [m["qid"] for _, m in items]  # the rng decides


def test_answer_env_render_hook_and_pipeline_build(convs) -> None:
    pipe, _ = add_all_pipeline(new_store())
    env = AnswerEnv(convs, pipeline=pipe, split="train", render=render_completion)
    assert pipe.store.count("conv-26") == 8  # every turn ingested (one fact each)
    text, _ = env.prompts(1, random.Random(1))[0]
    assert isinstance(text, str) and "### Response:\n**Memories selected" in text


# ------------------------------------------------------------------------------------ snapshots


def test_snapshots_record_bank_before_each_turn_and_round_trip(convs, tmp_path: Path) -> None:
    pipe, _ = add_all_pipeline(new_store())
    path = tmp_path / "snap.jsonl"
    snaps = build_snapshots(convs[0], pipe, path)
    assert [s.index for s in snaps] == list(range(8))
    assert [len(s.memories) for s in snaps] == list(range(8))  # running bank, before turn t
    assert snaps[2].facts == (_fact(snaps[2].turn),)
    assert [m.text for m in snaps[3].memories] == [_fact(s.turn) for s in snaps[:3]]
    assert load_snapshots(path) == snaps
    assert snaps[4].turn.date_time == "1:14 pm on 25 May, 2023"


def test_snapshots_resume_skips_cached_turns(convs, tmp_path: Path) -> None:
    path = tmp_path / "snap.jsonl"
    full = build_snapshots(convs[0], add_all_pipeline(new_store())[0], tmp_path / "full.jsonl")
    # persistent store: the bank and its markers survive, nothing is re-ingested
    db = str(tmp_path / "bank.db")
    pipe, ext = add_all_pipeline(new_store(db))
    build_snapshots(convs[0], pipe, path, limit=3)
    pipe.store.close()
    pipe, ext = add_all_pipeline(new_store(db))
    snaps = build_snapshots(convs[0], pipe, path)
    assert len(ext.calls) == 5 and len(path.read_text().splitlines()) == 8
    assert [[m.text for m in s.memories] for s in snaps] == [[m.text for m in s.memories] for s in full]
    # fresh store (bank lost): rebuilt from the last cached snapshot + its turn re-ingested
    path2 = tmp_path / "snap2.jsonl"
    build_snapshots(convs[0], add_all_pipeline(new_store())[0], path2, limit=3)
    with open(path2, "a") as f:
        f.write('{"sample_id": "conv-26", "ind')  # a crash mid-line
    pipe, ext = add_all_pipeline(new_store())
    snaps2 = build_snapshots(convs[0], pipe, path2)
    assert len(ext.calls) == 6
    assert [[m.text for m in s.memories] for s in snaps2] == [[m.text for m in s.memories] for s in full]
    assert pipe.store.markers("snap:conv-26") == {s.turn.dia_id for s in full}


def test_snapshots_window_mode_rebuilds_from_preceding_turns(convs, tmp_path: Path) -> None:
    pipe, _ = add_all_pipeline(new_store())
    snaps = build_snapshots(convs[0], pipe, tmp_path / "w.jsonl", window=2, mode="window")
    assert [len(s.memories) for s in snaps] == [0, 1, 2, 2, 2, 2, 2, 2]
    assert [m.text for m in snaps[5].memories] == [_fact(s.turn) for s in snaps[3:5]]


# ----------------------------------------------------------------------------------- ManagerEnv


def test_manager_env_links_turns_by_evidence(convs, tmp_path: Path) -> None:
    links = link_questions(convs)
    assert [q.question for q in links[("conv-26", "D2:1")]] == ["What does Melanie do to destress?"]
    snaps = build_snapshots(convs[0], add_all_pipeline(new_store())[0], tmp_path / "s.jsonl")
    env = ManagerEnv(snaps, convs, AnswerAgent(FakeChatModel(reply_fn=knows_counseling)), new_store)
    assert sorted(ep.snapshot.turn.dia_id for ep in env.episodes) == [
        "D1:1",
        "D1:2",
        "D1:3",
        "D2:1",
        "D2:2",
        "D2:3",
    ]
    assert env.skipped == {"unlinked": 2, "no_facts": 0}  # D1:4, D2:4 (D2:1's cat-5 ignored)
    prompt, meta = env.prompts(1, random.Random(0))[0]
    ep = env.episodes[meta["episode"]]
    assert ep.snapshot.facts[0] in prompt.user and "Existing memories:" in prompt.user


def career_env() -> tuple[ManagerEnv, FakeChatModel, Snapshot]:
    conv = parse_locomo(tiny_locomo())
    turn = next(t for t in conv[0].turns() if t.dia_id == "D1:3")
    mems = (
        Memory("m1", "Melanie paints to unwind", "Melanie", "8 May", 0, 0),
        Memory("m2", "Caroline went to a support group", "Caroline", "8 May", 0, 0),
    )
    snap = Snapshot("conv-26", 2, ("Caroline", "Melanie"), turn, mems, (CAREER_FACT,))
    model = FakeChatModel(reply_fn=knows_counseling)
    return ManagerEnv([snap], conv, AnswerAgent(model), new_store), model, snap


def ops(*items: dict) -> str:
    return json.dumps({"memory": list(items)})


def test_manager_env_add_of_gold_fact_beats_noop_and_bank_is_copied() -> None:
    env, model, snap = career_env()
    prompt, meta = env.prompts(1, random.Random(0))[0]
    assert CAREER_FACT in prompt.user and "Caroline went to a support group" in prompt.user
    add = ops({"id": None, "text": CAREER_FACT, "event": "ADD"})
    noop = ops({"id": None, "text": CAREER_FACT, "event": "NONE"})
    update = ops({"id": "0", "text": CAREER_FACT, "event": "UPDATE"})
    assert env.score([add, noop, add, update], [meta] * 4) == [1.0, 0.0, 1.0, 1.0]
    assert len(model.calls) == 3  # the second ADD is memoised: 3 distinct op lists, 1 question
    assert "counseling" in model.calls[0][0].user  # the frozen agent saw the updated copy
    base = env.episodes[0].store
    assert sorted(m.text for m in base.list(env.BANK)) == sorted(m.text for m in snap.memories)
    assert env.score([noop], [meta]) == [0.0]  # the earlier ADD did not leak into the bank


def test_manager_env_invalid_ops_score_zero() -> None:
    env, model, _ = career_env()
    _, meta = env.prompts(1, random.Random(0))[0]
    bad = [
        "not json",
        ops({"id": "7", "text": "x", "event": "DELETE"}),
        ops({"id": None, "text": CAREER_FACT, "event": "ADD"}, {"event": "MERGE"}),
        ops(),
    ]
    assert env.score(bad, [meta] * len(bad)) == [0.0] * 4
    assert env.stats()["invalid_rate"] == 1.0 and model.calls == []


def test_manager_env_render_hook() -> None:
    conv = parse_locomo(tiny_locomo())
    _, _, snap = career_env()
    env = ManagerEnv(
        [snap],
        conv,
        AnswerAgent(FakeChatModel(reply_fn=knows_counseling)),
        new_store,
        render=render_completion,
    )
    text, meta = env.prompts(2, random.Random(0))[0]
    assert isinstance(text, str) and CAREER_FACT in text and meta["dia_id"] == "D1:3"


def test_manager_env_needs_a_linked_turn() -> None:
    conv = parse_locomo(tiny_locomo())
    turn = Turn("D9:9", "Caroline", "hi", 9, "")
    snap = Snapshot("conv-26", 0, ("Caroline", "Melanie"), turn, (), ("Caroline said hi",))
    with pytest.raises(ValueError, match="unlinked"):
        ManagerEnv([snap], conv, AnswerAgent(FakeChatModel([])), new_store)


# ------------------------------------------------------------------------- bank sources


def test_observation_banks_replay_locomo_facts_without_llm(convs, tmp_path: Path) -> None:
    from memory_r1.rl.envs.builders import answer_banks, answer_env

    store = answer_banks(convs, tmp_path, HashEmbedder(), "observations")
    mems = store.list("conv-26")
    assert len(mems) == 8  # one observation fact per turn, none repeated
    career = next(m for m in mems if "career in counseling" in m.text)
    assert career.owner == "Caroline" and career.metadata == {"dia_id": "D1:3"}
    turn = next(t for t in convs[0].turns() if t.dia_id == "D1:3")
    assert career.timestamp == turn.date_time
    store.close()
    # built once: a second call finds the marker and adds nothing
    again = answer_banks(convs, tmp_path, HashEmbedder(), "observations")
    assert again.count("conv-26") == 8 and again.count("conv-30") == len(again.list("conv-30"))
    # a bank half-built by a crash (no marker) is rebuilt from scratch
    again.delete_bank("conv-30")
    again.add("conv-30", "stray memory", "Someone")
    again.close()
    rebuilt = answer_banks(convs, tmp_path, HashEmbedder(), "observations")
    assert "stray memory" not in [m.text for m in rebuilt.list("conv-30")]
    env = answer_env(convs[:1], rebuilt, answer_k=1)
    prompt, meta = env.episodes[0]
    assert meta["category"] in (1, 2, 3, 4) and meta["question"] in prompt.user
    block_a, block_b = prompt.user.split("\n\n")[:2]
    assert len(block_a.splitlines()) == len(block_b.splitlines()) == 2  # heading + k=1 memory


def test_unknown_bank_source_is_a_config_error(convs, tmp_path: Path) -> None:
    from memory_r1.errors import ConfigError
    from memory_r1.rl.envs.builders import answer_banks

    with pytest.raises(ConfigError, match="observations"):
        answer_banks(convs, tmp_path, HashEmbedder(), "teacher")


def test_manager_env_caches_rewards_across_calls_and_scores_trivial_policies() -> None:
    env, model, _ = career_env()
    _, meta = env.prompts(1, random.Random(0))[0]
    assert env.trivial_rewards() == {"add": [1.0], "noop": [0.0]}
    assert len(model.calls) == 2  # one Answer-Agent call per policy (one linked question)
    add = ops({"id": None, "text": CAREER_FACT, "event": "ADD"})
    assert env.score([add, add], [meta] * 2) == [1.0, 1.0]
    assert len(model.calls) == 2  # ADD every fact was scored by trivial_rewards: cached
    assert env.stats()["cache_hits"] == 2.0 and env.stats()["op_add"] == 1.0
    noop = ops({"id": None, "text": CAREER_FACT, "event": "NONE"})
    env.score([noop], [meta])
    assert len(model.calls) == 2 and env.stats()["op_noop"] == 1.0  # same key as the trivial NOOP


def test_teacher_snapshots_leave_out_the_turn_and_keep_its_questions_other_evidence(convs) -> None:
    from memory_r1.rl.envs.builders import teacher_snapshots

    snaps = teacher_snapshots(convs, HashEmbedder())
    links = link_questions(convs)
    assert snaps, "the fixture has linked turns with observations"
    order = {t.dia_id: i for i, t in enumerate(convs[0].turns())}
    for snap in snaps:
        other = {e for qa in links[(snap.sample_id, snap.turn.dia_id)] for e in qa.evidence}
        for m in snap.memories:
            src = m.metadata["dia_id"]
            assert src != snap.turn.dia_id  # the turn's own facts are the Manager's to add
            assert order[src] < snap.index or src in other
        assert snap.facts  # the turn's observations
    env = ManagerEnv(snaps, convs, AnswerAgent(FakeChatModel(reply_fn=knows_counseling)), new_store)
    assert len(env) == len(snaps)
    trivial = env.trivial_rewards()
    assert len(trivial["add"]) == len(snaps)
    career = [i for i, e in enumerate(env.episodes) if any("counseling" in f for f in e.snapshot.facts)]
    assert career and all(trivial["add"][i] > trivial["noop"][i] for i in career)
