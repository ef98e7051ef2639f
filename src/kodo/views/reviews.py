"""Review cards: the plan's fields and the workspace's diff on the plan gate, a run's recorded diff, and
the run page's "change" card (diff, delivery, templates).

The diff is parsed here (files → lines with old/new line numbers and added/removed/context kinds) so the
console renders it server-side; past ``REVIEW_DIFF_MAX_LINES`` lines the view is cut and links to the full
artifact."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from typing_extensions import TypedDict

from kodo.errors import NotFound
from kodo.identity import artifact_uri
from kodo.models import Run
from kodo.store import artifacts, sandbox_runs, steps, workspaces
from kodo.store.gates import Gate
from kodo.views.runs import require_run


class DiffFileSummary(TypedDict):
    path: str
    added: int
    removed: int


class DiffLineView(TypedDict):
    kind: str  # add | del | ctx | hunk | meta
    text: str
    old: int | None
    new: int | None


class DiffFileView(DiffFileSummary):
    lines: list[DiffLineView]


class DiffView(TypedDict):
    """A diff as a card shows it: every file's counts, the lines shown (cut at ``maxLines``), links."""

    base: Any
    sourceRepo: Any
    files: list[DiffFileSummary]
    shown: list[DiffFileView]
    truncated: bool
    maxLines: int
    artifactUrl: str
    diffUrl: str


class GateReview(TypedDict):
    """The plan gate's card beyond its form: the plan it approves and the diff."""

    plan: dict[str, Any] | None
    diff: DiffView | None


class DeliveryView(TypedDict):
    runId: str
    mode: str
    status: str
    sourceRepo: str
    branch: str
    baseCommit: str
    commit: str | None
    artifactUri: str | None
    error: Any
    requestedBy: str | None
    command: str | None


class TemplateUse(TypedDict):
    taskKey: str
    attempt: int
    templateKey: Any
    source: Any
    environment: Any
    bootMs: Any
    buildMs: Any
    installMs: Any


class ChangeCard(TypedDict):
    """The run page's "change" card."""

    diff: DiffView | None
    delivery: workspaces.Delivery | None
    command: str | None
    templates: list[TemplateUse]


PLAN_FIELDS = ("design", "files", "risks", "tests")
DIFF_URI_NAME = "workspace.diff"
_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


@dataclass(slots=True)
class DiffLine:
    kind: str  # add | del | ctx | hunk | meta
    text: str
    old: int | None = None
    new: int | None = None


@dataclass(slots=True)
class DiffFile:
    path: str
    added: int = 0
    removed: int = 0
    lines: list[DiffLine] = field(default_factory=list)


def _path_of(header: str) -> str:
    """``diff --git a/x b/x`` → ``x``."""
    parts = header.split(" b/", 1)
    return parts[1] if len(parts) == 2 else header.removeprefix("diff --git ")


def parse(text: str) -> list[DiffFile]:
    """A unified (git) diff as files of numbered lines."""
    files: list[DiffFile] = []
    old = new = 0
    current: DiffFile | None = None
    in_header = False  # between ``diff --git`` and the file's first hunk: index, ---/+++, modes
    for line in text.splitlines():
        if line.startswith("diff --git "):
            current, in_header = DiffFile(path=_path_of(line)), True
            files.append(current)
            continue
        if current is None:
            continue
        hunk = _HUNK.match(line)
        if hunk:
            old, new, in_header = int(hunk.group(1)), int(hunk.group(2)), False
            current.lines.append(DiffLine("hunk", line))
        elif in_header or line.startswith("\\"):
            current.lines.append(DiffLine("meta", line))
        elif line.startswith("+"):
            current.lines.append(DiffLine("add", line[1:], None, new))
            current.added, new = current.added + 1, new + 1
        elif line.startswith("-"):
            current.lines.append(DiffLine("del", line[1:], old, None))
            current.removed, old = current.removed + 1, old + 1
        else:
            current.lines.append(DiffLine("ctx", line[1:], old, new))
            old, new = old + 1, new + 1
    return files


def _cap(files: list[DiffFile], max_lines: int) -> tuple[list[DiffFile], bool]:
    """At most ``max_lines`` body lines in all; whether anything was cut."""
    kept: list[DiffFile] = []
    left = max_lines
    for diff_file in files:
        if left <= 0:
            return kept, True
        body = [line for line in diff_file.lines if line.kind != "meta"]
        shown = DiffFile(diff_file.path, diff_file.added, diff_file.removed, body[:left])
        kept.append(shown)
        if len(body) > left:
            return kept, True
        left -= len(body)
    return kept, False


