"""What a training run shows and records as it goes (L3): metric rows and a progress bar.

* :class:`MetricsLog` - every logged row goes to ``<out_dir>/metrics.jsonl`` (one JSON object
  per row, the file :func:`read_metrics` reads) **and** each of its
  numeric values, ``step`` excepted, to TensorBoard as a scalar of the same tag under
  ``<out_dir>/tb/`` (``torch.utils.tensorboard.SummaryWriter``; ``tensorboard --logdir
  <out_dir>/tb``). Only the main process writes. After a resume, :meth:`MetricsLog.truncate`
  cuts the JSONL back to the resumed step and the next writer purges TensorBoard events from
  the first step it writes on, so neither holds a step twice.
* :class:`ProgressBar` - a rich bar (``step n/N``, a short status such as the last reward or
  loss, elapsed time and ETA) that does nothing when disabled (tests, logs to files).
* :func:`read_metrics`, :func:`plot_metrics`, :func:`read_tensorboard` - the records read
  back (the JSONL rows, a PNG of some keys against step, the TensorBoard scalars).

Importing this module imports neither torch, rich nor matplotlib; each comes when first used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import Progress
    from torch.utils.tensorboard import SummaryWriter


def _scalar(value: Any) -> float | None:
    """``value`` as a finite-or-nan float if it is a plain number (bools and strings skipped)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class MetricsLog:
    """``metrics.jsonl`` + TensorBoard scalars for one run folder (``out_dir=None``: no-op)."""

    def __init__(
        self, out_dir: str | Path | None, *, tensorboard: bool = True, main_process: bool = True
    ) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None and main_process else None
        self.tensorboard = tensorboard
        self._writer: SummaryWriter | None = None

    @property
    def jsonl(self) -> Path | None:
        return self.out_dir / "metrics.jsonl" if self.out_dir is not None else None

    def write(self, row: Mapping[str, Any]) -> None:
        """Append ``row`` (which must hold an integer ``step``) to both sinks."""
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(row)) + "\n")
        if not self.tensorboard:
            return
        step = int(row["step"])
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: events at >= step left by a crashed run past its checkpoint are dropped
            self._writer = SummaryWriter(log_dir=str(self.out_dir / "tb"), purge_step=step)
        for key, value in row.items():
            v = _scalar(value)
            if key != "step" and v is not None and not math.isnan(v):
                self._writer.add_scalar(key, v, step)
        self._writer.flush()  # rows are seconds apart; a crash must not lose them

    def truncate(self, step: int) -> None:
        """Drop JSONL rows past ``step`` (a crashed run logged beyond its checkpoint)."""
        log = self.jsonl
        if log is None or not log.exists():
            return
        with open(log, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        keep = [r for r in rows if r["step"] <= step]
        log.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ProgressBar:
    """``with ProgressBar(total, start, enabled) as bar: bar.update(step, "reward 0.12")``."""

    def __init__(
        self, total: int, start: int = 0, *, enabled: bool = True, description: str = "train"
    ) -> None:
        self.total, self.start, self.enabled = total, start, enabled
        self.description = description
        self._progress: Progress | None = None
        self._task: Any = None  # a rich TaskID once the bar is shown

    def __enter__(self) -> ProgressBar:
        if not self.enabled:
            return self
        from memory_r1.progress import rich_progress

        self._progress = rich_progress(status=True)
        self._progress.__enter__()
        self._task = self._progress.add_task(
            self.description, total=self.total, completed=self.start, status=""
        )
        return self

    def update(self, step: int, status: str = "") -> None:
        """Show ``step`` done out of ``total`` with ``status`` beside the bar."""
        if self._progress is not None:
            self._progress.update(self._task, completed=step, status=status)

    def note(self, status: str) -> None:
        """Change the status text only (e.g. ``"validating..."``)."""
        if self._progress is not None:
            self._progress.update(self._task, status=status)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None


def read_tensorboard(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar under ``log_dir`` (all its event files): ``tag -> [(step, value), ...]``.

    TensorBoard's own reader, so purged steps (a resumed run) are dropped as it drops them.
    """
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(log_dir), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_metrics(jsonl: str | Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.jsonl``, file order."""
    with open(jsonl, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_metrics(
    jsonl: str | Path, png: str | Path, keys: Sequence[str] = ("reward_mean", "kl", "loss")
) -> Path:
    """One panel per key (those present) against step, from a ``metrics.jsonl``; saved to PNG.

    Uses matplotlib's Agg canvas directly, so no global backend is switched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_metrics(jsonl)
    keys = [k for k in keys if any(k in r for r in rows)]
    fig = Figure(figsize=(4 * max(len(keys), 1), 3), layout="tight")
    FigureCanvasAgg(fig)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([s for s, _ in pts], [v for _, v in pts])
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.savefig(png, dpi=100)
    return Path(png)
