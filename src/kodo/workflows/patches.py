"""Crash-safe, reversible patches inside a run's workspace (``$KODO_HOME/workspaces/<runId>``).

Write-ahead: for each item of a patch plan, the file's exact preimage (bytes, mode, whether it existed)
is committed to ``app.patch_history`` in its own transaction *before* the file is touched; the file is
then written through a temporary file, fsync and rename, so it holds either image, never a torn one;
"applied" is marked in the step's own transaction, i.e. with its DBOS checkpoint.

* An item that fails (a path outside the workspace, a write error) restores every item before it, in
  reverse order, and marks them rolled back before the step fails.
* A crash leaves rows ``pending`` (neither applied nor rolled back). The step runs again on recovery and
  first restores them (:func:`settle`), so the workspace is fully original before it is patched again:
  it ends fully patched (rows ``applied``) or fully original (rows ``rolled_back``), never mixed.
* :func:`rollback_all` restores the bytes and mode exactly and deletes files the run created.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kodo import faults
from kodo.errors import StepFailure
from kodo.identity import sha256_hex
from kodo.store import patches
from kodo.store.patches import APPLY_STEP, PatchImage, PatchRecord, content_hash

NEW_FILE_MODE = 0o644
CLONE_TIMEOUT_S = 120


def prepare_workspace(workspace: Path, repo: Path | None) -> None:
    """Create the workspace; start it as a clone of ``repo`` (checked by ``kodo.workflows.repositories``).

    Slow (a clone takes up to ``CLONE_TIMEOUT_S``): call it outside any transaction that holds row locks.
    The clone lands in a staging directory renamed into place, so a crash mid-clone leaves no workspace.
    """
    if workspace.exists():
        return
    workspace.parent.mkdir(parents=True, exist_ok=True)
    if repo is not None:
        staging = workspace.with_name(workspace.name + ".cloning")
        subprocess.run(["rm", "-rf", "--", str(staging)], check=True)
        faults.hit("workspace.before_clone")
        subprocess.run(
            ["git", "clone", "--quiet", "--no-hardlinks", "--", str(repo), str(staging)],
            check=True,
            timeout=CLONE_TIMEOUT_S,
        )
        staging.rename(workspace)
    else:
        workspace.mkdir(parents=True, exist_ok=True)


def resolve_target(workspace: Path, target: str) -> Path:
    root = workspace.resolve()
    path = (root / target).resolve()
    if path == root or root not in path.parents:
        raise StepFailure("PATCH_PATH_NOT_ALLOWED", f"PATCH_PATH_NOT_ALLOWED:{target}")
    return path


# --- the file system side: read, write atomically, restore ------------------------------------------


def _read(path: Path) -> tuple[bytes | None, int | None]:
    """(bytes, permission bits) of a regular file, ``(None, None)`` when there is none."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None, None
    if not stat.S_ISREG(info.st_mode):
        raise StepFailure("PATCH_WRITE_FAILED", f"PATCH_WRITE_FAILED:{path.name} is not a regular file")
    return path.read_bytes(), stat.S_IMODE(info.st_mode)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_atomic(path: Path, content: bytes, mode: int) -> None:
    """Temporary file in the same directory, fsync, rename over ``path``, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".kodo-tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def put_file(path: Path, content: bytes | None, mode: int | None) -> None:
    """Make ``path`` hold ``content`` (``None``: no file) with ``mode``."""
    if content is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            _fsync_directory(path.parent)
        return
    _write_atomic(path, content, NEW_FILE_MODE if mode is None else mode)


def restore(workspace: Path, record: PatchRecord) -> None:
    """Put the preimage back if the file holds the postimage; refuse if it holds neither."""
    path = resolve_target(workspace, record.target_path)
    current, mode = _read(path)
    found = content_hash(current)
    if found == record.preimage_hash:  # already restored (or never written): the mode may still differ
        if current is not None and record.preimage_mode is not None and mode != record.preimage_mode:
            os.chmod(path, record.preimage_mode)
        return
    if found != record.postimage_hash:
        raise StepFailure("POSTIMAGE_MISMATCH", f"POSTIMAGE_MISMATCH:{record.target_path}")
    put_file(path, record.preimage, record.preimage_mode)


def _restore_and_mark(engine: sa.Engine, workspace: Path, records: list[PatchRecord]) -> int:
    """Restore ``records`` newest first, each marked rolled back in its own committed transaction."""
    for record in sorted(records, key=lambda r: r.patch_index, reverse=True):
        restore(workspace, record)
        with engine.begin() as conn:
            patches.mark(
                conn,
                run_id=record.run_id,
                step_id=record.step_id,
                patch_index=record.patch_index,
                column="rolled_back_at",
            )
    return len(records)


# --- the ledger side ---------------------------------------------------------------------------------


def settle(engine: sa.Engine, *, run_id: str, workspace: Path, step_id: str = APPLY_STEP) -> int:
    """Recovery: restore the items a crashed attempt of ``step_id`` left ``pending``; returns how many."""
    with engine.connect() as conn:
        pending = [r for r in patches.list_for_run(conn, run_id, step_id) if r.state == "pending"]
    return _restore_and_mark(engine, workspace, pending)


def _postimage(item: dict[str, Any]) -> bytes:
    return str(item["postimageContent"]).encode("utf-8")


def apply_plan(
    conn: sa.Connection, engine: sa.Engine, *, run_id: str, workspace: Path, items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Apply a patch plan write-ahead; returns one ``patch_apply`` artifact payload per item.

    ``conn`` is the step's transaction (it marks the items applied, with the step's checkpoint); ``engine``
    commits each preimage before its file is touched. On failure every item written is restored first.
    """
    changes: list[tuple[str, bytes | None, str]] = [
        (str(item["targetPath"]), _postimage(item), str(item.get("diffText", ""))) for item in items
    ]
    return _apply(conn, engine, run_id=run_id, workspace=workspace, step_id=APPLY_STEP, changes=changes)


