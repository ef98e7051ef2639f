"""Delivery: the reviewed change leaves kodo as a commit on branch ``kodo/<runId>`` of the source repository
(or, when kodo may not write there, as a ``git format-patch`` artifact), only while it is a git repository under
``KODO_REPO_ROOTS``.

Exactly once, through the ``app.deliveries`` ledger: the row is written ``pending`` before any git work, the
commit is deterministic (fixed author ``kodo <kodo@localhost>``, date = the row's creation), and the branch
is created only if it does not exist. A retried delivery — the DBOS step after a crash, or ``kodo runs
deliver`` by hand — makes the same commit id, finds its branch and just closes the row: never a second commit.

The commit's tree is the one the plan gate reviewed (ApplyPatchST's ``workspace.diff`` artifact), so the
branch's diff equals the reviewed diff. Nothing touches the source's HEAD, index or working tree (see
:mod:`kodo.adapters.workspace_git`). A failed delivery is recorded (``failed``, with its error) and does not
fail the run: its tests passed; ``kodo runs deliver`` can try again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import sqlalchemy as sa
from dbos import DBOS

from kodo import faults
from kodo.adapters import workspace_git
from kodo.errors import Conflict, InvalidInput, NotFound, StepFailure
from kodo.identity import artifact_uri
from kodo.models import NewArtifact
from kodo.settings import Settings
from kodo.store import artifacts, intents, runs, workspaces
from kodo.workflows import repositories
from kodo.workflows.context import RunContext
from kodo.workflows.review import diff_uri
from kodo.workflows.runtime import services

STEP_ID = "DeliverST"
MODES = ("branch",)  # what an intent's (or a recipe's intentTmpl's) ``constraints.deliver`` may ask for


class DeliveryOutcome(TypedDict):
    status: str  # delivered | failed
    mode: str
    branch: str
    commit: str | None
    artifactUri: str | None
    error: dict[str, Any] | None


def requested(ctx: RunContext) -> bool:
    """Whether the run's intent asks for delivery (``constraints.deliver = "branch"``)."""
    return ctx.constraints.get("deliver") in MODES


def branch_name(run_id: str) -> str:
    return f"kodo/{run_id}"


def _message(goal: str, run_id: str, intent_id: str) -> str:
    subject = " ".join(goal.split())[:68] or "change"
    return f"kodo: {subject}\n\nGoal: {goal.strip()}\nRun: {run_id}\nIntent: {intent_id}\n"


def _open(conn: sa.Connection, settings: Settings, key: str, requested_by: str) -> tuple[workspaces.Delivery, str]:
    """Check the run may be delivered and write (or find) its ledger row; returns it with the commit message.

    By hand, only a succeeded run; the workflow's own step runs while the run is still ``running`` (its
    tests passed: ExecuteST left the run to end with its delivery). The source must still be a git
    repository under ``KODO_REPO_ROOTS`` (checked again now: the roots may have changed since the clone)."""
    run = runs.get(conn, key)
    if run is None:
        raise NotFound(f"run not found: {key}")
    delivering = requested_by == "workflow" and run.status == "running"
    if run.status != "succeeded" and not delivering:
        raise Conflict(f"run {run.workflow_id} is {run.status}: only a succeeded run is delivered", status=run.status)
    origin = workspaces.get(conn, run.id)
    reviewed = artifacts.get_by_uri(conn, diff_uri(run.id))
    inline = reviewed.inline if reviewed is not None and isinstance(reviewed.inline, dict) else {}
    if origin is None or not origin.source_repo or not origin.base_commit or not inline.get("tree"):
        raise Conflict(f"run {run.workflow_id} has no git workspace to deliver (its intent named no git repository)")
    try:
        repositories.allowed_repository(origin.source_repo, settings)
    except InvalidInput as error:  # nothing is written: no ledger row, no branch
        raise Conflict(f"run {run.workflow_id} cannot be delivered: {error.message}") from error
    intent = intents.get(conn, run.intent_id)
    source = Path(origin.source_repo)
    delivery = workspaces.ensure_delivery(
        conn,
        run_id=run.id,
        mode="branch" if workspace_git.writable(source) else "patch",
        source_repo=origin.source_repo,
        branch=branch_name(run.id),
        base_commit=origin.base_commit,
        tree=str(inline["tree"]),
        requested_by=requested_by,
    )
    if delivery.status == "failed":
        workspaces.retry_delivery(conn, run.id)
    return delivery, _message(intent.goal if intent else "", run.id, run.intent_id)


