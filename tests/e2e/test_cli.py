"""The newcomer path and the CLI as subprocesses: embedded Postgres, ``kodo up``, ``kodo db …``, bad settings."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg

from processes import KodoProcess, clean_env, free_port, run_cli


def test_kodo_up_on_the_embedded_postgres_and_db_commands(tmp_path: Path) -> None:
    """With no DATABASE_URL, `kodo up` starts its own Postgres (with kodo.conf's settings) and serves /healthz;
    `kodo db` manages it."""
    home = tmp_path / "home"
    port = free_port()
    env = clean_env(KODO_HOME=str(home), PORT=str(port), ADMIN_PORT=str(free_port()))
    env.pop("XDG_RUNTIME_DIR", None)  # as on many servers: `kodo db psql` must still print no warning
    up = KodoProcess(["up"], env, tmp_path / "up.log", f"http://127.0.0.1:{port}/healthz")
    try:
        up.start(timeout=90)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["ok"] is True
        url = run_cli(["db", "url"], env)
        assert url.returncode == 0, url.stderr
        with psycopg.connect(url.stdout.strip()) as conn:
            schemas = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}
            # kodo.conf's settings: room for two worker processes and an API under load
            assert conn.execute("SHOW max_connections").fetchone() == ("300",)
        assert {"app", "dbos"} <= schemas
        status = run_cli(["db", "status"], env)
        assert status.returncode == 0 and status.stdout.startswith("running")
        psql = run_cli(["db", "psql", "-tA", "-c", "SELECT count(*) FROM app.recipes"], env)
        assert psql.returncode == 0 and psql.stdout.strip() == "3", psql.stderr
        assert psql.stderr == ""  # no RuntimeDirWarning from the embedded server's package on every call
        migrate = run_cli(["db", "migrate"], env)
        assert migrate.returncode == 0 and "0001_init.sql" in migrate.stdout
        intent = httpx.post(
            f"http://127.0.0.1:{port}/api/intents", json={"goal": "reset me", "inputs": {}, "constraints": {}}
        )
        assert intent.status_code == 201
        up.stop()
        reset = run_cli(["db", "reset", "--yes"], env)
        assert reset.returncode == 0, reset.stderr
        after = run_cli(
            [
                "db",
                "psql",
                "-tA",
                "-c",
                "SELECT (SELECT count(*) FROM app.intents), (SELECT count(*) FROM app.recipes)",
            ],
            env,
        )
        assert after.stdout.strip() == "0|3", after.stdout + after.stderr
    finally:
        up.stop()
        down = run_cli(["db", "down"], env)
    assert down.returncode == 0 and down.stdout.strip() == "stopped"
    assert run_cli(["db", "status"], env).returncode == 1


def test_a_bad_setting_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    """PORT=abc (or OC_MODE=nope) stops `kodo up` at once with a message naming the variable."""
    for name, value in (("PORT", "abc"), ("OC_MODE", "nope"), ("INTENT_QUEUE_PARTITION", "maybe")):
        result = run_cli(["up"], clean_env(KODO_HOME=str(tmp_path / "h"), **{name: value}), timeout=60)
        assert result.returncode != 0
        assert name in result.stderr, result.stderr


def test_every_database_command_group_says_cleanly_when_postgres_is_unreachable(tmp_path: Path) -> None:
    """Through kodo.main.ops_context, each group that opens the database exits 1 with one line, never a traceback."""
    env = clean_env(KODO_HOME=str(tmp_path / "h"), DATABASE_URL=f"postgresql://kodo@127.0.0.1:{free_port()}/kodo")
    commands = (["ops", "list"], ["recipes", "list"], ["webhooks", "list"], ["db", "migrate"], ["runs", "diff", "x"])
    for command in commands:
        result = run_cli(command, env, timeout=60)
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr.startswith("Error: cannot reach Postgres") and "Traceback" not in result.stderr, command
