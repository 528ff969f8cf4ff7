"""``memory-r1 export adapter``: a trained checkpoint as a shipped LoRA adapter with its card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from memory_r1.config import DEFAULT_MODEL
from memory_r1.errors import ConfigError, MemoryR1Error


def register(cli: click.Group) -> None:
    cli.add_command(export_cmd)


def _read_scores(files: tuple[str, ...]) -> dict[str, Any]:
    """``{"<folder>/<file>": JSON}`` of the ``--scores`` files."""
    scores = {}
    for f in files:
        try:
            scores[Path(f).parent.name + "/" + Path(f).name] = json.loads(Path(f).read_text())
        except ValueError as e:
            raise ConfigError(f"{f}: not JSON ({e})") from e
    return scores


@click.command("export")
@click.argument("kind", type=click.Choice(["adapter"]))
@click.option(
    "--model", "trained", required=True, help="Trained checkpoint: HF dir (merged) or a PEFT adapter dir."
)
@click.option("--base", default=DEFAULT_MODEL, show_default=True, help="The base it was trained over.")
@click.option("--rank", type=int, default=8, show_default=True, help="LoRA rank of the export (SVD).")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Adapter folder: adapter.gguf, adapter_model.safetensors, adapter_config.json, cards.",
)
@click.option(
    "--name",
    type=click.Choice(["memory", "answer"]),
    default=None,
    help="Write card.json + CARD.md for this shipped adapter name.",
)
@click.option(
    "--answer-k", type=int, default=None, help="Card: memories per speaker the Answer Agent was trained with."
)
@click.option(
    "--scores",
    "scores_file",
    type=click.Path(dir_okay=False, exists=True),
    multiple=True,
    help="Card: JSON files of validation scores to embed (repeatable).",
)
@click.option("--command", "commands", multiple=True, help="Card: a command that made it (repeatable).")
def export_cmd(
    kind: str,
    trained: str,
    base: str,
    rank: int,
    out_dir: str,
    name: str | None,
    answer_k: int | None,
    scores_file: tuple[str, ...],
    commands: tuple[str, ...],
) -> None:
    """Export a trained checkpoint as a LoRA adapter (GGUF for llama.cpp + PEFT) with its card."""
    from memory_r1.rl.adapter_export import export_adapter, write_card

    try:
        summary = export_adapter(trained, base, out_dir, rank)
        if name:
            role = {"memory": "fact extraction + Memory Manager", "answer": "Answer Agent"}[name]
            write_card(
                out_dir,
                name=name,
                role=role,
                base_model=base,
                rank=rank,
                summary=summary,
                pipeline={"answer_k": answer_k} if answer_k else {},
                scores=_read_scores(scores_file),
                commands=list(commands),
                trained_from=trained,
            )
    except (MemoryR1Error, KeyError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(json.dumps(summary, indent=2))
