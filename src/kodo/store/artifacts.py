"""``app.artifacts``: append-only; the same key with a different hash or URI is a divergence."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kodo.errors import Conflict
from kodo.identity import sha256_hex
from kodo.models import Artifact, NewArtifact
from kodo.store import to_json


def _row_to_artifact(row: sa.Row[Any]) -> Artifact:
    return Artifact(
        run_id=row.run_id,
        step_id=row.step_id,
        task_key=row.task_key,
        idx=row.idx,
        attempt=row.attempt,
        kind=row.kind,
        uri=row.uri,
        inline=row.inline,
        sha256=row.sha256,
        created_at=row.created_at,
    )


def digest(inline: Any) -> str:
    """The sha256 of an artifact's inline content."""
    return sha256_hex(inline if inline is not None else "none")


def add(conn: sa.Connection, run_id: str, artifact: NewArtifact) -> Artifact:
    sha = digest(artifact.inline)
    params = {
        "run_id": run_id,
        "step_id": artifact.step_id,
        "task_key": artifact.task_key,
        "idx": artifact.idx,
        "attempt": artifact.attempt,
        "kind": artifact.kind,
        "uri": artifact.uri,
        "inline": to_json(artifact.inline),
        "sha256": sha,
    }
    row = conn.execute(
        sa.text(
            "INSERT INTO app.artifacts (run_id, step_id, task_key, idx, attempt, kind, uri, inline, sha256) VALUES "
            "(:run_id, :step_id, :task_key, :idx, :attempt, :kind, :uri, CAST(:inline AS jsonb), :sha256) "
            "ON CONFLICT DO NOTHING RETURNING *"
        ),
        params,
    ).first()
    if row is None:
        row = conn.execute(
            sa.text(
                "SELECT * FROM app.artifacts WHERE run_id=:run_id AND step_id=:step_id AND task_key=:task_key "
                "AND idx=:idx AND attempt=:attempt"
            ),
            params,
        ).one()
        if row.sha256 != sha or row.uri != artifact.uri:
            raise Conflict(f"artifact divergence at {artifact.uri}")
    return _row_to_artifact(row)


def list_for_run(conn: sa.Connection, run_id: str) -> list[Artifact]:
    rows = conn.execute(
        sa.text("SELECT * FROM app.artifacts WHERE run_id = :r ORDER BY step_id, task_key, idx, attempt"),
        {"r": run_id},
    )
    return [_row_to_artifact(row) for row in rows]


def get_by_uri(conn: sa.Connection, uri: str) -> Artifact | None:
    """The highest attempt of the artifact at ``uri``."""
    row = conn.execute(
        sa.text("SELECT * FROM app.artifacts WHERE uri = :u ORDER BY attempt DESC, created_at DESC LIMIT 1"),
        {"u": uri},
    ).first()
    return None if row is None else _row_to_artifact(row)


def count(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text("SELECT count(*) FROM app.artifacts")).scalar_one())
