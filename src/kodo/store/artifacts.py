"""``app.artifacts``: append-only; the same key with a different hash or URI is a divergence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from kodo.errors import Conflict
from kodo.identity import sha256_hex
from kodo.models import Artifact, NewArtifact
from kodo.store import to_json
from kodo.store.statements import sql


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


_INSERT = sql(
    "INSERT INTO app.artifacts (run_id, step_id, task_key, idx, attempt, kind, uri, inline, sha256) "
    "SELECT :run_id, r.step_id, r.task_key, r.idx, r.attempt, r.kind, r.uri, CAST(r.inline AS jsonb), r.sha256 "
    "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS "
    "r(step_id text, task_key text, idx integer, attempt integer, kind text, uri text, inline text, sha256 text, "
    "n integer) "
    "ORDER BY r.n ON CONFLICT DO NOTHING RETURNING *"
)
_EXISTING = sql(
    "SELECT * FROM app.artifacts WHERE run_id=:run_id AND step_id=:step_id AND task_key=:task_key "
    "AND idx=:idx AND attempt=:attempt"
)


def add_all(conn: sa.Connection, run_id: str, made: list[NewArtifact]) -> list[Artifact]:
    """Insert a step's artifacts in one statement, in order. A key already stored is kept if its hash and URI
    match (a replay), else it is a divergence (409)."""
    if not made:
        return []
    rows = [
        {
            "step_id": artifact.step_id,
            "task_key": artifact.task_key,
            "idx": artifact.idx,
            "attempt": artifact.attempt,
            "kind": artifact.kind,
            "uri": artifact.uri,
            "inline": to_json(artifact.inline),
            "sha256": digest(artifact.inline),
            "n": n,
        }
        for n, artifact in enumerate(made)
    ]
    inserted = {
        (row.step_id, row.task_key, row.idx, row.attempt): row
        for row in conn.execute(_INSERT, {"run_id": run_id, "rows": to_json(rows)})
    }
    stored = []
    for params in rows:
        row = inserted.get((params["step_id"], params["task_key"], params["idx"], params["attempt"]))
        if row is None:  # stored before: the same content (a replay), or a divergence
            key = {name: params[name] for name in ("step_id", "task_key", "idx", "attempt")}
            row = conn.execute(_EXISTING, {"run_id": run_id, **key}).one()
        if row.sha256 != params["sha256"] or row.uri != params["uri"]:
            raise Conflict(f"artifact divergence at {params['uri']}")
        stored.append(_row_to_artifact(row))
    return stored


def add(conn: sa.Connection, run_id: str, artifact: NewArtifact) -> Artifact:
    return add_all(conn, run_id, [artifact])[0]


def list_for_run(conn: sa.Connection, run_id: str) -> list[Artifact]:
    rows = conn.execute(
        sql("SELECT * FROM app.artifacts WHERE run_id = :r ORDER BY step_id, task_key, idx, attempt"),
        {"r": run_id},
    )
    return [_row_to_artifact(row) for row in rows]


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """An artifact without its content: what lists show (the content is fetched by its URI)."""

    run_id: str
    step_id: str
    task_key: str
    idx: int
    attempt: int
    kind: str
    uri: str
    sha256: str
    size: int  # characters of its JSON text


def refs_for_run(conn: sa.Connection, run_id: str) -> list[ArtifactRef]:
    """Every artifact of a run, in ``list_for_run``'s order, without reading its content out of Postgres."""
    rows = conn.execute(
        sql(
            "SELECT run_id, step_id, task_key, idx, attempt, kind, uri, sha256, length(inline::text) AS size "
            "FROM app.artifacts WHERE run_id = :r ORDER BY step_id, task_key, idx, attempt"
        ),
        {"r": run_id},
    )
    return [ArtifactRef(**dict(row._mapping)) for row in rows]


def get_by_uri(conn: sa.Connection, uri: str) -> Artifact | None:
    """The highest attempt of the artifact at ``uri``."""
    row = conn.execute(
        sql("SELECT * FROM app.artifacts WHERE uri = :u ORDER BY attempt DESC, created_at DESC LIMIT 1"),
        {"u": uri},
    ).first()
    return None if row is None else _row_to_artifact(row)


def count(conn: sa.Connection) -> int:
    return int(conn.execute(sql("SELECT count(*) FROM app.artifacts")).scalar_one())
