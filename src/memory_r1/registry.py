"""Lazy registries (L0): a pluggable kind is a dict ``{"name": "package.module:Attr"}`` and the
module is imported only when that name is chosen, so optional dependencies stay optional."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from memory_r1.errors import UnknownModelError


def resolve(registry: Mapping[str, str], name: str, kind: str) -> Any:
    """The object registered as ``name``; an unknown name raises ``UnknownModelError`` listing
    the known ones (``kind`` names the registry in the message, e.g. "embedder")."""
    try:
        target = registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise UnknownModelError(f"unknown {kind} {name!r}; known: {known}") from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
