"""``GET /api/whoami``: who the caller's token is, so a tool (the MCP server) offers only what it may do."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from kodo.api.access import principal, requires

router = APIRouter()


@router.get("/api/whoami")
@requires("viewer", scoping="shared")
def whoami(request: Request) -> JSONResponse:
    """``{subject, tenant, role, authenticated}``; without tokens kodo checks nothing: role ``admin``."""
    who = principal(request)
    if who is None:
        return JSONResponse({"subject": None, "tenant": None, "role": "admin", "authenticated": False})
    return JSONResponse({"subject": who.subject, "tenant": who.tenant, "role": who.role, "authenticated": True})
