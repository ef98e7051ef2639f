"""The file side of the patch ledger: atomic writes keep modes, restores are exact and refuse a file that holds
neither image, and the allowed hashes of a file patched twice follow the ledger's states."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kodo.errors import StepFailure
from kodo.store.patches import ABSENT, PatchRecord, allowed_hashes, content_hash
from kodo.workflows import patches

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def record(
    index: int, target: str, before: bytes | None, after: bytes, *, state: str, mode: int | None = None
) -> PatchRecord:
    return PatchRecord(
        run_id="run_x",
        step_id="ApplyPatchST",
        patch_index=index,
        target_path=target,
        preimage_hash=content_hash(before),
        postimage_hash=content_hash(after),
        diff_hash="d",
        preimage_content="",
        postimage_content="",
        preimage_bytes=before,
        postimage_bytes=after,
        preimage_mode=mode,
        preimage_existed=before is not None,
        applied_at=NOW if state == "applied" else None,
        rolled_back_at=NOW if state == "rolled_back" else None,
        created_at=NOW,
    )


def test_restore_puts_back_exact_bytes_and_mode_and_deletes_created_files(tmp_path: Path) -> None:
    """A patched executable gets its bytes and mode back; a created file is removed; restoring twice is a no-op."""
    (tmp_path / "tool").write_bytes(b"patched")
    (tmp_path / "tool").chmod(0o644)
    (tmp_path / "new.txt").write_bytes(b"made")
    changed = record(0, "tool", b"\x00\xffbinary", b"patched", state="applied", mode=0o750)
    created = record(1, "new.txt", None, b"made", state="applied")
    for _ in range(2):
        patches.restore(tmp_path, created)
        patches.restore(tmp_path, changed)
    assert (tmp_path / "tool").read_bytes() == b"\x00\xffbinary"
    assert stat.S_IMODE((tmp_path / "tool").stat().st_mode) == 0o750
    assert not (tmp_path / "new.txt").exists()


def test_restore_refuses_a_file_that_holds_neither_image(tmp_path: Path) -> None:
    """Someone else's change is never overwritten by a rollback: POSTIMAGE_MISMATCH, file untouched."""
    (tmp_path / "a.txt").write_bytes(b"third party")
    with pytest.raises(StepFailure) as failure:
        patches.restore(tmp_path, record(0, "a.txt", b"before", b"after", state="applied"))
    assert failure.value.code == "POSTIMAGE_MISMATCH"
    assert (tmp_path / "a.txt").read_bytes() == b"third party"


def test_an_atomic_write_keeps_the_mode_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    """The written file has the given mode, its directory is created, and no .kodo-tmp file stays behind."""
    target = tmp_path / "deep" / "dir" / "f.sh"
    patches.put_file(target, b"#!/bin/sh\n", 0o755)
    assert target.read_bytes() == b"#!/bin/sh\n" and stat.S_IMODE(target.stat().st_mode) == 0o755
    assert [p.name for p in target.parent.iterdir()] == ["f.sh"]


def test_allowed_hashes_of_a_file_patched_twice() -> None:
    """Applied: only the newest postimage; rolled back: only the original; pending rows add both their images."""
    first, second = (b"A", b"B"), (b"B", b"C")
    applied = [record(0, "f", *first, state="applied"), record(1, "f", *second, state="applied")]
    assert allowed_hashes(applied) == {content_hash(b"C")}
    rolled = [record(0, "f", *first, state="rolled_back"), record(1, "f", *second, state="rolled_back")]
    assert allowed_hashes(rolled) == {content_hash(b"A")}
    pending = [record(0, "f", None, b"B", state="pending"), record(1, "f", *second, state="pending")]
    assert allowed_hashes(pending) == {ABSENT, content_hash(b"B"), content_hash(b"C")}


def test_a_target_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    """``..`` and the workspace root itself are PATCH_PATH_NOT_ALLOWED."""
    for target in ("../escape.txt", ".", "sub/../../x"):
        with pytest.raises(StepFailure) as failure:
            patches.resolve_target(tmp_path, target)
        assert failure.value.code == "PATCH_PATH_NOT_ALLOWED"
