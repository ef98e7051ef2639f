"""The recipe registry: the shipped pack, import/export round trip, immutability, promotion, CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient

from helpers import table_counts
from kodo.settings import Settings


@pytest.fixture
def api(settings: Settings, engine: sa.Engine) -> Iterator[TestClient]:
    """The API without a worker: registry routes need none."""
    from kodo.api import create_api
    from kodo.api.deps import ApiContext
    from kodo.main import dbos_client

    dbos = dbos_client(settings, engine)
    with TestClient(
        create_api(ApiContext(settings=settings, engine=engine, client=dbos, role="api")), base_url="http://127.0.0.1"
    ) as http:
        yield http
    dbos.destroy()


def version(recipe_id: str = "demo.recipe", v: str = "v1", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": recipe_id,
        "v": v,
        "name": "Demo recipe",
        "formSchema": {"type": "object", "required": ["goal"], "properties": {"goal": {"type": "string"}}},
        "intentTmpl": {"goal": "{{formData.goal}}", "inputs": {}, "constraints": {}},
        "wfEntry": "RunIntent",
        "queue": "intentQ",
        "limits": {"maxSteps": 4, "maxFanout": 2, "maxSbxMin": 5, "maxTokens": 100},
        "eval": [{"kind": "file_exists", "id": "out", "glob": "artifact://run/*/step/ExecuteST/task/*/stdout.log"}],
        "fixtures": [{"id": "one", "formData": {"goal": "demo"}}],
    }
    return {**body, **changes}


def test_shipped_pack_is_loaded_stable(api: TestClient) -> None:
    """A fresh database lists the pack: compile-default@v1 stable, its goal field required."""
    rows = {row["id"]: row for row in api.get("/api/recipes").json()}
    assert {"compile-default", "python-unittest", "fix-failing-test", "json-report"} <= set(rows)
    assert rows["compile-default"]["stableRef"] == "compile-default@v1"
    assert all(row["status"] == "stable" for row in rows.values())
    versions = api.get("/api/recipes/compile-default/versions").json()
    assert [(v["v"], v["status"], v["evalCount"], v["fixtureCount"]) for v in versions] == [("v1", "stable", 1, 2)]
    spec = json.loads(api.post("/api/recipes/export", json={"id": "compile-default"}).text)["versions"][0]
    assert spec["formSchema"]["required"] == ["goal"]
    assert api.get("/api/recipes/nope/versions").json() == []


def test_import_export_round_trip(api: TestClient, engine: sa.Engine) -> None:
    """Import 201 → export is canonical → re-import of the export is 200 with the same hashes."""
    bundle = {"id": "demo-bundle", "versions": [version(v="v2"), version(v="v10"), version(v="v1")]}
    first = api.post("/api/recipes/import", json=bundle)
    assert first.status_code == 201, first.text
    assert [(r["v"], r["status"], r["created"]) for r in first.json()["versions"]] == [
        ("v1", "draft", True),
        ("v2", "draft", True),
        ("v10", "draft", True),
    ]
    exported = api.post("/api/recipes/export", json={"id": "demo.recipe"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/json")
    text = exported.text
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert [v["v"] for v in json.loads(text)["versions"]] == ["v1", "v2", "v10"]
    with engine.connect() as conn:
        before = table_counts(conn)
    again = api.post("/api/recipes/import", content=text, headers={"content-type": "application/json"})
    assert again.status_code == 200, again.text
    assert [r["hash"] for r in again.json()["versions"]] == [r["hash"] for r in first.json()["versions"]]
    assert not any(r["created"] for r in again.json()["versions"])
    assert api.post("/api/recipes/export", json={"id": "demo.recipe"}).text == text
    with engine.connect() as conn:
        assert table_counts(conn) == before
    assert api.post("/api/recipes/export", json={"id": "none"}).json() == {"id": "none", "versions": []}


def test_conflicting_imports_are_409_and_write_nothing(api: TestClient, engine: sa.Engine) -> None:
    """Different content under an existing draft or stable (id, v) is a 409 (never a 500), bundle not written."""
    assert api.post("/api/recipes/import", json={"id": "b", "versions": [version()]}).status_code == 201
    with engine.connect() as conn:
        before = table_counts(conn)
    changed = version(name="Changed")
    draft = api.post("/api/recipes/import", json={"id": "b", "versions": [version(v="v9"), changed]})
    assert draft.status_code == 409 and "different content" in draft.json()["error"]
    stable = api.post("/api/recipes/import", json={"id": "b", "versions": [version("compile-default", name="x")]})
    assert stable.status_code == 409, stable.text
    assert stable.json()["error"] == "stable recipe version is immutable: compile-default@v1"
    with engine.connect() as conn:
        assert table_counts(conn) == before
        assert conn.execute(sa.text("SELECT count(*) FROM app.recipe_versions WHERE v = 'v9'")).scalar_one() == 0


@pytest.mark.parametrize(
    "body",
    [
        "{bad",
        {"id": "b", "versions": []},
        {"id": "b", "versions": [version(extra=True)]},
        {"id": "b", "versions": [version(fixtures=[{"id": "f", "formData": {}}])]},
        {"id": "b", "versions": [version(formSchema={"type": "object", "anyOf": []})]},
    ],
    ids=["malformed", "no versions", "unknown field", "fixture breaks form", "unsupported schema keyword"],
)
def test_bad_imports_are_400(api: TestClient, engine: sa.Engine, body: Any) -> None:
    """Malformed or invalid bundles are 400 with details and write nothing."""
    with engine.connect() as conn:
        before = table_counts(conn)
    if isinstance(body, str):
        response = api.post("/api/recipes/import", content=body, headers={"content-type": "application/json"})
    else:
        response = api.post("/api/recipes/import", json=body)
    assert response.status_code == 400, response.text
    assert "details" in response.json()
    with engine.connect() as conn:
        assert table_counts(conn) == before


def test_stable_versions_are_immutable_in_sql(engine: sa.Engine) -> None:
    """The table itself refuses content changes, deletes and status jumps (append-only)."""
    for statement in (
        "UPDATE app.recipe_versions SET json = '{}'::jsonb WHERE id = 'compile-default'",
        "DELETE FROM app.recipe_versions WHERE id = 'compile-default'",
        "UPDATE app.recipe_versions SET status = 'draft' WHERE id = 'compile-default'",
    ):
        with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
            conn.execute(sa.text(statement))


def _cli(settings: Settings, *args: str, stdin: str | None = None) -> Any:
    from kodo.cli import cli

    env = {"DATABASE_URL": settings.database_url or "", "KODO_HOME": str(settings.home)}
    return CliRunner().invoke(cli, list(args), env=env, input=stdin, catch_exceptions=False)


def test_promotion_gate_via_cli(settings: Settings, engine: sa.Engine, tmp_path: Path) -> None:
    """kodo recipes import/promote/list/export: stable needs an eval and a fixture; draft → stable skips nothing."""
    bundle = {
        "id": "cli",
        "versions": [version("gated", eval=[], fixtures=[]), version("ready")],
    }
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    imported = _cli(settings, "recipes", "import", str(path))
    assert imported.exit_code == 0, imported.output
    assert "gated@v1\tdraft\timported" in imported.output
    jump = _cli(settings, "recipes", "promote", "ready@v1", "--to", "stable")
    assert jump.exit_code == 1 and "one step at a time" in jump.output
    assert _cli(settings, "recipes", "promote", "gated@v1").output.strip() == "gated@v1\tcandidate"
    gated = _cli(settings, "recipes", "promote", "gated@v1")
    assert gated.exit_code == 1 and "0 eval check(s) and 0 fixture(s)" in gated.output
    assert _cli(settings, "recipes", "promote", "ready@v1").exit_code == 0
    assert _cli(settings, "recipes", "promote", "ready@v1").output.strip() == "ready@v1\tstable"
    with engine.connect() as conn:
        status = dict(conn.execute(sa.text("SELECT id, status FROM app.recipe_versions WHERE v = 'v1'")).all())
        active = conn.execute(sa.text("SELECT v FROM app.recipe_active WHERE recipe_id = 'ready'")).scalar()
    assert status["gated"] == "candidate" and status["ready"] == "stable" and active == "v1"
    listed = _cli(settings, "recipes", "list")
    assert "ready\tv1\tstable\tstable=ready@v1" in listed.output
    assert "gated@v1\tcandidate\tevals=0\tfixtures=0" in _cli(settings, "recipes", "list", "gated").output
    exported = _cli(settings, "recipes", "export", "ready", "-o", str(tmp_path / "out.json"))
    assert exported.exit_code == 0 and json.loads((tmp_path / "out.json").read_text())["versions"][0]["id"] == "ready"
    again = _cli(settings, "recipes", "import", "-", stdin=(tmp_path / "out.json").read_text())
    assert "ready@v1\tstable\tunchanged" in again.output
    missing = _cli(settings, "recipes", "promote", "nope@v1")
    assert missing.exit_code == 1 and "recipe version not found: nope@v1" in missing.output
