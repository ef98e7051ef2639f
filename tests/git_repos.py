"""Real git repositories for workspace tests: a tiny module with a bug and a unittest that fails on it,
and a fingerprint of a repository's checked-out state (HEAD, branch, index, working tree)."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BUGGY = "def add(a, b):\n    return a - b\n"
FIXED = "def add(a, b):\n    return a + b\n"
TEST = (
    "import unittest\n\nfrom calc import add\n\n\n"
    "class AddTest(unittest.TestCase):\n"
    "    def test_adds(self):\n"
    "        self.assertEqual(add(2, 3), 5)\n\n\n"
    "if __name__ == '__main__':\n    unittest.main()\n"
)
TEST_COMMAND = "python3 -m unittest -v test_calc"
FIX_DIFF = "--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, timeout=30)
    return done.stdout


def seeded_repo(
    path: Path, files: Mapping[str, str | bytes], *, message: str = "seed", executables: tuple[str, ...] = ()
) -> Path:
    """A new git repository at ``path`` (branch main) holding ``files`` (relative path → text or bytes; those
    named in ``executables`` with mode 755), in one commit."""
    path.mkdir(parents=True)
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    for name in executables:
        (path / name).chmod(0o755)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "--", *files)
    git(path, "-c", "user.name=dev", "-c", "user.email=dev@example.invalid", "commit", "-q", "-m", message)
    return path


def make_repo(path: Path) -> Path:
    """A git repository whose unit test fails until calc.add is fixed."""
    return seeded_repo(path, {"calc.py": BUGGY, "test_calc.py": TEST}, message="buggy add")


def fix_plan() -> list[dict[str, Any]]:
    """The ``constraints.patchPlan`` that fixes calc.add."""
    return [{"targetPath": "calc.py", "postimageContent": FIXED, "diffText": FIX_DIFF}]


def checkout_state(repo: Path) -> dict[str, str]:
    """What a delivery must never change: HEAD, the checked-out branch, the index file and the working tree."""
    tree = {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }
    return {
        "head": git(repo, "rev-parse", "HEAD").strip(),
        "branch": git(repo, "symbolic-ref", "HEAD").strip(),
        "index": hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest(),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "tree": repr(tree),
    }


def branches(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()
