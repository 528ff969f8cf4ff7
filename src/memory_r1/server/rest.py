"""The REST server: Mem0's open-source REST paths and bodies over ``memory_r1.api.Memory``.

Paths (as mem0 ``server/main.py``, so Mem0 REST clients work unchanged)::

    POST   /memories                  {messages, user_id?, agent_id?, run_id?, metadata?}  (+ infer)
    GET    /memories?user_id&agent_id&run_id                                            (+ limit)
    GET    /memories/{memory_id}
    PUT    /memories/{memory_id}      {"data" | "text" | "memory" | "content": new text}
    GET    /memories/{memory_id}/history
    DELETE /memories/{memory_id}
    DELETE /memories?user_id&agent_id&run_id
    POST   /search                    {query, user_id?, agent_id?, run_id?, filters?}   (+ limit)
    POST   /reset
    POST   /answer                    {question, user_id?, agent_id?, run_id?}          (ours)
    GET    /ui                        the read-only audit page (:mod:`memory_r1.server.ui`)

Where Mem0's server answers 500 for every failure, this one maps each error class once
(:func:`status_of`): a request that does not fit the schema 422 (FastAPI's validation errors), a
missing identifier 400 (Mem0's own check and message), input the memory layer refuses 400, a
missing or wrong API key 401, another owner's scope 403, an unknown, deleted or another owner's
id 404, an LLM backend failure 503. Every error body is ``{"detail": ...}`` saying what is wrong.

Endpoints are plain ``def``: the sync ``Memory`` runs in FastAPI's threadpool (no async twins).
With API keys (:mod:`memory_r1.server.auth`) a caller may touch only its key's owners: the owner
an identifier names is checked here (403), and every call passes ``owners=`` so that the store
scopes ids too (another owner's id is a 404, as an unknown one). ``POST /reset`` with a key resets
only that key's owners.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from memory_r1.errors import AccessDenied, MemoryR1Error, ModelError, NotFoundError
from memory_r1.server.auth import ANYONE, ApiKeys, Principal, canonical_owner
from memory_r1.server.ui import ui_router

if TYPE_CHECKING:
    from memory_r1.api import Memory

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")
MISSING_ID = "At least one identifier (user_id, agent_id, run_id) is required."
_TEXT_KEYS = ("data", "text", "memory", "content")  # Mem0's server passes the body on; clients send one


class Message(BaseModel):
    role: str = Field(..., description="Role of the message (user or assistant).")
    content: str = Field(..., description="Message content.")


class MemoryCreate(BaseModel):
    messages: list[Message] = Field(..., description="List of messages to store.")
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    metadata: dict[str, Any] | None = None
    infer: bool = Field(
        True, description="Extract facts and let the Memory Manager decide (else store as is)."
    )


class SearchRequest(BaseModel):
    query: str = Field(..., description="Search query.")
    user_id: str | None = None
    run_id: str | None = None
    agent_id: str | None = None
    filters: dict[str, Any] | None = None
    limit: int = Field(100, ge=1, le=1000, description="At most this many results, most similar first.")


class AnswerRequest(BaseModel):
    question: str = Field(..., description="A question to answer from the owner's memories.")
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None


class Detail(BaseModel):
    detail: str = Field(..., description="What is wrong.")


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Detail, "description": "No identifier given, or input the memory layer refuses"},
    401: {"model": Detail, "description": "Missing or wrong API key"},
    403: {"model": Detail, "description": "An owner this API key may not touch"},
    404: {"model": Detail, "description": "No such memory for this caller"},
    503: {"model": Detail, "description": "The LLM backend failed"},
}


def status_of(err: Exception) -> int:
    """The HTTP status of an error the memory layer raised on purpose."""
    if isinstance(err, NotFoundError):
        return 404
    if isinstance(err, AccessDenied):
        return 403
    if isinstance(err, ModelError):
        return 503
    return 400  # InvalidInput, ConfigError, DataError, StoreError, ValueError: input it refuses


def caller(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """Who is calling: anyone without keys, else the owners of the bearer key (401 if none)."""
    keys: ApiKeys | None = request.app.state.keys
    if keys is None:
        return ANYONE
    principal = keys.authenticate(request.headers.get("authorization"))
    if principal is None:
        raise HTTPException(
            401, "missing or wrong API key: send Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"}
        )
    return principal


Caller = Annotated[Principal, Depends(caller)]


def scope_of(
    principal: Principal, user_id: str | None, agent_id: str | None, run_id: str | None
) -> dict[str, Any]:
    """The identifier keywords of a call (empty ones dropped), after checking the caller may touch
    the owner they name: 400 if none is given, ``AccessDenied`` (403) if not its owner."""
    ids = {"user_id": user_id or None, "agent_id": agent_id or None, "run_id": run_id or None}
    owner = canonical_owner(**ids)
    if owner is None:
        raise HTTPException(400, MISSING_ID)
    principal.check(owner)
    return {k: v for k, v in ids.items() if v is not None}


def _memory(request: Request) -> Memory:
    memory: Memory = request.app.state.memory
    return memory


def _error(_request: Request, err: Exception) -> JSONResponse:
    status = status_of(err)
    if status >= 500:
        log.error("memory layer failed: %s", err)
    return JSONResponse({"detail": str(err) or type(err).__name__}, status_code=status)


def create_app(memory: Memory, *, keys: ApiKeys | None = None) -> FastAPI:
    """The FastAPI app over ``memory``; ``keys``: require API keys (None: anyone may call)."""
    app = FastAPI(
        title="memory-r1 REST API",
        description="Mem0's REST paths over the Memory-R1 memory layer (Memory Manager + Answer Agent).",
        version="1.0.0",
        responses=_ERRORS,
    )
    app.state.memory = memory
    app.state.keys = keys if keys else None
    app.add_exception_handler(MemoryR1Error, _error)
    app.add_exception_handler(ValueError, _error)
    _id_routes(app)
    _scope_routes(app)
    app.include_router(ui_router())
    app.add_api_route("/", _home, include_in_schema=False)
    return app


def _home() -> RedirectResponse:
    """``/`` redirects to the OpenAPI documentation, as in Mem0's server."""
    return RedirectResponse(url="/docs")


