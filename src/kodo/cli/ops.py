"""``kodo ops …``: batch control by filter, inspection, diagnosis and repro packs, straight on the database.

Every command opens the database through ``kodo.main.ops_context`` (not migrated: it operates a kodo that
runs) and loads the ops plane when it runs, so ``kodo --help`` stays fast. Selecting commands take ids
(arguments, or ``--stdin``) and/or filters; mutations need ``--actor`` and ``--reason`` (each action writes
an OPS audit row, as over HTTP), print one id a line (forks: ``<wid>\\t<forkedId>``), show a progress bar
on stderr for long batches and exit 1 if any item failed. ``--dry-run`` lists and counts what would be
touched and writes nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from kodo.cli.context import ops_context
from kodo.errors import KodoError
from kodo.ops.context import MAX_BATCH, MAX_EXECUTIONS

if TYPE_CHECKING:
    from kodo.ops.context import Ops
    from kodo.store.dbos_workflows import Filter

F = TypeVar("F", bound=Callable[..., Any])


def _ops() -> AbstractContextManager[Ops]:
    """The database and DBOS client of one ops command (not migrated: it operates a running kodo)."""
    return ops_context(migrated=False)


_FILTERS = [
    click.option("--status", "statuses", multiple=True, help="DBOS status (ENQUEUED, PENDING, DELAYED, …)."),
    click.option("--run-status", "run_statuses", multiple=True, help="The run's status (queued, waiting_input, …)."),
    click.option("--name", "names", multiple=True, help="Workflow name (RunIntent, ResumeRun, ExecuteTask, …)."),
    click.option("--queue", "queues", multiple=True, help="Queue name (intentQ, sbxQ, controlQ)."),
    click.option("--partition", "partitions", multiple=True, help="Queue partition key."),
    click.option("--tenant", "tenants", multiple=True, help="The run's tenant id."),
    click.option("--lane", "lanes", multiple=True, type=click.Choice(["interactive", "batch"])),
    click.option("--version", "app_versions", multiple=True, help="The workflow's application version."),
    click.option("--older-than", default=None, help="Created longer ago than this (90s, 10m, 2h, 1d)."),
    click.option("--hide-internal", is_flag=True, help="Leave out scheduled and utility workflows."),
    click.option("--stdin", "from_stdin", is_flag=True, help="Also read workflow ids from stdin, one a line."),
    click.option("--limit", type=click.IntRange(1, MAX_BATCH), default=None, help="At most this many."),
]
_LISTS = ("statuses", "run_statuses", "names", "queues", "partitions", "tenants", "lanes", "app_versions")


def selection(func: F) -> F:
    """The ids argument and the filter options every selecting command shares."""
    for option in reversed(_FILTERS):
        func = option(func)
    return click.argument("ids", nargs=-1)(func)


def build_filter(given: dict[str, Any], *, default_limit: int) -> tuple[Filter, bool]:
    """(filter, whether anything was selected at all) from the shared options."""
    from kodo.ops import batch
    from kodo.store.dbos_workflows import Filter

    ids = [i.strip() for i in given.pop("ids", ()) if i.strip()]
    if given.pop("from_stdin", False):
        ids += [line.strip() for line in sys.stdin if line.strip()]
    lists = {key: [str(v) for v in given.pop(key, ())] for key in _LISTS}
    lists["statuses"] = [s.upper() for s in lists["statuses"]]
    older = given.pop("older_than", None)
    try:
        age = batch.parse_age(older) if older else None
    except KodoError as error:
        raise click.BadParameter(error.message, param_hint="--older-than") from error
    hide = bool(given.pop("hide_internal", False))
    limit = given.pop("limit", None)
    chosen = bool(ids or any(lists.values()) or age is not None)
    where = Filter(
        ids=ids,
        statuses=lists["statuses"],
        run_statuses=lists["run_statuses"],
        names=lists["names"],
        queues=lists["queues"],
        partitions=lists["partitions"],
        tenants=lists["tenants"],
        lanes=lists["lanes"],
        app_versions=lists["app_versions"],
        older_than_s=age,
        hide_internal=hide,
        limit=int(limit) if limit else max(len(ids), default_limit),
        oldest_first=True,
    )
    return where, chosen


@click.group("ops")
def ops() -> None:
    """Operate workflows and runs: list, inspect, cancel/resume/fork by filter (audited), diagnose, repro."""


@ops.command("list")
@selection
@click.option("--format", "fmt", type=click.Choice(["ids", "json"]), default="ids", show_default=True)
def list_command(fmt: str, **given: Any) -> None:
    """Workflows matching the filters, oldest first: one id a line, or JSON summaries (default limit 20)."""
    from kodo.ops import batch, workflows

    where, _chosen = build_filter(given, default_limit=20)
    with _ops() as context:
        rows = workflows.list_workflows(context, where)
        hint = None if rows else batch.similar_hint(context, where)
    for row in rows:
        click.echo(row["workflowID"] if fmt == "ids" else json.dumps(row, sort_keys=True))
    if hint:
        click.echo(hint, err=True)


@ops.command("list-failed")
@click.option("--limit", type=click.IntRange(1, MAX_BATCH), default=10, show_default=True)
def list_failed(limit: int) -> None:
    """Workflows in ERROR or MAX_RECOVERY_ATTEMPTS_EXCEEDED, one id a line (oldest first)."""
    from kodo.ops import workflows
    from kodo.store.dbos_workflows import Filter

    where = Filter(statuses=["ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"], limit=limit, oldest_first=True)
    with _ops() as context:
        for row in workflows.list_workflows(context, where):
            click.echo(row["workflowID"])


@ops.command("get")
@click.argument("key")
def get_command(key: str) -> None:
    """One workflow (or run, by any of its ids): summary, run, children and audit, as JSON."""
    from kodo.ops import workflows

    with _ops() as context:
        body = workflows.get_workflow(context, key)
    click.echo(json.dumps(body, indent=2, sort_keys=True, default=str))


@ops.command("steps")
@click.argument("key")
def steps_command(key: str) -> None:
    """DBOS's checkpointed steps of a workflow (pick a fork step here), as JSON."""
    from kodo.ops import workflows

    with _ops() as context:
        body = workflows.steps(context, key)
    click.echo(json.dumps(body, indent=2, sort_keys=True, default=str))


