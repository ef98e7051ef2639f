"""Git plumbing on a run's workspace and on the repository it was cloned from.

Nothing here touches a checked-out branch, an index or a working tree other than the workspace's own
files being read: snapshots use a throwaway index (``GIT_INDEX_FILE``), commits are made with
``commit-tree`` (HEAD does not move), and delivery *fetches* the commit into the source's object store and
creates its branch with a create-only ``update-ref`` — so a second delivery can never move it.

Every git call disables hooks and the fsmonitor: a workspace's ``.git`` is writable by the sandboxed
command, and its configuration must not make kodo run a program.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

AUTHOR_NAME = "kodo"
AUTHOR_EMAIL = "kodo@localhost"
_SAFE = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "diff.external="]
_TIMEOUT_S = 120


class GitError(RuntimeError):
    """A git command failed; the message carries its stderr."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The workspace's change against its base: the unified diff and the tree that holds it."""

    diff: str
    tree: str | None  # None for a workspace that is not a git clone


def _git(
    repo: Path, *args: str, env: dict[str, str] | None = None, git_dir: bool = False, check: bool = True
) -> subprocess.CompletedProcess[str]:
    location = ["--git-dir", str(repo)] if git_dir else ["-C", str(repo)]
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
    done = subprocess.run(
        ["git", *_SAFE, *location, *args],
        capture_output=True,
        # Non-UTF-8 file content in a diff shows as U+FFFD rather than failing the step (a binary file is a
        # "GIT binary patch", which is ASCII); what is stored must be valid text for the artifact's JSON.
        encoding="utf-8",
        errors="replace",
        env=full_env,
        timeout=_TIMEOUT_S,
        check=False,
    )
    if check and done.returncode != 0:
        raise GitError(f"git {' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def is_clone(workspace: Path) -> bool:
    return (workspace / ".git").exists()


def git_dir(repository: Path) -> Path:
    """The repository's git directory (``<repo>/.git``, or the repository itself when bare)."""
    dot_git = repository / ".git"
    return dot_git if dot_git.is_dir() else repository


def head(workspace: Path) -> str | None:
    """The commit the workspace's HEAD points at (its base), or None when it is not a git clone."""
    if not is_clone(workspace):
        return None
    done = _git(workspace, "rev-parse", "--verify", "HEAD^{commit}", check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def snapshot(workspace: Path, base: str, paths: Sequence[str]) -> Snapshot:
    """The diff of the workspace against ``base``: tracked files as they are now, plus ``paths`` (files the
    patch ledger wrote) even when new. Untracked files nobody patched (caches, build output) are left out."""
    with tempfile.TemporaryDirectory(prefix="kodo-index-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        _git(workspace, "read-tree", base, env=env)
        _git(workspace, "add", "--update", env=env)
        present = [p for p in paths if (workspace / p).exists()]
        if present:
            _git(workspace, "add", "--force", "--", *present, env=env)
        tree = _git(workspace, "write-tree", env=env).stdout.strip()
    diff = _git(workspace, "diff", "--no-color", "--no-ext-diff", "--no-textconv", "--binary", base, tree).stdout
    return Snapshot(diff=diff, tree=tree)


def ledger_diff(changes: Sequence[tuple[str, str, str]]) -> str:
    """A unified diff from (path, preimage, postimage) triples, for a workspace that is not a git clone."""
    out: list[str] = []
    for path, before, after in changes:
        if before == after:
            continue
        old = f"a/{path}" if before else "/dev/null"
        lines = difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), fromfile=old, tofile=f"b/{path}"
        )
        out.append(f"diff --git a/{path} b/{path}\n")
        out.extend(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
    return "".join(out)


def commit(workspace: Path, *, tree: str, parent: str, message: str, when: str) -> str:
    """A commit object of ``tree`` on ``parent`` (HEAD does not move). Author, committer and date are fixed,
    so the same delivery always makes the same commit id."""
    env = {
        "GIT_AUTHOR_NAME": AUTHOR_NAME,
        "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
        "GIT_COMMITTER_NAME": AUTHOR_NAME,
        "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
        "GIT_AUTHOR_DATE": when,
        "GIT_COMMITTER_DATE": when,
    }
    return _git(workspace, "commit-tree", tree, "-p", parent, "-m", message, env=env).stdout.strip()


def branch_commit(source: Path, branch: str) -> str | None:
    """The commit ``refs/heads/<branch>`` points at in ``source``, or None."""
    done = _git(
        git_dir(source),
        "rev-parse",
        "--verify",
        "--quiet",
        f"refs/heads/{branch}^{{commit}}",
        git_dir=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def tree_of(repository: Path, commit_id: str) -> str:
    return _git(git_dir(repository), "rev-parse", f"{commit_id}^{{tree}}", git_dir=True).stdout.strip()


def parents_of(repository: Path, commit_id: str) -> list[str]:
    line = _git(git_dir(repository), "rev-list", "--parents", "-n", "1", commit_id, git_dir=True).stdout.split()
    return line[1:]


def publish(workspace: Path, source: Path, *, commit_id: str, branch: str) -> None:
    """Create ``refs/heads/<branch>`` = ``commit_id`` in ``source``: the commit's objects are fetched from the
    workspace into the source's object store, then the branch is created only if it does not exist."""
    handoff = "refs/kodo/delivery"
    _git(workspace, "update-ref", handoff, commit_id)
    source_git = git_dir(source)
    _git(source_git, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", str(workspace), handoff, git_dir=True)
    _git(source_git, "update-ref", "-m", "kodo delivery", f"refs/heads/{branch}", commit_id, "", git_dir=True)


def format_patch(workspace: Path, commit_id: str) -> str:
    """The commit as a ``git format-patch`` mail (for a source kodo may not write to)."""
    return _git(workspace, "format-patch", "-1", "--stdout", "--no-color", commit_id).stdout


def writable(source: Path) -> bool:
    """Whether kodo may write the source's refs and objects."""
    directory = git_dir(source)
    return os.access(directory, os.W_OK) and os.access(directory / "objects", os.W_OK)
