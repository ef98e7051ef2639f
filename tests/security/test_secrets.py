"""Secrets are redacted where kodo prints them: ``kodo db status`` with an external DATABASE_URL, and the
start-up error for a malformed one, never show its password."""

from __future__ import annotations

from pathlib import Path

import pytest

from kodo.database import redacted_url
from processes import clean_env, run_cli


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://kodo:s3cret-pw@db.example:5432/kodo", "postgresql://kodo:***@db.example:5432/kodo"),
        (
            "postgres://kodo@db.example/kodo?password=s3cret-pw&sslmode=require",
            "postgres://kodo@db.example/kodo?password=***&sslmode=require",
        ),
        ("postgresql://db.example/kodo", "postgresql://db.example/kodo"),
        ("mysql:s3cret-pw", "***"),
    ],
)
def test_redacted_url(url: str, shown: str) -> None:
    """The password (in the authority or as a query parameter) is replaced; the rest stays readable."""
    assert redacted_url(url) == shown


def test_db_status_does_not_print_the_password(tmp_path: Path) -> None:
    """kodo db status with an external DATABASE_URL prints where it is, not the password."""
    external = "postgresql://kodo:s3cret-pw@db.example:5432/kodo"
    done = run_cli(["db", "status"], clean_env(KODO_HOME=str(tmp_path / "h"), DATABASE_URL=external))
    assert done.returncode == 0, done.stderr
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert "external: postgresql://kodo:***@db.example:5432/kodo" in done.stdout
    bad = run_cli(["db", "status"], clean_env(KODO_HOME=str(tmp_path / "h"), DATABASE_URL="mysql://u:s3cret-pw@h/d"))
    assert "s3cret-pw" not in bad.stdout + bad.stderr
