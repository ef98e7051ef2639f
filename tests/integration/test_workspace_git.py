"""The review diff of a real git workspace whose files are not UTF-8 (kodo.adapters.workspace_git)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kodo.adapters import workspace_git


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, timeout=30)


def test_a_non_utf8_text_file_diffs_instead_of_failing_the_step(tmp_path: Path) -> None:
    """A Latin-1 file changed in the workspace gives a diff (its odd bytes as U+FFFD), never a decode error."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    _git(repo, "init", "-q")
    _git(repo, "add", "latin.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "base")
    base = workspace_git.head(repo)
    assert base is not None
    (repo / "latin.txt").write_bytes("na\xefve\n".encode("latin-1"))
    snap = workspace_git.snapshot(repo, base, ["latin.txt"])
    assert "latin.txt" in snap.diff and "+na\ufffdve" in snap.diff and "-caf\ufffd" in snap.diff
