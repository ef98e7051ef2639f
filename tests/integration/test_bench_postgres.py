"""How `kodo bench` counts its Postgres: the server process of kodo's own database and all it started, found
through the database (an embedded Postgres has no TCP port), so a backend's CPU still counts once it exited
and another Postgres of the machine, stopping mid-repetition, takes nothing away."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from helpers import wait_until
from kodo.bench.probe import Probe, postmaster_of
from kodo.settings import Settings
from kodo.store import create_engine, measurements


def test_the_postmaster_is_the_parent_of_the_databases_backends(engine: sa.Engine) -> None:
    """postmaster_of names a Postgres process that started this connection's backend."""
    postmaster = postmaster_of(engine)
    assert postmaster is not None
    assert Path(f"/proc/{postmaster}/comm").read_text().strip() in {"postgres", "postmaster"}
    with engine.connect() as conn:
        backend = measurements.backend_pid(conn)
        parent = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert parent == postmaster


def test_a_backends_cpu_still_counts_after_it_exited(settings: Settings, engine: sa.Engine) -> None:
    """A connection burns CPU in its backend and closes; the backend exits, and the probe's Postgres CPU still
    holds that CPU (counting the live Postgres processes alone would lose it, and could go down)."""
    probe = Probe(None, None, postmaster_of(engine))
    before = probe.read()["postgresCpu"]
    assert settings.database_url is not None
    burner = create_engine(settings.database_url)
    with burner.connect() as conn:
        backend = measurements.backend_pid(conn)
        conn.execute(sa.text("SELECT count(*) FROM generate_series(1, 3000000)")).scalar_one()
    burner.dispose()
    wait_until(lambda: not Path(f"/proc/{backend}").exists(), timeout=10, what="the backend exited")
    assert probe.read()["postgresCpu"] - before >= 0.05


# A process named "postgres" (as every Postgres process is) that spends CPU, then waits to be stopped.
_OTHER_POSTGRES = """
import ctypes, sys, time
ctypes.CDLL(None).prctl(15, b"postgres", 0, 0, 0)  # PR_SET_NAME
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print("burnt", flush=True)
time.sleep(60)
"""


def test_another_postgres_stopping_takes_nothing_away(engine: sa.Engine) -> None:
    """Another cluster's process (here one named postgres) spent CPU and stops during a repetition: the
    benchmark's Postgres CPU does not go down (counting every Postgres process of the machine, it did: a
    negative postgresCpuSecondsPerRun when another test stopped its embedded Postgres)."""
    other = subprocess.Popen([sys.executable, "-c", _OTHER_POSTGRES], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "burnt"
        assert Path(f"/proc/{other.pid}/comm").read_text().strip() == "postgres"
        probe = Probe(None, None, postmaster_of(engine))
        before = probe.read()["postgresCpu"]
    finally:
        other.kill()
        other.wait(timeout=10)
    assert probe.read()["postgresCpu"] >= before