def apply_files(
    conn: sa.Connection,
    engine: sa.Engine,
    *,
    run_id: str,
    workspace: Path,
    step_id: str,
    files: list[tuple[str, bytes | None]],
) -> list[dict[str, Any]]:
    """Write files a sandbox changed or created (path relative to the workspace, exact bytes; ``None``: it deleted
    the file) into the workspace, write-ahead as :func:`apply_plan` does, under ``step_id``'s ledger rows, so a
    failed run restores them (a deleted file comes back with its bytes and mode)."""
    changes = [(path, content, "") for path, content in files]
    return _apply(conn, engine, run_id=run_id, workspace=workspace, step_id=step_id, changes=changes)


def _apply(
    conn: sa.Connection,
    engine: sa.Engine,
    *,
    run_id: str,
    workspace: Path,
    step_id: str,
    changes: list[tuple[str, bytes | None, str]],  # (target path, postimage — None: delete it —, diff text)
) -> list[dict[str, Any]]:
    settle(engine, run_id=run_id, workspace=workspace, step_id=step_id)
    written: list[PatchRecord] = []
    try:
        targets = [resolve_target(workspace, target) for target, _, _ in changes]
        for index, ((target, postimage, diff_text), path) in enumerate(zip(changes, targets, strict=True)):
            preimage, mode = _read(path)
            image = PatchImage(
                run_id=run_id,
                patch_index=index,
                target_path=target,
                preimage=preimage,
                preimage_mode=mode,
                postimage=postimage,
                diff_hash=sha256_hex(diff_text),
                step_id=step_id,
            )
            with engine.begin() as ledger:
                written.append(patches.record(ledger, image))
            faults.hit("patch.before_write")
            put_file(path, image.postimage, mode)
            faults.hit("patch.after_write")
    except Exception as error:  # whatever failed, the items written so far go back first
        _restore_and_mark(engine, workspace, written)
        if isinstance(error, OSError):
            raise StepFailure("PATCH_WRITE_FAILED", f"PATCH_WRITE_FAILED:{error}") from error
        raise
    for record in written:
        patches.mark(conn, run_id=run_id, step_id=step_id, patch_index=record.patch_index, column="applied_at")
    return [
        {
            "patchIndex": record.patch_index,
            "targetPath": record.target_path,
            "preimageHash": record.preimage_hash,
            "postimageHash": record.postimage_hash,
            "diffHash": record.diff_hash,
        }
        for record in written
    ]


def rollback_all(conn: sa.Connection, *, run_id: str, workspace: Path) -> int:
    """Restore every applied (or pending) item, newest first (files a sandbox brought back, then the patch plan),
    marked in ``conn``; returns how many."""
    restored = 0
    records = patches.list_for_run(conn, run_id)
    for record in sorted(records, key=lambda r: (r.step_id != APPLY_STEP, r.patch_index), reverse=True):
        if record.state == "rolled_back":
            continue
        restore(workspace, record)
        patches.mark(
            conn, run_id=run_id, step_id=record.step_id, patch_index=record.patch_index, column="rolled_back_at"
        )
        restored += 1
    return restored
