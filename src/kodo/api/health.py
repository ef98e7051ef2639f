"""``GET /healthz``: the process is up and Postgres answers."""

from __future__ import annotations

import os

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from kodo.api.access import public
from kodo.api.deps import context

router = APIRouter()


@router.get("/healthz")
@public
def healthz(request: Request) -> JSONResponse:
    """200 ``{"ok": true, …}`` when Postgres answers, 503 otherwise."""
    ctx = context(request)
    try:
        with ctx.read() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as error:
        return JSONResponse({"ok": False, "error": f"database unreachable: {type(error).__name__}"}, status_code=503)
    return JSONResponse(
        {
            "ok": True,
            "role": ctx.role,
            "runtimeMode": ctx.settings.mode_for(ctx.role),
            "appVersion": ctx.settings.app_version,
            "pid": os.getpid(),
            **({"unisolatedSandboxAllowed": True} if ctx.settings.unisolated_allowed else {}),
        }
    )
