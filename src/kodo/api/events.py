"""``GET /api/runs/{wid}/events``: a Server-Sent Events stream of a run's changes.

The server watches a cheap fingerprint of the run (its row, step attempts, gates, artifacts), re-read when
the run row's change notification arrives (``kodo.api.run_changes``) and at least every second, and sends
one ``run`` event whenever it changes, plus a ``ping`` comment every 15 s; the stream ends after the run
is terminal (one last event) or after ``maxSeconds`` (default 300, at most 3600). Browsers reconnect.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from kodo.api.access import requires
from kodo.api.answers import media
from kodo.api.deps import ApiContext, context
from kodo.api.openapi import integer, query
from kodo.api.run_changes import watching
from kodo.errors import InvalidInput
from kodo.models import TERMINAL_HEADER_STATUSES, TERMINAL_STATUSES
from kodo.store import runs
from kodo.views import read_by_key
from kodo.views.runs import RunHeader, header, require_run

router = APIRouter()
SSE_SLICE_SEC = 1.0


def _snapshot(ctx: ApiContext, run_id: str) -> tuple[runs.Fingerprint | None, RunHeader]:
    with ctx.read() as conn:
        fingerprint = runs.fingerprint(conn, run_id)
        run = require_run(conn, run_id)
        return fingerprint, header(ctx, conn, run)


@router.get(
    "/api/runs/{wid}/events",
    openapi_extra=query(("maxSeconds", integer(1, 3600))),
    response_class=StreamingResponse,
    responses=media(200, "text/event-stream", "Server-Sent Events: `event: run` (data: the RunHeader), `event: end`"),
)
@requires("viewer")
async def run_events(wid: str, request: Request) -> StreamingResponse:
    """Stream ``event: run`` (the RunHeader as JSON) each time the run changes."""
    ctx = context(request)
    unknown = set(request.query_params) - {"maxSeconds"}
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    raw = request.query_params.get("maxSeconds", "300")
    if not re.fullmatch("[0-9]{1,4}", raw) or not 1 <= int(raw) <= 3600:
        raise InvalidInput("maxSeconds must be an integer from 1 to 3600")
    max_seconds = int(raw)
    run_id = (await run_in_threadpool(read_by_key, ctx, require_run, wid)).id

    async def stream() -> AsyncIterator[str]:
        deadline = time.monotonic() + max_seconds
        last_print: runs.Fingerprint | str | None = ""  # nothing sent yet
        last_ping = time.monotonic()
        yield "retry: 1000\n\n"
        with watching(ctx.changes, run_id) as watch:  # before each read: a change in between wakes it
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    return
                fingerprint, view = await run_in_threadpool(_snapshot, ctx, run_id)
                if fingerprint != last_print:
                    last_print = fingerprint
                    yield f"event: run\ndata: {json.dumps(view)}\n\n"
                    if view["status"] in TERMINAL_HEADER_STATUSES and view["durableStatus"] in TERMINAL_STATUSES:
                        yield "event: end\ndata: {}\n\n"
                        return
                if time.monotonic() - last_ping > 15:
                    last_ping = time.monotonic()
                    yield ": ping\n\n"
                # A change of the run row wakes it at once; rows that change without it (an operator's audit
                # artifact, a DBOS status) are seen by the re-read every second.
                await watch.wait(min(watch.slice_sec(SSE_SLICE_SEC), max(deadline - time.monotonic(), 0)))

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )
