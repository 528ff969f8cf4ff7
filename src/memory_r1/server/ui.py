"""``GET /ui``: a read-only audit page, rendered on the server.

It lists the owners the caller may see (with API keys, only the key's owners), each owner's live
memories, and each memory's full history: every ADD / UPDATE / DELETE / NOOP / INVALID with its
old and new text and when, grouped by memory id; operations that name no memory (an INVALID op
without a target, say) are listed after them. Every value is HTML-escaped, and the page carries a
Content-Security-Policy that allows no script at all. With API keys a browser logs in with HTTP
Basic (any user name, the key as the password); ``Authorization: Bearer`` works too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from memory_r1.errors import DataError
from memory_r1.server.auth import ANYONE, ApiKeys, Principal, split_owner

if TYPE_CHECKING:
    from memory_r1.api import Memory

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
_HISTORY_COLUMNS = ("when", "event", "old text", "new text", "detail")
_BOOKKEEPING = {"dia_id", "session", "user_id", "agent_id", "run_id"}
_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem; color: #1d2330; background: #fafbfc; }
h1 { margin: 0 0 .2rem; } .sub { color: #5b6475; margin-bottom: 1.5rem; }
nav a { margin-right: 1rem; } section.owner { margin: 2rem 0; padding-top: .5rem; border-top: 2px solid #d5dae3; }
article.memory { background: #fff; border: 1px solid #d5dae3; border-radius: 6px; padding: .6rem 1rem; margin: .8rem 0; }
article.deleted { opacity: .8; border-style: dashed; } .id { font: 12px monospace; color: #5b6475; }
table { border-collapse: collapse; width: 100%; margin-top: .4rem; table-layout: fixed; }
th:nth-child(1) { width: 11rem; } th:nth-child(2) { width: 5.5rem; } th:nth-child(5) { width: 30%; }
th, td { text-align: left; vertical-align: top; padding: .25rem .5rem; border-bottom: 1px solid #eceff4; }
th { font-weight: 600; color: #5b6475; font-size: 12px; } td.when { white-space: nowrap; font-size: 12px; }
.ev { font: 600 12px monospace; padding: 1px 6px; border-radius: 3px; background: #eceff4; }
.ev-ADD { background: #d7f5dd; } .ev-UPDATE { background: #fff1c2; } .ev-DELETE { background: #ffd9d9; }
.ev-INVALID { background: #f3d9ff; } .old { color: #8a2d2d; } .new { color: #1f6b33; }
.detail { font: 11px monospace; color: #5b6475; max-width: 28rem; overflow-wrap: anywhere; }
"""


def e(value: object) -> str:
    """``value`` as HTML text: ``None`` as an empty string, everything escaped (quotes too)."""
    return "" if value is None else escape(str(value), quote=True)


def ui_router() -> APIRouter:
    router = APIRouter()

    @router.get("/ui", response_class=HTMLResponse, summary="Audit page (read-only)")
    def ui(request: Request, owner: str | None = None) -> HTMLResponse:
        """Owners, their memories and every operation on them, as one HTML page."""
        principal = _ui_caller(request)
        memory: Memory = request.app.state.memory
        html = render_page(memory, principal, only=owner)
        return HTMLResponse(
            html, headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"}
        )

    return router


def _ui_caller(request: Request) -> Principal:
    keys: ApiKeys | None = request.app.state.keys
    if keys is None:
        return ANYONE
    principal = keys.authenticate(request.headers.get("authorization"), basic=True)
    if principal is None:
        raise HTTPException(
            401,
            "missing or wrong API key (HTTP Basic: the key as the password)",
            {"WWW-Authenticate": 'Basic realm="memory-r1"'},
        )
    return principal


def render_page(memory: Memory, principal: Principal, *, only: str | None = None) -> str:
    """The whole page for ``principal`` (``only``: just that owner, if the caller may see it)."""
    owners = memory.owners(owners=principal.owners)
    if only is not None:
        owners = [o for o in owners if o == only]
    sections = [_owner_section(memory, principal, owner) for owner in owners]
    nav = " ".join(f'<a href="#{_anchor(o)}">{e(o)}</a>' for o in owners)
    body = "\n".join(sections) if sections else '<p class="empty">No memories yet.</p>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>memory-r1 audit</title><style>{_STYLE}</style></head><body>"
        "<h1>memory-r1 audit</h1>"
        f'<div class="sub">{len(owners)} owner(s). Read-only: every operation the Memory Manager '
        "or the API carried out, oldest first.</div>"
        f"<nav>{nav}</nav>\n{body}</body></html>"
    )


