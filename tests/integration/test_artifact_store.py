"""``artifacts.add_all``: a step's artifacts in one statement, append-only, replay-safe, divergence refused."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from kodo.errors import Conflict
from kodo.models import NewArtifact
from kodo.store import artifacts


def _made(text: str = "out") -> list[NewArtifact]:
    return [
        NewArtifact(
            step_id="ExecuteST",
            idx=i,
            kind="stdout",
            attempt=1,
            uri=f"artifact://r/{i}",
            inline={"text": text},
            task_key="t",
        )
        for i in range(3)
    ] + [NewArtifact(step_id="ExecuteST", idx=9, kind="none", attempt=1, uri="artifact://r/none", inline=None)]


def test_add_all_stores_in_order_and_a_replay_writes_nothing(engine: sa.Engine) -> None:
    """Rows come back in the given order with their content; the same batch again returns them, adds no row."""
    with engine.begin() as conn:
        first = artifacts.add_all(conn, "run-a", _made())
    assert [(a.idx, a.inline) for a in first] == [
        (0, {"text": "out"}),
        (1, {"text": "out"}),
        (2, {"text": "out"}),
        (9, None),
    ]
    assert [a.created_at for a in first] == sorted(a.created_at for a in first)
    with engine.begin() as conn:
        again = artifacts.add_all(conn, "run-a", _made())
        count = conn.execute(sa.text("SELECT count(*) FROM app.artifacts WHERE run_id = 'run-a'")).scalar_one()
    assert [a.sha256 for a in again] == [a.sha256 for a in first] and count == 4


def test_add_all_refuses_a_divergent_replay_and_writes_none_of_it(engine: sa.Engine) -> None:
    """The same key with other content is a 409 conflict, and the batch's new rows roll back with it."""
    with engine.begin() as conn:
        artifacts.add_all(conn, "run-b", _made()[:1])
    with pytest.raises(Conflict, match="divergence"), engine.begin() as conn:
        artifacts.add_all(conn, "run-b", _made("other"))
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM app.artifacts WHERE run_id = 'run-b'")).scalar_one()
    assert count == 1
