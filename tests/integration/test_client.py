"""kodo.client against a live kodo (a real uvicorn on loopback, an in-process worker): the README's Python
golden path, typed results, errors mapped back onto kodo's tree, long-polls and pagination, sync and async."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from kodo.api.deps import ApiContext
from kodo.client import AsyncKodoClient, KodoClient
from kodo.errors import AccessDenied, Conflict, IdentityDrift, InfrastructureError, InvalidInput, NotFound
from kodo.main import Worker, create_app, dbos_client
from kodo.settings import Settings
from kodo_server import live_api, serving
from processes import free_port
from webhook_receiver import receiver

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def base_url(settings: Settings, engine: sa.Engine, worker: Worker) -> Iterator[str]:
    with live_api(settings, engine) as url:
        yield url


def golden_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- golden-python -->\n```python\n(.*?)```", text, re.DOTALL)
    assert match, "README.md has no <!-- golden-python --> block"
    return match.group(1)


def test_the_readme_python_golden_path_runs_as_printed(base_url: str) -> None:
    """The README's Python tour, run as written against a live kodo, prints what its comments say."""
    code = golden_snippet()
    assert 'KodoClient("http://127.0.0.1:3001")' in code
    expected = [line.split("# ", 1)[1].strip() for line in code.splitlines() if line.strip().startswith("print(")]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code.replace("http://127.0.0.1:3001", base_url), "README.md", "exec"), {})
    assert printed.getvalue().splitlines() == expected == ["WAITING_INPUT APPROVE_PLAN", "SUCCESS ExecuteST"]


def test_answers_become_kodo_errors(base_url: str) -> None:
    """400 → InvalidInput, 404 → NotFound, 409 → Conflict / IdentityDrift; no server → InfrastructureError."""
    with KodoClient(base_url) as kodo:
        with pytest.raises(InvalidInput) as bad:
            kodo.create_intent("")
        assert bad.value.status_code == 400  # type: ignore[attr-defined]
        with pytest.raises(NotFound):
            kodo.get_run("it_nope")
        intent = kodo.create_intent("typed errors")
        run = kodo.start_run(intent.intent_id, queue_partition_key="client")
        assert run.workflow_id == intent.intent_id and run.is_replay is False
        assert kodo.start_run(intent.intent_id, queue_partition_key="client").is_replay is True
        with pytest.raises(IdentityDrift) as drift:
            kodo.start_run(intent.intent_id, queue_partition_key="elsewhere")
        assert drift.value.drift[0]["field"] == "queue_partition_key"
        waiting = kodo.wait_for_input(run.workflow_id, timeout_s=60)
        assert waiting.waiting_for_input and waiting.next_action == "APPROVE_PLAN"
        (gate,) = [g for g in kodo.list_gates(run.workflow_id) if g.open]
        assert [item.gate_key for item in kodo.inbox()] == [gate.gate_key]
        assert kodo.diagnosis(run.workflow_id).code
        first = kodo.reply_to_gate(run.workflow_id, gate.gate_key, {"choice": "yes"}, dedupe_key="d1")
        assert first.accepted and not first.is_replay
        with pytest.raises(Conflict):
            kodo.reply_to_gate(run.workflow_id, gate.gate_key, {"choice": "no"}, dedupe_key="d1")
        assert kodo.wait_for_end(run.workflow_id, timeout_s=60).status == "SUCCESS"
        assert kodo.whoami().role == "admin"  # no tokens: nothing is checked
    with KodoClient(f"http://127.0.0.1:{free_port()}") as nowhere, pytest.raises(InfrastructureError):
        nowhere.health()


def test_async_client_runs_a_recipe_and_pages_through_deliveries(base_url: str) -> None:
    """AsyncKodoClient: a recipe run to SUCCESS; three deliveries read two per page, each once."""

    async def scenario() -> None:
        with receiver() as hook:
            async with AsyncKodoClient(base_url) as kodo:
                for _ in range(3):
                    await kodo.create_webhook(hook.url, ["run.succeeded"])
                assert len(await kodo.list_webhooks()) == 3
                recipes = {recipe.recipe_id: recipe for recipe in await kodo.list_recipes()}
                assert "compile-default" in recipes
                run = await kodo.start_recipe_run(
                    "compile-default", "v1", {"goal": "async client"}, queue_partition_key="client", auto_approve=True
                )
                assert (await kodo.wait_for_end(run.workflow_id, timeout_s=60)).status == "SUCCESS"
                seen: list[str] = []
                for _ in range(200):
                    seen = [d.delivery_id async for d in kodo.iter_webhook_deliveries(page_size=2)]
                    if len(seen) == 3:
                        break
                    await asyncio.sleep(0.05)
                assert len(seen) == len(set(seen)) == 3
                with pytest.raises(NotFound):
                    await kodo.delete_webhook("whs_nope")

    asyncio.run(scenario())


def test_access_denied_is_its_own_error(settings: Settings, database_url: str, tmp_path: Path) -> None:
    """A 401 from a kodo with tokens is AccessDenied (checked against a real app, no worker needed)."""
    import json

    from helpers import make_settings
    from kodo.store import create_engine

    spec = {"tokens": [{"token": "viewer-token-000000001", "subject": "v", "tenant": "t", "role": "viewer"}]}
    guarded = make_settings(database_url, tmp_path / "guarded", KODO_API_TOKENS=json.dumps(spec))
    engine = create_engine(database_url)
    dbos = dbos_client(guarded, engine)
    app = create_app(ApiContext(settings=guarded, engine=engine, client=dbos, role="api", changes=None))
    try:
        with serving(app) as url:
            with KodoClient(url) as anonymous, pytest.raises(AccessDenied):
                anonymous.inbox()
            with KodoClient(url, token="viewer-token-000000001") as viewer:
                who = viewer.whoami()
                assert (who.subject, who.tenant, who.role, who.authenticated) == ("v", "t", "viewer", True)
                with pytest.raises(AccessDenied):
                    viewer.create_intent("viewers cannot write")
    finally:
        dbos.destroy()
        engine.dispose()


def test_diff_returns_the_reviewed_change_as_text(base_url: str) -> None:
    """client.diff: the run's change as the text the diff route serves (a patch plan's new file is in it)."""
    plan = [{"targetPath": "notes/new.txt", "postimageContent": "hello\n", "diffText": "+hello\n"}]
    with KodoClient(base_url) as kodo:
        intent = kodo.create_intent("diff via the client", constraints={"patchPlan": plan})
        run = kodo.start_run(intent.intent_id, queue_partition_key="tenant-1")
        run = kodo.wait_for_input(run.workflow_id)
        assert run.next_action == "APPROVE_PLAN"
        text = kodo.diff(run.workflow_id)
        assert "notes/new.txt" in text and "+hello" in text
        with pytest.raises(NotFound):
            kodo.diff("no-such-run")
