"""``GET /healthz``: the process is up and Postgres answers."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from kodo import outages
from kodo.api.access import public
from kodo.api.answers import HealthAnswer, answers
from kodo.api.deps import context
from kodo.api.errors import UNAVAILABLE_RETRY_AFTER_SEC
from kodo.store import measurements

router = APIRouter()


# ``security: []``: OpenAPI's word for "no token needed".
@router.get("/healthz", response_model=HealthAnswer, responses=answers(200, None, 503), openapi_extra={"security": []})
@public
def healthz(request: Request) -> JSONResponse:
    """200 ``{"ok": true, …}`` when Postgres answers, 503 otherwise."""
    ctx = context(request)
    try:
        with ctx.read() as conn:
            measurements.ping(conn)
    except Exception as error:
        return unhealthy(error)
    outages.clock.succeeded()
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


def unhealthy(error: BaseException) -> JSONResponse:
    """503 with the reason (the driver's first line) and ``Retry-After``; notes the outage on the clock."""
    if outages.is_transient(error):
        outages.clock.failed(error)
    state = outages.clock.state()
    return JSONResponse(
        {
            "ok": False,
            "error": f"database unreachable: {type(error).__name__}",
            "reason": outages.describe(error),
            "outageSec": round(state.age_sec(), 1) if state.down else None,
        },
        status_code=503,
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SEC)},
    )
