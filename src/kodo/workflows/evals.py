"""Eval checks of a recipe run, evaluated inside ExecuteST's transaction when the execution succeeded.

So they are stored exactly once, with ExecuteST's checkpoint, in ``app.eval_results`` (one row per
check), and become visible together with the run's ``succeeded`` status. A failing check does not fail
the run: evals measure a recipe version (``kodo recipes fixtures run``), they do not gate its runs.

Artifact references are ``fnmatch`` globs over the run's artifact URIs, e.g.
``artifact://run/*/step/ExecuteST/task/*/stdout.log``; ``file_exists`` also accepts a glob relative to
the run's workspace. An artifact's content is its inline ``text``, else its inline ``json``, else the
inline value itself.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kodo.identity import canonical
from kodo.models import Artifact
from kodo.store import artifacts, eval_results, recipe_versions
from kodo.workflows import schema_check
from kodo.workflows.context import RunContext


def content(artifact: Artifact) -> Any:
    inline = artifact.inline
    if isinstance(inline, dict) and "text" in inline:
        return inline["text"]
    if isinstance(inline, dict) and "json" in inline:
        return inline["json"]
    return inline


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def matching(pattern: str, made: list[Artifact]) -> list[Artifact]:
    """The newest attempt of every artifact whose URI matches ``pattern``, in URI order."""
    newest: dict[str, Artifact] = {}
    for artifact in made:
        if not fnmatch.fnmatchcase(artifact.uri, pattern):
            continue
        if artifact.uri not in newest or artifact.attempt > newest[artifact.uri].attempt:
            newest[artifact.uri] = artifact
    return [newest[uri] for uri in sorted(newest)]


def _rows(value: Any) -> int:
    if isinstance(value, list):
        return len(value)
    return sum(1 for line in as_text(value).splitlines() if line.strip())


def _file_exists(check: dict[str, Any], made: list[Artifact], workspace: Path) -> tuple[bool, str, dict[str, Any]]:
    glob = check["glob"]
    if glob.startswith("artifact://"):
        found = [a.uri for a in matching(glob, made)]
    else:
        found = sorted(str(p.relative_to(workspace)) for p in workspace.glob(glob)) if workspace.is_dir() else []
    return bool(found), f"{len(found)} match(es) for {glob}", {"matches": found[:20]}


def _jsonschema(check: dict[str, Any], made: list[Artifact]) -> tuple[bool, str, dict[str, Any]]:
    found = matching(check["artifact"], made)
    if not found:
        return False, f"no artifact matches {check['artifact']}", {"matches": []}
    problems: list[str] = []
    for artifact in found:
        value = content(artifact)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                problems.append(f"{artifact.uri}: not JSON ({error.msg})")
                continue
        problems += [f"{artifact.uri}: {e}" for e in schema_check.validate(value, check["schema"])]
    reason = "; ".join(problems[:5]) if problems else f"{len(found)} artifact(s) conform"
    return not problems, reason, {"matches": [a.uri for a in found][:20], "errors": problems[:20]}


def _rowcount(check: dict[str, Any], made: list[Artifact]) -> tuple[bool, str, dict[str, Any]]:
    found = matching(check["artifact"], made)
    rows = sum(_rows(content(a)) for a in found)
    return rows >= check["n"], f"{rows} row(s) in {len(found)} artifact(s), need >= {check['n']}", {"rows": rows}


def _regex(check: dict[str, Any], made: list[Artifact]) -> tuple[bool, str, dict[str, Any]]:
    found = matching(check["artifact"], made)
    if not found:
        return False, f"no artifact matches {check['artifact']}", {"matches": []}
    pattern = re.compile(check["re"], re.MULTILINE)
    missing = [a.uri for a in found if pattern.search(as_text(content(a))) is None]
    reason = f"no match in {len(missing)} of {len(found)} artifact(s)" if missing else f"matches in {len(found)}"
    return not missing, reason, {"missing": missing[:20]}


def _diff(check: dict[str, Any], made: list[Artifact]) -> tuple[bool, str, dict[str, Any]]:
    sides = []
    for key in ("artifactA", "artifactB"):
        found = matching(check[key], made)
        if not found:
            return False, f"no artifact matches {check[key]}", {"side": key}
        sides.append("\n".join(as_text(content(a)) for a in found).splitlines())
    changed = sum(1 for line in difflib.ndiff(sides[0], sides[1]) if line[:2] in {"+ ", "- "})
    return changed <= check["max"], f"{changed} line(s) differ, allowed <= {check['max']}", {"changed": changed}


def evaluate(check: dict[str, Any], made: list[Artifact], workspace: Path) -> tuple[bool, str, dict[str, Any]]:
    """(pass, reason, payload) of one check; an unexpected error is a failed check, never a failed run."""
    try:
        kind = check["kind"]
        if kind == "file_exists":
            return _file_exists(check, made, workspace)
        if kind == "jsonschema":
            return _jsonschema(check, made)
        if kind == "rowcount_gte":
            return _rowcount(check, made)
        if kind == "regex":
            return _regex(check, made)
        return _diff(check, made)
    except Exception as error:  # a bad artifact must not fail ExecuteST
        return False, f"check error: {type(error).__name__}: {error}", {}


def record_for_run(conn: sa.Connection, ctx: RunContext) -> list[dict[str, Any]]:
    """Evaluate and store the run's recipe checks (called in ExecuteST's transaction)."""
    if not ctx.recipe_id:
        return []
    version = recipe_versions.get(conn, ctx.recipe_id, ctx.recipe_v or "")
    if version is None or not version.eval_checks:
        return []
    made = artifacts.list_for_run(conn, ctx.run_id)
    results = []
    for check in version.eval_checks:
        passed, reason, payload = evaluate(check, made, ctx.workspace)
        payload = json.loads(canonical(payload))
        eval_results.record(
            conn,
            run_id=ctx.run_id,
            check_id=check["id"],
            kind=check["kind"],
            passed=passed,
            reason=reason,
            payload=payload,
        )
        results.append({"checkId": check["id"], "pass": passed})
    return results
