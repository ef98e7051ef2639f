"""The web console in a real browser (Debian chromium, headless): live timeline, gates, artifacts, inbox."""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from kodo.database import with_database
from processes import KodoProcess, clean_env, free_port

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "ui"
playwright.expect.set_options(timeout=60_000)  # DBOS backs its queue polling off under contention
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (.ci/run installs it)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: object, request: pytest.FixtureRequest) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    yield opened
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        opened.screenshot(path=str(OUTPUT / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.fixture(scope="module")
def base(template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `kodo up` for the module, on its own clone of the template database."""
    name = "kodo_ui_" + secrets.token_hex(4)
    with psycopg.connect(with_database(template_url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE kodo_template").format(sql.Identifier(name)))
    home = tmp_path_factory.mktemp("ui-home")
    port = free_port()
    env = clean_env(
        DATABASE_URL=with_database(template_url, name), KODO_HOME=str(home), PORT=str(port), ADMIN_PORT=str(free_port())
    )
    up = KodoProcess(["up"], env, home / "up.log", f"http://127.0.0.1:{port}/healthz").start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        up.stop()
        with psycopg.connect(with_database(template_url, "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def submit(page: object, base: str, goal: str) -> None:
    page.goto(base + "/")  # type: ignore[attr-defined]
    page.get_by_label("Goal").fill(goal)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Run").click()  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r".*\?wid=.*"))  # type: ignore[attr-defined]


def test_submit_watch_live_and_approve(page: object, base: str) -> None:
    """Submit a goal, see WAITING_INPUT arrive live, click Approve Plan, see SUCCESS without a reload."""
    submit(page, base, "console golden path")
    status = page.locator("#run-status")  # type: ignore[attr-defined]
    playwright.expect(status).to_have_text("WAITING_INPUT", timeout=30_000)
    page.evaluate("window.kodoMarker = 'same page'")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Approve Plan").click()  # type: ignore[attr-defined]
    playwright.expect(page.locator("#run-status")).to_have_text("SUCCESS", timeout=30_000)  # type: ignore[attr-defined]
    assert page.evaluate("window.kodoMarker") == "same page"  # type: ignore[attr-defined]
    playwright.expect(page.locator("#timeline")).to_contain_text("ExecuteST")  # type: ignore[attr-defined]


def test_reject_path_shows_the_error(page: object, base: str) -> None:
    """Rejecting the plan with a rationale ends the run in ERROR with PLAN_REJECTED on screen."""
    submit(page, base, "console reject path")
    playwright.expect(page.locator("#run-status")).to_have_text("WAITING_INPUT")  # type: ignore[attr-defined]
    page.get_by_label("rationale (optional)").fill("too risky")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Reject").click()  # type: ignore[attr-defined]
    playwright.expect(page.locator("#run-status")).to_have_text("ERROR")  # type: ignore[attr-defined]
    playwright.expect(page.get_by_role("alert")).to_contain_text("PLAN_REJECTED")  # type: ignore[attr-defined]
    playwright.expect(page.get_by_role("alert")).to_contain_text("too risky")  # type: ignore[attr-defined]


def test_answer_a_question_then_approve(page: object, base: str) -> None:
    """A goal that asks: the question gate takes an answer, then the plan gate, then SUCCESS."""
    submit(page, base, "please ask me first")
    playwright.expect(page.locator("#run-next")).to_have_text("ANSWER_QUESTION")  # type: ignore[attr-defined]
    page.get_by_label("answer").fill("use the small model")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Answer").click()  # type: ignore[attr-defined]
    playwright.expect(page.locator("#run-next")).to_have_text("APPROVE_PLAN")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Approve Plan").click()  # type: ignore[attr-defined]
    playwright.expect(page.locator("#run-status")).to_have_text("SUCCESS")  # type: ignore[attr-defined]


def test_open_an_artifact_and_find_the_gate_in_the_inbox(page: object, base: str) -> None:
    """The inbox links to a waiting run's gate; the plan card artifact opens as pretty JSON."""
    submit(page, base, "inbox and artifact")
    playwright.expect(page.locator("#run-status")).to_have_text("WAITING_INPUT")  # type: ignore[attr-defined]
    wid = page.url.split("wid=")[1]  # type: ignore[attr-defined]
    page.goto(base + "/inbox")  # type: ignore[attr-defined]
    page.get_by_role("link", name=wid).click()  # type: ignore[attr-defined]
    page.get_by_role("button", name="plan_card").click()  # type: ignore[attr-defined]
    dialog = page.locator("#artifact-dialog")  # type: ignore[attr-defined]
    playwright.expect(dialog).to_be_visible()
    playwright.expect(page.locator("#artifact-type")).to_have_text("text/plain")  # type: ignore[attr-defined]
    playwright.expect(page.locator("#artifact-body")).to_contain_text("Design for: inbox and artifact")  # type: ignore[attr-defined]


def test_pages_work_at_phone_width(page: object, base: str) -> None:
    """At 390 px the console and inbox render without horizontal overflow of the page."""
    page.set_viewport_size({"width": 390, "height": 800})  # type: ignore[attr-defined]
    for path in ("/", "/inbox"):
        page.goto(base + path)  # type: ignore[attr-defined]
        width = page.evaluate("document.documentElement.scrollWidth")  # type: ignore[attr-defined]
        assert width <= 390, (path, width)


def test_cancel_and_resume_from_the_ops_console(page: object, base: str) -> None:
    """Cancel then resume a slow workflow from the ops console with actor + reason; the audit shows both."""
    import httpx

    wf = "ui-slow-" + secrets.token_hex(3)
    assert httpx.post(f"{base}/slowstep?wf={wf}&sleep=30000").status_code == 202
    page.goto(f"{base}/ops?wid={wf}")  # type: ignore[attr-defined]
    playwright.expect(page.locator("#ops-status")).to_have_text(re.compile("PENDING|ENQUEUED"))  # type: ignore[attr-defined]
    page.get_by_label("Reason").fill("boundary proof")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Cancel").click()  # type: ignore[attr-defined]
    playwright.expect(page.locator("#ops-status")).to_have_text("CANCELLED")  # type: ignore[attr-defined]
    playwright.expect(page.locator("#ops-audit")).to_contain_text("boundary proof")  # type: ignore[attr-defined]
    page.get_by_label("Reason").fill("carry on")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Resume").click()  # type: ignore[attr-defined]
    playwright.expect(page.locator("#ops-audit")).to_contain_text("carry on")  # type: ignore[attr-defined]
    playwright.expect(page.locator("#ops-status")).not_to_have_text("CANCELLED")  # type: ignore[attr-defined]


def test_recipes_and_throughput_pages_render(page: object, base: str) -> None:
    """The recipe registry lists the shipped pack and starts a run from a stable version; throughput renders."""
    page.goto(base + "/recipes")  # type: ignore[attr-defined]
    page.get_by_role("link", name="compile-default").click()  # type: ignore[attr-defined]
    page.get_by_label("goal (required)").fill("from the recipe page")  # type: ignore[attr-defined]
    page.get_by_role("button", name="Start a run").click()  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r".*\?wid=ih_.*"))  # type: ignore[attr-defined]
    playwright.expect(page.locator("#run-status")).to_have_text(re.compile("ENQUEUED|PENDING|WAITING_INPUT"))  # type: ignore[attr-defined]
    page.goto(base + "/throughput")  # type: ignore[attr-defined]
    playwright.expect(page.get_by_role("heading", name=re.compile("Throughput"))).to_be_visible()  # type: ignore[attr-defined]