def diff_record(conn: sa.Connection, run: Run) -> dict[str, Any] | None:
    """The run's recorded diff artifact (its latest attempt) as ``{text, base, tree, uri}``, or None."""
    uri = artifact_uri(run.id, "ApplyPatchST", "", DIFF_URI_NAME)
    found = artifacts.get_by_uri(conn, uri)
    if found is None or not isinstance(found.inline, dict):
        return None
    return {**found.inline, "uri": uri}


def diff_view(run: Run, record: dict[str, Any], max_lines: int) -> DiffView:
    """The diff as the gate card shows it: files with their numbered lines, cut at ``max_lines``."""
    files = parse(str(record.get("text") or ""))
    shown, truncated = _cap(files, max_lines)
    return {
        "base": record.get("base"),
        "sourceRepo": record.get("sourceRepo"),
        "files": [{"path": f.path, "added": f.added, "removed": f.removed} for f in files],
        "shown": [
            {
                "path": f.path,
                "added": f.added,
                "removed": f.removed,
                "lines": [{"kind": x.kind, "text": x.text, "old": x.old, "new": x.new} for x in f.lines],
            }
            for f in shown
        ],
        "truncated": truncated,
        "maxLines": max_lines,
        "artifactUrl": "/api/artifacts/" + quote(str(record["uri"]), safe=""),
        "diffUrl": f"/api/runs/{quote(run.workflow_id, safe='')}/diff",
    }


def plan_fields(conn: sa.Connection, run: Run) -> dict[str, Any] | None:
    """The plan the gate approves (ApplyPatchST's output: the compiled plan without its patches)."""
    for record in steps.latest_for_run(conn, run.id):
        if record.step_id == "ApplyPatchST":
            return {name: record.output.get(name) or [] for name in PLAN_FIELDS}
    return None


def gate_review(conn: sa.Connection, run: Run, gate: Gate, max_lines: int) -> GateReview | None:
    """What a plan gate's card — or a merge gate's (the same diff: delivery commits the reviewed tree) — shows
    beyond its form: the plan and the diff (None for other gates)."""
    if gate.purpose not in {"approve-plan", "merge"}:
        return None
    record = diff_record(conn, run)
    return {
        "plan": plan_fields(conn, run),
        "diff": None if record is None else diff_view(run, record, max_lines),
    }


def run_diff(conn: sa.Connection, key: str) -> tuple[Run, str]:
    run = require_run(conn, key)
    record = diff_record(conn, run)
    if record is None and plan_fields(conn, run) is not None:
        return run, ""  # the patches were applied and changed nothing reviewable: an empty diff
    if record is None:
        origin = workspaces.get(conn, run.id)
        what = "its workspace was not set up yet" if origin is None else "its patches were not applied yet"
        raise NotFound(f"run {run.workflow_id} has no diff: {what}")
    return run, str(record.get("text") or "")


def delivery_command(delivery: workspaces.Delivery) -> str:
    """The ``git`` command that shows a delivered branch's change in the source repository."""
    return f"git -C {shlex.quote(delivery.source_repo)} diff {delivery.base_commit[:12]} {shlex.quote(delivery.branch)}"


def delivery_json(delivery: workspaces.Delivery) -> DeliveryView:
    return {
        "runId": delivery.run_id,
        "mode": delivery.mode,
        "status": delivery.status,
        "sourceRepo": delivery.source_repo,
        "branch": delivery.branch,
        "baseCommit": delivery.base_commit,
        "commit": delivery.commit_sha,
        "artifactUri": delivery.artifact_uri,
        "error": delivery.error,
        "requestedBy": delivery.requested_by,
        "command": delivery_command(delivery) if delivery.mode == "branch" else None,
    }


def change_view(conn: sa.Connection, run: Run, max_lines: int) -> ChangeCard:
    """The run page's "change" card: the recorded diff and the delivery, with a copyable git command."""
    record = diff_record(conn, run)
    delivery = workspaces.get_delivery(conn, run.id)
    return {
        "diff": None if record is None else diff_view(run, record, max_lines),
        "delivery": delivery,
        "command": None if delivery is None else delivery_command(delivery),
        "templates": templates_used(conn, run),
    }


def templates_used(conn: sa.Connection, run: Run) -> list[TemplateUse]:
    """Each sandbox attempt's template: its key, installed environment (cold: built for it, warm: reused),
    boot, build and (E2B) install times."""
    used: list[TemplateUse] = []
    for row in sandbox_runs.list_for_run(conn, run.id):
        template = (row["response"] or {}).get("template") or {}
        if template:
            used.append(
                {
                    "taskKey": row["task_key"],
                    "attempt": row["attempt"],
                    "templateKey": template.get("templateKey"),
                    "source": template.get("source"),
                    "environment": template.get("environment") or "none",
                    "bootMs": template.get("bootMs"),
                    "buildMs": template.get("buildMs"),
                    "installMs": template.get("installMs"),  # E2B: the packages' install step in the sandbox
                }
            )
    return used
