"""``memory-r1 serve`` (the REST server, Mem0's paths, /ui, /docs) and ``memory-r1 mcp`` (an MCP
server on stdio), both over ``memory_r1.api.Memory`` opened from ``--config``.

``serve`` refuses to listen beyond loopback without API keys (``$MEMORY_R1_API_KEYS`` or
``--keys-file``; see :mod:`memory_r1.server.auth`).
"""

from __future__ import annotations

from typing import Any

import click

from memory_r1.cli.options import fail
from memory_r1.errors import MemoryR1Error

_config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Memory config, JSON or TOML (native or Mem0-shaped; default: offline llama.cpp + SQLite).",
)


def register(cli: click.Group) -> None:
    cli.add_command(serve)
    cli.add_command(mcp)


def _open_memory(config: str | None) -> Any:
    from memory_r1.api import Memory, MemoryConfig

    return Memory(MemoryConfig.from_file(config) if config else MemoryConfig())


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option(
    "--keys-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help='API keys, JSON or TOML: key -> owners it may touch, e.g. {"k1": ["user:alice"]} '
    "(merged with $MEMORY_R1_API_KEYS). Required beyond loopback.",
)
@_config_option
def serve(host: str, port: int, keys_file: str | None, config: str | None) -> None:
    """The REST server: Mem0's REST paths, OpenAPI at /docs, the audit page at /ui."""
    from memory_r1.server.auth import check_exposure, load_keys
    from memory_r1.server.rest import create_app, run_server

    try:
        keys = load_keys(keys_file)
        check_exposure(host, keys)
        memory = _open_memory(config)
    except MemoryR1Error as err:
        raise fail(err) from err
    auth = f"{len(keys)} API key(s)" if keys else "no API keys (loopback only)"
    click.echo(f"memory-r1: http://{host}:{port} ({auth}); /docs, /ui", err=True)
    try:
        run_server(create_app(memory, keys=keys), host, port)
    finally:
        memory.close()


@click.command("mcp")
@_config_option
def mcp(config: str | None) -> None:
    """An MCP server on stdin / stdout: tools add, search, list, delete, answer."""
    from memory_r1.server.mcp import run_stdio

    try:
        run_stdio(lambda: _open_memory(config))
    except MemoryR1Error as err:
        raise fail(err) from err