def _anchor(owner: str) -> str:
    return "owner-" + "".join(c if c.isalnum() else "-" for c in owner)


def _owner_section(memory: Memory, principal: Principal, owner: str) -> str:
    ids: dict[str, Any] | None
    try:
        ids = dict(split_owner(owner))
    except DataError:  # not an owner a call can name: its history only
        ids = None
    live = memory.get_all(**ids, limit=1000, owners=principal.owners)["results"] if ids else []
    rows = list(memory.audit(owner, owners=principal.owners))
    by_id: dict[str, list[Mapping[str, Any]]] = {str(m["id"]): [] for m in live}
    loose: list[Mapping[str, Any]] = []
    for row in rows:
        mid = row.get("memory_id")
        if mid and (mid in by_id or _touches(row)):
            by_id.setdefault(str(mid), []).append(row)
        else:
            loose.append(row)
    current = {str(m["id"]): m for m in live}
    articles = [_memory_article(mid, current.get(mid), hist) for mid, hist in by_id.items()]
    counts = _event_counts(rows)
    parts = [
        f'<section class="owner" id="{_anchor(owner)}"><h2>{e(owner)}</h2>',
        f'<div class="sub">{len(live)} live memor{"y" if len(live) == 1 else "ies"}; operations: {e(counts)}</div>',
        *articles,
    ]
    if loose:
        parts.append("<h3>Operations on no stored memory</h3>" + _history_table(loose))
    parts.append("</section>")
    return "\n".join(parts)


def _touches(row: Mapping[str, Any]) -> bool:
    """Whether a row changed a stored memory (so it belongs under that memory's id)."""
    return str(row.get("event")) in ("ADD", "UPDATE", "DELETE")


def _event_counts(rows: Iterable[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[_event(row)] = counts.get(_event(row), 0) + 1
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _event(row: Mapping[str, Any]) -> str:
    event = str(row.get("event", ""))
    return "NOOP" if event == "NONE" else event


def _memory_article(mid: str, live: Mapping[str, Any] | None, history: list[Mapping[str, Any]]) -> str:
    if live is not None:
        title, state = live.get("memory"), "live"
    else:
        last: Mapping[str, Any] = next(
            (r for r in reversed(history) if r.get("new_memory") or r.get("old_memory")), {}
        )
        title, state = last.get("new_memory") or last.get("old_memory"), "deleted"
    stamps = (
        f" · created {e(_when(live['created_at']))} · updated {e(_when(live['updated_at']))}" if live else ""
    )
    return (
        f'<article class="memory {state}"><h3>{e(title)}</h3>'
        f'<div class="id">{e(mid)} · {state}{stamps}</div>{_history_table(history)}</article>'
    )


def _history_table(rows: Iterable[Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{c}</th>" for c in _HISTORY_COLUMNS)
    body = "".join(
        "<tr>"
        f'<td class="when">{e(_when(r.get("created_at")))}</td>'
        f'<td><span class="ev ev-{e(_event(r))}">{e(_event(r))}</span></td>'
        f'<td class="old">{e(r.get("old_memory"))}</td>'
        f'<td class="new">{e(r.get("new_memory"))}</td>'
        f'<td class="detail">{e(_detail(r.get("detail")))}</td>'
        "</tr>"
        for r in rows
    )
    return f'<table class="history"><tr>{head}</tr>{body}</table>'


def _when(stamp: Any) -> str:
    """An ISO 8601 UTC time as ``2026-05-08 13:56:02 UTC`` (anything else as it is)."""
    try:
        return datetime.fromisoformat(str(stamp)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return str(stamp or "")


def _detail(detail: Any) -> str:
    """Why an operation was refused (``error``, the model's ``raw`` output) and the caller's
    metadata; the pipeline's bookkeeping (turn ids, owner ids) is left out."""
    if not detail:
        return ""
    if not isinstance(detail, Mapping):
        return str(detail)
    shown = {k: v for k, v in detail.items() if k != "metadata"}
    meta = {k: v for k, v in (detail.get("metadata") or {}).items() if k not in _BOOKKEEPING}
    if meta:
        shown["metadata"] = meta
    return "; ".join(
        f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)}"
        for k, v in shown.items()
    )
