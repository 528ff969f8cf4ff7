"""Where commands write by default (L0): one place that reads the environment.

* ``$MEMORY_R1_RUNS``    run folders of ``eval`` / ``train`` / ``sft`` (default ``./runs``);
* ``$MEMORY_R1_REPORTS`` benchmark reports of ``bench`` (default ``./reports``).

Model files live elsewhere (``$MEMORY_R1_HOME``, see ``memory_r1.llm.models``). Tests point both
variables at temporary folders, so no test writes into the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path


def runs_dir() -> Path:
    """The folder under which run folders are created by default."""
    return Path(os.environ.get("MEMORY_R1_RUNS") or "runs")


def reports_dir() -> Path:
    """The folder under which benchmark reports are written by default."""
    return Path(os.environ.get("MEMORY_R1_REPORTS") or "reports")