def _id_routes(app: FastAPI) -> None:
    """Calls naming one memory by id: the store checks its owner (another's is a 404)."""

    @app.get("/memories/{memory_id}", summary="Get a memory")
    def get_memory(memory_id: str, request: Request, who: Caller) -> Any:
        """Retrieve a specific memory by ID."""
        item = _memory(request).get(memory_id, owners=who.owners)
        if item is None:
            raise HTTPException(404, f"no memory {memory_id!r} for this caller")
        return item

    @app.put("/memories/{memory_id}", summary="Update a memory")
    def update_memory(memory_id: str, updated_memory: dict[str, Any], request: Request, who: Caller) -> Any:
        """Replace a memory's text: the body's ``data`` (or ``text``, ``memory``, ``content``)."""
        text = next((updated_memory[k] for k in _TEXT_KEYS if k in updated_memory), None)
        if not isinstance(text, str):
            msg = 'the body must hold the new text as a string: {"data": "..."} (or "text", "memory", "content")'
            raise RequestValidationError(
                [{"type": "string_type", "loc": ("body", "data"), "msg": msg, "input": text}]
            )
        return _memory(request).update(memory_id, text, owners=who.owners)

    @app.get("/memories/{memory_id}/history", summary="Get memory history")
    def memory_history(memory_id: str, request: Request, who: Caller) -> Any:
        """Every operation on one memory, oldest first."""
        return _memory(request).history(memory_id, owners=who.owners)

    @app.delete("/memories/{memory_id}", summary="Delete a memory")
    def delete_memory(memory_id: str, request: Request, who: Caller) -> Any:
        """Delete a specific memory by ID."""
        _memory(request).delete(memory_id, owners=who.owners)
        return {"message": "Memory deleted successfully"}


def _scope_routes(app: FastAPI) -> None:
    """Calls naming an owner by user_id / agent_id / run_id: checked against the key first (403)."""

    @app.post("/memories", summary="Create memories")
    def add_memory(body: MemoryCreate, request: Request, who: Caller) -> Any:
        """Store new memories (the Memory Manager decides ADD / UPDATE / DELETE / NOOP)."""
        ids = scope_of(who, body.user_id, body.agent_id, body.run_id)
        messages = [m.model_dump() for m in body.messages]
        return _memory(request).add(
            messages, **ids, metadata=body.metadata, infer=body.infer, owners=who.owners
        )

    @app.get("/memories", summary="Get memories")
    def get_all_memories(
        request: Request,
        who: Caller,
        user_id: str | None = None,
        run_id: str | None = None,
        agent_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Any:
        """Retrieve stored memories."""
        ids = scope_of(who, user_id, agent_id, run_id)
        return _memory(request).get_all(**ids, limit=limit, owners=who.owners)

    @app.delete("/memories", summary="Delete all memories")
    def delete_all_memories(
        request: Request,
        who: Caller,
        user_id: str | None = None,
        run_id: str | None = None,
        agent_id: str | None = None,
    ) -> Any:
        """Delete all memories for a given identifier."""
        ids = scope_of(who, user_id, agent_id, run_id)
        _memory(request).delete_all(**ids, owners=who.owners)
        return {"message": "All relevant memories deleted"}

    @app.post("/search", summary="Search memories")
    def search_memories(body: SearchRequest, request: Request, who: Caller) -> Any:
        """Search for memories based on a query; ``score``: higher is more similar."""
        ids = scope_of(who, body.user_id, body.agent_id, body.run_id)
        return _memory(request).search(
            body.query, **ids, limit=body.limit, filters=body.filters, owners=who.owners
        )

    @app.post("/reset", summary="Reset all memories")
    def reset_memory(request: Request, who: Caller) -> Any:
        """Completely reset stored memories (with an API key: only that key's owners)."""
        _memory(request).reset(owners=who.owners)
        return {"message": "All memories reset"}

    @app.post("/answer", summary="Answer a question from memory")
    def answer(body: AnswerRequest, request: Request, who: Caller) -> Any:
        """The Answer Agent: retrieve, select the relevant memories, answer."""
        ids = scope_of(who, body.user_id, body.agent_id, body.run_id)
        return _memory(request).answer(body.question, **ids, owners=who.owners)


def run_server(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
