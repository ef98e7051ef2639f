"""Which host repositories a run may clone: ``inputs.repo`` must name a git repository under ``KODO_REPO_ROOTS``.

Checked twice: at ingress (``InvalidInput``: 400, nothing written) and again when the run prepares its
workspace (``StepFailure("REPO_NOT_ALLOWED")``), since the roots, the file system or the intent's origin may
have changed in between. The workspace is cloned from the *resolved* path this returns, never the raw input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kodo.errors import InvalidInput, StepFailure
from kodo.settings import Settings


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _is_git_repository(path: Path) -> bool:
    if (path / ".git").exists():
        return True
    return (path / "HEAD").is_file() and (path / "objects").is_dir()  # a bare repository


def allowed_repository(repo: Any, settings: Settings) -> Path | None:
    """The real path of ``repo`` when a run may clone it; ``None`` when none is asked for (absent or "").

    Raises ``InvalidInput`` naming the rule that refuses it."""
    if repo is None or repo == "":
        return None
    if not isinstance(repo, str):
        raise InvalidInput("invalid inputs.repo: must be a path (a string)", [{"loc": ["inputs", "repo"]}])
    roots = settings.repository_roots
    if not roots:
        raise InvalidInput(
            "repository inputs are disabled: set KODO_REPO_ROOTS to the directories runs may clone from",
            [{"loc": ["inputs", "repo"], "msg": "KODO_REPO_ROOTS is not set"}],
        )
    raw = Path(repo)
    if not raw.is_absolute():
        raise InvalidInput("invalid inputs.repo: must be an absolute path", [{"loc": ["inputs", "repo"]}])
    real = raw.resolve()
    if not any(_inside(real, root) for root in roots):
        raise InvalidInput(f"invalid inputs.repo: {repo} is not under KODO_REPO_ROOTS", [{"loc": ["inputs", "repo"]}])
    if _inside(real, settings.home):
        raise InvalidInput(
            f"invalid inputs.repo: {repo} is inside KODO_HOME (kodo's own data)", [{"loc": ["inputs", "repo"]}]
        )
    if not real.is_dir() or not _is_git_repository(real):
        raise InvalidInput(f"invalid inputs.repo: {repo} is not a git repository", [{"loc": ["inputs", "repo"]}])
    return real


def check_inputs(inputs: dict[str, Any], settings: Settings) -> None:
    """Ingress: refuse an intent whose ``inputs.repo`` a run may not clone (400)."""
    allowed_repository(inputs.get("repo"), settings)


def workspace_source(inputs: dict[str, Any], settings: Settings) -> Path | None:
    """In the workflow: the checked real path to clone, or ``REPO_NOT_ALLOWED``."""
    try:
        return allowed_repository(inputs.get("repo"), settings)
    except InvalidInput as error:
        raise StepFailure("REPO_NOT_ALLOWED", f"REPO_NOT_ALLOWED: {error.message}") from error
