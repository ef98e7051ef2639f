"""``GET /api/whoami``: who the caller's token is, so a tool (the MCP server) offers only what it may do."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from kodo.api.access import principal, requires
from kodo.api.answers import ErrorAnswer

router = APIRouter()


class WhoamiAnswer(BaseModel):
    subject: str | None
    tenant: str | None
    role: Literal["viewer", "approver", "operator", "admin"]
    authenticated: bool


@router.get(
    "/api/whoami",
    response_model=WhoamiAnswer,
    responses={401: {"model": ErrorAnswer, "description": "No valid bearer token (when kodo has tokens)"}},
)
@requires("viewer", scoping="shared")
def whoami(request: Request) -> JSONResponse:
    """``{subject, tenant, role, authenticated}``; without tokens kodo checks nothing: role ``admin``."""
    who = principal(request)
    if who is None:
        return JSONResponse({"subject": None, "tenant": None, "role": "admin", "authenticated": False})
    return JSONResponse({"subject": who.subject, "tenant": who.tenant, "role": who.role, "authenticated": True})
