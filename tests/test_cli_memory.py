"""``memory-r1 history``: the audit trail of a real store in the terminal."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from memory_r1 import Memory
from memory_r1.cli import main
from memory_r1.types import Op, OpKind


def test_history_shows_every_operation_with_old_and_new_text(tmp_path: Path) -> None:
    path = str(tmp_path / "m.sqlite")
    with Memory({"store": {"path": path}, "embedder": "hash"}) as m:
        first = m.add("Alice moved to Berlin", user_id="alice", infer=False)["results"][0]["id"]
        m.update(first, "Alice moved to Paris")
        m.add("Bob likes tea", user_id="bob", infer=False)
        m.store.apply("default", Op(OpKind.INVALID, error="unparseable manager output", raw="{"), "user:bob")
        m.delete(first)
    args = ["history", "--store", path, "--embedder", "hash"]
    out = CliRunner().invoke(main, [*args], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    for text in (
        "ADD",
        "UPDATE",
        "DELETE",
        "INVALID",
        "Alice moved to Berlin -> Alice moved to",
        "unparseable",
    ):
        assert text in out.output
    only_bob = CliRunner().invoke(main, [*args, "--owner", "user:bob"], env={"COLUMNS": "200"})
    assert "Bob likes tea" in only_bob.output and "Berlin" not in only_bob.output
    one = CliRunner().invoke(main, [*args, "--memory", first], env={"COLUMNS": "200"})
    assert "3 history rows" in one.output
    missing = CliRunner().invoke(main, [*args, "--memory", "nope"])
    assert missing.exit_code != 0 and "no memory 'nope'" in missing.output
