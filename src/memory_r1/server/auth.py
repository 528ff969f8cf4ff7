"""API keys for the REST server: which owners each key may touch, and who is calling.

A key file (``--keys-file``, JSON or TOML by suffix) and the environment variable
``MEMORY_R1_API_KEYS`` (JSON) hold the same shape, key -> the canonical owners it may touch::

    {"k-alice": ["user:alice"], "k-team": ["agent:planner", "run:r1"]}

Both are merged (a key in both must list the same owners). A request sends
``Authorization: Bearer <key>``; the /ui page also accepts HTTP Basic with the key as the
password, so a browser can log in. Keys are compared in constant time: each candidate and each
stored key are hashed to 32 bytes and every stored key is compared, match or not.

Keys are required whenever the server listens beyond loopback (:func:`check_exposure`); on
loopback without keys every caller may touch every owner.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from memory_r1.api.records import ID_KEYS, owner_of
from memory_r1.errors import AccessDenied, ConfigError, DataError

ENV_VAR = "MEMORY_R1_API_KEYS"
OWNER_KINDS = ("user", "agent", "run")


def canonical_owner(user_id: str | None, agent_id: str | None, run_id: str | None) -> str | None:
    """The owner the memory layer stores for these ids (:func:`memory_r1.api.records.owner_of`:
    ``"user:<id>"``, else ``"agent:<id>"``, else ``"run:<id>"``), or None when none is given."""
    ids = {k: v for k, v in zip(ID_KEYS, (user_id, agent_id, run_id)) if v}
    return owner_of(ids) if ids else None


def split_owner(owner: str) -> dict[str, str]:
    """``"user:alice"`` -> ``{"user_id": "alice"}``: the keyword that names that owner."""
    kind, sep, value = owner.partition(":")
    if not sep or kind not in OWNER_KINDS or not value:
        raise DataError("owner", owner, "an owner is user:<id>, agent:<id> or run:<id>")
    return {f"{kind}_id": value}


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``owners`` it may touch, or None for anyone (no keys configured)."""

    owners: frozenset[str] | None = None

    def check(self, owner: str) -> None:
        """Raise ``AccessDenied`` unless this caller may touch ``owner``."""
        if self.owners is not None and owner not in self.owners:
            raise AccessDenied(f"this API key may not touch {owner!r}")


ANYONE = Principal(None)


class ApiKeys:
    """Key -> owners, looked up in constant time."""

    def __init__(self, mapping: Mapping[str, Iterable[str]], source: str = "keys") -> None:
        self._keys: list[tuple[bytes, frozenset[str]]] = []
        for i, (key, owners) in enumerate(mapping.items()):
            where = f"key #{i + 1}"  # never the key itself: error messages end up in logs
            if not isinstance(key, str) or not key.strip():
                raise DataError(source, where, "an API key must be a non-empty string")
            if isinstance(owners, str) or not isinstance(owners, Iterable):
                raise DataError(source, where, "must map to a list of owners, e.g. ['user:alice']")
            scope = frozenset(str(o) for o in owners)
            for owner in scope:
                try:
                    split_owner(owner)
                except DataError as err:
                    raise DataError(source, where, f"owner {owner!r}: {err.problem}") from err
            self._keys.append((_digest(key), scope))

    def __len__(self) -> int:
        return len(self._keys)

    def owners_of(self, token: str) -> frozenset[str] | None:
        """The owners of ``token``, or None if it is no key. Every stored key is compared."""
        probe = _digest(token)
        found: frozenset[str] | None = None
        for digest, scope in self._keys:
            if hmac.compare_digest(probe, digest):
                found = scope
        return found

    def authenticate(self, authorization: str | None, *, basic: bool = False) -> Principal | None:
        """The caller behind an ``Authorization`` header, or None (missing, malformed or wrong).
        ``basic``: also accept HTTP Basic with the key as the password (for browsers)."""
        scheme, _, value = (authorization or "").strip().partition(" ")
        token: str | None = None
        if scheme.lower() == "bearer":
            token = value.strip()
        elif basic and scheme.lower() == "basic":
            token = _basic_password(value.strip())
        if not token:
            return None
        owners = self.owners_of(token)
        return None if owners is None else Principal(owners)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _basic_password(value: str) -> str | None:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


def parse_keys(text: str, source: str, *, toml: bool = False) -> dict[str, list[str]]:
    """JSON (or TOML) text in the key -> owners shape; ``DataError`` naming ``source`` if not."""
    try:
        data = tomllib.loads(text) if toml else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise DataError(source, "", f"not valid {'TOML' if toml else 'JSON'}: {e}") from e
    if not isinstance(data, dict):
        raise DataError(source, "", 'the top level must map keys to owners, e.g. {"k1": ["user:alice"]}')
    return data


def load_keys(keys_file: str | Path | None = None, env: Mapping[str, str] | None = None) -> ApiKeys | None:
    """The keys of ``keys_file`` and of ``$MEMORY_R1_API_KEYS`` merged; None when neither is set."""
    env = os.environ if env is None else env
    merged: dict[str, list[str]] = {}
    sources: list[tuple[str, dict[str, list[str]]]] = []
    if env.get(ENV_VAR, "").strip():
        sources.append((ENV_VAR, parse_keys(env[ENV_VAR], ENV_VAR)))
    if keys_file is not None:
        path = Path(keys_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise DataError(path, "", f"cannot read: {e.strerror or e}") from e
        sources.append((str(path), parse_keys(text, str(path), toml=path.suffix == ".toml")))
    if not sources:
        return None
    for source, data in sources:
        for key, owners in data.items():
            if key in merged and sorted(merged[key]) != sorted(owners):
                raise DataError(source, "", "a key listed in two places with different owners")
            merged[key] = owners
    if not merged:
        raise DataError(" + ".join(s for s, _ in sources), "", "no API keys in it")
    return ApiKeys(merged, source=" + ".join(s for s, _ in sources))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[] ")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, keys: ApiKeys | None) -> None:
    """Refuse (``ConfigError``) to listen beyond loopback without API keys."""
    if not is_loopback(host) and not keys:
        raise ConfigError(
            f"refusing to serve on {host} without API keys: anyone who can reach it could read and "
            f"change every memory. Set {ENV_VAR} or pass --keys-file (key -> owners, e.g. "
            '{"k1": ["user:alice"]}), or listen on 127.0.0.1.'
        )
