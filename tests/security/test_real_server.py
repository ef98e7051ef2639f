"""The drive-by attacks against a real ``kodo up`` (uvicorn, its own Host handling), not only the ASGI app:
a forged cross-site start, a rebinding read and a form post are refused, and nothing is written."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from e2e.conftest import spawn
from helpers import table_counts
from kodo.store import create_engine
from processes import KodoProcess

__all__ = ["spawn"]
pytestmark = pytest.mark.slow


def test_drive_by_requests_against_a_real_server(spawn: Callable[..., KodoProcess], database_url: str) -> None:
    """text/plain + foreign Origin → 403; rebinding Host → 400; a form post → 415; same-origin JSON → 201."""
    server = spawn("up")
    base = f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            before = table_counts(conn)
        start = '{"recipeRef":{"id":"python-unittest","v":"v1"},"formData":{"repo":"","testCommand":"id"},"opts":{}}'
        forged = httpx.post(
            f"{base}/api/run",
            content=start,
            headers={"content-type": "text/plain", "origin": "http://evil.example"},
        )
        assert forged.status_code == 403
        rebound = httpx.get(f"{base}/api/ops/wf", headers={"host": f"evil.example:{server.port}"})  # type: ignore[attr-defined]
        assert rebound.status_code == 400 and "KODO_ALLOWED_HOSTS" in rebound.json()["error"]
        form = httpx.post(f"{base}/api/intents", data={"goal": "x"})
        assert form.status_code == 415
        with engine.connect() as conn:
            assert table_counts(conn) == before
        own = httpx.post(
            f"{base}/api/intents",
            json={"goal": "mine", "inputs": {}, "constraints": {}},
            headers={"origin": base},
        )
        assert own.status_code == 201, own.text
    finally:
        engine.dispose()
