"""The rich progress bar of evaluation and training runs (L0; rich is imported on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress


def rich_progress(*, status: bool = False) -> Progress:
    """A rich ``Progress``: description, bar, ``n/N``, elapsed and remaining time; ``status``
    adds the task's ``status`` field after ``n/N`` and an ``eta`` label before the remaining time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    shown = [TextColumn("{task.fields[status]}")] if status else []
    eta = [TextColumn("eta")] if status else []
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *shown,
        TimeElapsedColumn(),
        *eta,
        TimeRemainingColumn(),
    )