@ops.command("why")
@click.argument("key")
@click.option("--verbose", "-v", is_flag=True, help="Also print the details as JSON.")
def why_command(key: str, verbose: bool) -> None:
    """Why a run (or workflow) is not progressing: one line, ``CODE: reason``."""
    from kodo.ops import diagnosis

    with _ops() as context:
        found = diagnosis.diagnose(context, key)
    click.echo(f"{found['code']}: {found['reason']}")
    if verbose:
        click.echo(json.dumps(found, indent=2, sort_keys=True, default=str))


@ops.command("repro")
@click.argument("key")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the pack to this file.")
def repro_command(key: str, out: str | None) -> None:
    """The run's repro pack: canonical JSON of its app rows and DBOS workflows (stdout, or --out)."""
    from kodo.ops import evidence

    with _ops() as context:
        text = evidence.snapshot_text(context, key)
    if out is None:
        click.echo(text)
        return
    Path(out).write_text(text + "\n", encoding="utf-8")
    click.echo(f"wrote {out} ({len(text)} bytes)")


@ops.command("executions")
@click.argument("key")
@click.option("--limit", type=click.IntRange(1, MAX_EXECUTIONS), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
def executions_command(key: str, limit: int, as_json: bool) -> None:
    """A run's sandbox executions from the execution ledger: one line each (started|finished|interrupted|reused)."""
    from kodo.ops import executions

    with _ops() as context:
        rows = executions.for_run(context, key, limit=limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    click.echo("EXECUTION                         ATTEMPT STATUS       EXIT ERR          TASK")
    for item in rows:
        exit_text = "-" if item["exit"] is None else str(item["exit"])
        click.echo(
            f"{item['executionId']:<33} {item['attempt']:>7} {item['status']:<12} {exit_text:>4} "
            f"{item['errCode'] or '-':<12} {item['taskKey']}"
        )


@ops.command("oracles")
def oracles_command() -> None:
    """Check every SQL oracle (kodo.store.oracles): one line each, ``ok`` or its rows; exit 1 if any has rows.
    A run that ended a moment ago may still show its workflow pending: that oracle alone gets 5 s to settle."""
    from kodo.store import oracles

    with _ops() as context, context.engine.connect() as conn:
        found = oracles.violations(
            conn,
            dead_after_s=context.settings.executor_dead_after_sec,
            workspaces_dir=context.settings.workspaces_dir,
            settle_s=oracles.SETTLE_S,
        )
    for name in oracles.NAMES:
        rows = found.get(name, [])
        click.echo(f"{'ok' if not rows else 'VIOLATED':<8} {name}: {len(rows)} row(s)")
        for row in rows[:20]:
            click.echo(f"         {row}")
    if found:
        raise SystemExit(1)


@ops.command("executors")
def executors_command() -> None:
    """Workers (heartbeat age, version, leader), workflows awaiting recovery and stranded ones, as JSON."""
    from kodo.ops import executors

    with _ops() as context:
        body = executors.view(context)
    click.echo(json.dumps(body, indent=2, sort_keys=True))


def _run_batch(action: str, given: dict[str, Any], options: dict[str, Any] | None = None) -> None:
    from kodo.ops import batch

    actor, reason, dry_run = given.pop("actor"), given.pop("reason"), given.pop("dry_run")
    where, chosen = build_filter(given, default_limit=1000)
    if not chosen:
        raise click.UsageError("select something: ids, --stdin, or at least one filter")
    with _ops() as context:
        targets = [row.workflow_id for row in batch.select(context, where)]
        hint = None if targets else batch.similar_hint(context, where)
        if dry_run:
            for workflow_id in targets:
                click.echo(workflow_id)
            click.echo(f"dry-run: would {action} {len(targets)} workflow(s)", err=True)
            if hint:
                click.echo(hint, err=True)
            return
        if hint:
            click.echo(hint, err=True)
        with click.progressbar(length=len(targets), label=f"{action} ({len(targets)})", file=sys.stderr) as bar:
            outcomes = batch.apply(
                context,
                action,
                targets,
                actor=actor,
                reason=reason,
                options=options,
                progress=bar.update if len(targets) >= 20 else None,
            )
    failed = [o for o in outcomes if not o.ok]
    for outcome in outcomes:
        if outcome.ok:
            forked = outcome.result.get("forkedWorkflowID")
            click.echo(f"{outcome.workflow_id}\t{forked}" if forked else outcome.workflow_id)
        else:
            click.echo(f"FAIL {outcome.workflow_id}: {outcome.error}", err=True)
    click.echo(f"{action}: {len(outcomes) - len(failed)} ok, {len(failed)} failed", err=True)
    if failed:
        sys.exit(1)


def mutation(func: F) -> F:
    """Selection + ``--actor``/``--reason`` (required, audited) + ``--dry-run``."""
    func = click.option("--dry-run", is_flag=True, help="Only list and count what would be touched.")(func)
    func = click.option("--reason", required=True, help="Why (written to the OPS audit).")(func)
    func = click.option("--actor", required=True, help="Who (written to the OPS audit).")(func)
    return selection(func)


def forking(func: F) -> F:
    func = click.option("--app-version", default=None, help="Run the forks on this application version.")(func)
    return click.option("--step", type=click.IntRange(1), required=True, help="Fork from this step (function id).")(
        func
    )


@ops.command("cancel")
@mutation
def cancel_command(**given: Any) -> None:
    """Cancel the selection (a run: its current phase, children and sandboxes), each action audited."""
    _run_batch("cancel", given)


@ops.command("resume")
@mutation
def resume_command(**given: Any) -> None:
    """Resume the selection from its last checkpoint (a cancelled run reopens), each action audited."""
    _run_batch("resume", given)


@ops.command("fork")
@mutation
@forking
def fork_command(step: int, app_version: str | None, **given: Any) -> None:
    """Fork each selected workflow from --step (new ids; earlier steps reused): ``<wid>\\t<forkedId>``."""
    _run_batch("fork", given, {"step": step, "app_version": app_version})


@ops.command("retry-from-step")
@mutation
@forking
def retry_from_step_command(step: int, app_version: str | None, **given: Any) -> None:
    """A fork from --step whose audit reason reads ``retry-from-step:<reason>``: ``<wid>\\t<forkedId>``."""
    _run_batch("retry-from-step", given, {"step": step, "app_version": app_version})


@ops.command("queues")
@click.option("--window", "window_s", type=click.IntRange(1, 30 * 86400), default=300, show_default=True)
def queues_command(window_s: int) -> None:
    """Queue depth and the throughput summary (fairness, priority, completions) as JSON."""
    from kodo.ops import queues

    with _ops() as context:
        body = {
            "depth": queues.depth(context, queue=None, status=None, limit=200),
            "throughput": queues.throughput(context, window_s=window_s),
        }
    click.echo(json.dumps(body, indent=2, sort_keys=True, default=str))


@ops.command("inbox")
@click.option("--hours", type=click.IntRange(1, 24 * 30), default=24, show_default=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
def inbox_command(hours: int, limit: int) -> None:
    """Workflows that failed (ERROR, MAX_RECOVERY_ATTEMPTS_EXCEEDED) in the last hours, newest first, as JSON."""
    from kodo.ops import queues

    with _ops() as context:
        rows = queues.failures(context, window_s=hours * 3600, limit=limit)
    click.echo(json.dumps(rows, indent=2, sort_keys=True, default=str))


@ops.command("slow")
@click.option("--min-ms", type=click.IntRange(0), default=5000, show_default=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
def slow_command(min_ms: int, limit: int) -> None:
    """Checkpointed steps slower than --min-ms, slowest first, as JSON."""
    from kodo.ops import queues

    with _ops() as context:
        rows = queues.slow_steps(context, min_ms=min_ms, limit=limit)
    click.echo(json.dumps(rows, indent=2, sort_keys=True, default=str))


@ops.command("spend")
@click.option("--tenant", default=None, help="Only this tenant's spend.")
@click.option("--since", default=None, help="Only calls since this ISO-8601 time, or this long ago (2h, 7d).")
def spend_command(tenant: str | None, since: str | None) -> None:
    """Agent spend by tenant and model: calls, tokens, USD charged (and priced, for replayed calls), as JSON."""
    from datetime import UTC, datetime

    from kodo.ops import spend

    with _ops() as context:
        start = spend.parse_since(since, datetime.now(UTC))
        with context.engine.connect() as conn:
            rows = spend.report(conn, tenant_id=tenant, since=start)
    click.echo(json.dumps(rows, indent=2, sort_keys=True))
