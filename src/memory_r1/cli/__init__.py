"""The ``memory-r1`` command line (L4). Library errors become clean ``ClickException``s.

Each command module exposes ``register(cli)``, which attaches its commands to the group passed
in; this package calls them in turn. No command module imports this package: what they share
lives in :mod:`memory_r1.cli.options`, what they run in :mod:`memory_r1.app`.
"""

from __future__ import annotations

import os

import click

from memory_r1.cli import bench, evaluate, export, memory, serve, training


@click.group()
@click.version_option(package_name="memory-r1")
def main() -> None:
    """Memory-R1: a memory bank run by a learned Memory Manager and Answer Agent."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


for _module in (evaluate, training, export, bench, memory, serve):
    _module.register(main)