def _publish(workspace: Path, delivery: workspaces.Delivery, commit_id: str) -> None:
    """Create the branch unless it is already there with this very commit (a retried delivery)."""
    source = Path(delivery.source_repo)
    found = workspace_git.branch_commit(source, delivery.branch)
    if found is None:
        try:
            workspace_git.publish(workspace, source, commit_id=commit_id, branch=delivery.branch)
        except workspace_git.GitError:
            found = workspace_git.branch_commit(source, delivery.branch)  # a concurrent deliverer made it
            if found is None:
                raise
        faults.hit("delivery.after_branch")
    if found is not None and found != commit_id:
        raise workspace_git.GitError(
            f"branch {delivery.branch} already exists at {found[:12]}, not kodo's {commit_id[:12]}"
        )


def _close(conn: sa.Connection, run_id: str, **fields: Any) -> workspaces.Delivery:
    """Close the ledger row; a run that was waiting for its delivery ends ``succeeded`` with it (its tests
    passed, whatever became of the delivery)."""
    closed = workspaces.finish_delivery(conn, run_id=run_id, **fields)
    run = runs.get(conn, run_id)
    if run is not None and run.status == "running" and run.last_step == "ExecuteST":
        runs.update(conn, run_id, status="succeeded")
    return closed


def _outcome(delivery: workspaces.Delivery) -> DeliveryOutcome:
    return {
        "status": delivery.status,
        "mode": delivery.mode,
        "branch": delivery.branch,
        "commit": delivery.commit_sha,
        "artifactUri": delivery.artifact_uri,
        "error": delivery.error,
    }


def deliver(engine: sa.Engine, settings: Settings, key: str, requested_by: str) -> DeliveryOutcome:
    """Deliver a succeeded run's reviewed change (idempotent; see the module's docstring)."""
    with engine.begin() as conn:
        delivery, message = _open(conn, settings, key, requested_by)
    if delivery.status == "delivered":
        with engine.begin() as conn:  # a step re-run after the row closed: the run ends (again: a no-op)
            return _outcome(_close(conn, delivery.run_id, status="delivered"))
    run_id = delivery.run_id
    workspace = settings.workspaces_dir / run_id
    when = f"@{int(delivery.created_at.timestamp())} +0000"
    uri: str | None = None
    try:
        commit_id = workspace_git.commit(
            workspace, tree=delivery.tree, parent=delivery.base_commit, message=message, when=when
        )
        if delivery.mode == "branch":
            _publish(workspace, delivery, commit_id)
        else:
            patch = workspace_git.format_patch(workspace, commit_id)
            uri = artifact_uri(run_id, STEP_ID, "", "delivery.patch")
            made = NewArtifact(step_id=STEP_ID, idx=0, kind="diff", uri=uri, inline={"text": patch})
            with engine.begin() as conn:
                artifacts.add_all(conn, run_id, [made])
    except (workspace_git.GitError, OSError) as error:
        with engine.begin() as conn:
            failed = _close(conn, run_id, status="failed", error={"code": "DELIVERY_FAILED", "message": str(error)})
        return _outcome(failed)
    with engine.begin() as conn:
        done = _close(conn, run_id, status="delivered", commit_sha=commit_id, artifact_uri=uri)
    return _outcome(done)


@DBOS.step(name="deliver")
def deliver_step(run_id: str) -> DeliveryOutcome:
    """The run's delivery as a durable step (after ExecuteST succeeded): a crash re-runs it, the ledger keeps
    it to one commit."""
    svc = services()
    try:
        return deliver(svc.engine, svc.settings, run_id, "workflow")
    except (Conflict, NotFound) as error:  # asked for, but there is nothing to deliver to: say so
        raise StepFailure("DELIVERY_FAILED", f"DELIVERY_FAILED: {error.message}") from error
