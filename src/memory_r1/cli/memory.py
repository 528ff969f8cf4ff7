"""``memory-r1 history``: the audit trail of a memory store in the terminal.

Every operation on a bank (ADD / UPDATE / DELETE / NONE / INVALID, with old and new text, when,
and why an INVALID one was refused), of one owner or one memory, from the memory layer's store
(``--config``, or ``--store PATH``) or from any run's ``store.sqlite`` (``--bank conv-48``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import click

from memory_r1.cli.options import fail
from memory_r1.errors import MemoryR1Error


def _memory(config: str | None, store: str | None, bank: str | None, embedder: str | None) -> Any:
    from memory_r1.api import Memory, MemoryConfig

    cfg = MemoryConfig.from_file(config) if config else MemoryConfig()
    changes: dict[str, Any] = {}
    if store:
        changes["store_target"] = store
        if store.startswith(("postgres://", "postgresql://")):
            changes["store_kind"] = "postgres"
    if bank:
        changes["bank"] = bank
    if embedder:
        changes["embedder"] = embedder
    return Memory(replace(cfg, **changes))


def _text(row: dict[str, Any]) -> str:
    old, new = row["old_memory"], row["new_memory"]
    if row["event"] == "UPDATE":
        return f"{old} -> {new}"
    if row["event"] == "INVALID":
        return f"{new or old or ''}  [{row['detail'].get('error', '')}]".strip()
    return str(new if new is not None else old or "")


@click.command("history")
@click.option("--config", type=click.Path(dir_okay=False, exists=True), help="Memory config (JSON / TOML).")
@click.option("--store", help="SQLite file or PostgreSQL DSN (instead of the config's).")
@click.option(
    "--bank", help="Bank to read (the memory layer's is 'default'; a LoCoMo run's: the conversation id)."
)
@click.option("--embedder", help="Embedder the store was written with (default: the config's).")
@click.option("--owner", help="Only this owner ('user:alice', or a LoCoMo speaker).")
@click.option("--memory", "memory_id", help="Only this memory id.")
@click.option("--last", type=int, default=50, show_default=True, help="Show the last N rows (0: all).")
def history_cmd(
    config: str | None,
    store: str | None,
    bank: str | None,
    embedder: str | None,
    owner: str | None,
    memory_id: str | None,
    last: int,
) -> None:
    """Every ADD / UPDATE / DELETE / NONE / INVALID of a store, oldest first."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    try:
        with _memory(config, store, bank, embedder) as m:
            if memory_id:
                rows = m.history(memory_id)
            elif owner:
                rows = m.audit(owner)
            else:
                rows = [r for o in m.owners() for r in m.audit(o)]
                rows.sort(key=lambda r: r["id"])
    except MemoryR1Error as err:
        raise fail(err) from err
    rows = rows[-last:] if last > 0 else rows
    table = Table(title=f"{len(rows)} history rows", show_lines=False)
    for col in ("#", "when (UTC)", "owner", "event", "memory", "text"):
        table.add_column(col, overflow="fold")
    for r in rows:
        when = r["created_at"][:19].replace("T", " ")
        cells = (str(r["id"]), when, r["owner"] or "", r["event"], (r["memory_id"] or "")[:8], _text(r))
        table.add_row(*(escape(c) for c in cells))  # memory text is data, never rich markup
    Console().print(table)


def register(cli: click.Group) -> None:
    cli.add_command(history_cmd)
