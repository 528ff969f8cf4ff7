"""A local PostgreSQL 16 + pgvector server in a folder, for tests and for trying the PostgreSQL
store without a database server; and the DSN helpers the store uses.

It runs the server bundled in the ``pgserver`` wheel (part of the ``postgres`` extra), on a
Unix socket inside the folder (no TCP port). As root, ``pgserver`` runs PostgreSQL as a system
user ``pgserver`` that it creates, and makes the folder's parents traversable by it.
Importing this module needs nothing; ``start`` imports ``pgserver``.

>>> server = start("/tmp/memories-pg")                  # doctest: +SKIP
>>> dsn = server.database("memories")                   # doctest: +SKIP
>>> store = open_store(dsn, create_embedder("minilm"))  # doctest: +SKIP
>>> server.stop()                                       # doctest: +SKIP

From a shell: ``python -m memory_r1.store.pglocal start FOLDER`` prints a DSN and leaves the
server running; ``python -m memory_r1.store.pglocal stop FOLDER`` stops it.
"""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from memory_r1.errors import ConfigError
from memory_r1.store import is_dsn

#: Settings for a throwaway server (tests): commits do not wait for the disk. A server crash
#: can lose or corrupt data; a killed *client* still leaves nothing partial.
THROWAWAY_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class LocalServer:
    """A running local server; ``dsn`` reaches its ``postgres`` database as a superuser."""

    def __init__(self, folder: Path, server: Any) -> None:
        self.folder = folder
        self._server = server
        self.dsn: str = server.get_uri()

    def database(self, name: str) -> str:
        """Create database ``name`` if it does not exist; returns its DSN."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return with_database(self.dsn, name)

    def configure(self, settings: dict[str, str]) -> None:
        """``ALTER SYSTEM`` each setting and reload (settings that need no restart)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for key, value in settings.items():
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(key), sql.Literal(value))
                )
            conn.execute("SELECT pg_reload_conf()")

    def stop(self) -> None:
        """Stop the server (its data stays in the folder). Idempotent."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pgserver() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI); its
            # fallback under /tmp is fine for the lock file pgserver keeps there.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            import pgserver
    except ImportError as exc:
        raise ConfigError(
            f"a local PostgreSQL server needs pgserver: pip install 'memory-r1[postgres]' ({exc})"
        ) from exc
    return pgserver


def start(folder: str | Path, *, throwaway: bool = False, keep_running: bool = False) -> LocalServer:
    """Start (initialising on first use) the server whose data lives in ``folder``.

    It stops with ``stop()`` or when this process exits, unless ``keep_running``.
    ``throwaway`` applies ``THROWAWAY_SETTINGS`` (fast commits, for tests).
    """
    folder = Path(folder).expanduser().resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    server = _pgserver().get_server(folder, cleanup_mode=None if keep_running else "stop")
    local = LocalServer(folder, server)
    if throwaway:
        local.configure(THROWAWAY_SETTINGS)
    return local


# -- DSN helpers ----------------------------------------------------------------------------


def with_database(dsn: str, name: str) -> str:
    """The URI ``dsn`` pointing at database ``name`` instead."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


def _password(dsn: str) -> str | None:
    if is_dsn(dsn):
        parts = urlsplit(dsn)
        query = dict(parse_qsl(parts.query))
        return query.get("password") or parts.password
    found = re.search(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn)
    return found.group(1).strip("'") if found else None


def redact(dsn: str) -> str:
    """``dsn`` with its password (URI user-info, ``password=`` parameter) replaced by ``***``."""
    if is_dsn(dsn):
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if parts.password:
            userinfo, _, host = netloc.rpartition("@")
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
        query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)]
        return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="/:,*")))
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)


def redact_text(text: str, dsn: str) -> str:
    """``text`` (e.g. a driver's message) with ``dsn``'s password masked wherever it appears."""
    password = _password(dsn)
    return text.replace(password, "***") if password else text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m memory_r1.store.pglocal", description=__doc__.split("\n")[0]
    )
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--database", default="memories", help="database to create and print the DSN of")
    args = parser.parse_args(argv)
    if args.action == "start":
        print(start(args.folder, keep_running=True).database(args.database))
    else:
        _pgserver().get_server(args.folder.expanduser().resolve(), cleanup_mode="stop").cleanup()


if __name__ == "__main__":
    main()
