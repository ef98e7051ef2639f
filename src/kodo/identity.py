"""Identity laws (SPEC §4): canonical JSON, hashes and the ids derived from them."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Any

STEP_IDS = ("CompileST", "ApplyPatchST", "DecideST", "ExecuteST")


def canonical(value: Any) -> str:
    """The canonical JSON text of a value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(value: Any) -> str:
    """SHA-256 of a string itself, or of the canonical JSON of anything else."""
    text = value if isinstance(value, str) else canonical(value)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_intent_id() -> str:
    """An intent id for ``POST /api/intents``: ``it_`` + 16 random hex digits."""
    return "it_" + secrets.token_hex(8)


def recipe_intent_id(intent: Any) -> str:
    """An intent id for a compiled recipe intent: ``ih_`` + sha256 of its canonical form."""
    return "ih_" + sha256_hex(intent)


def run_id_for(workflow_id: str) -> str:
    """``run_`` + the first 32 hex digits of sha256(workflowID)."""
    return "run_" + sha256_hex(workflow_id)[:32]


def task_key_for(intent_id: str, run_id: str, request: dict[str, Any]) -> str:
    """The fan-out child's workflow id: sha256 of {intentId, runId, stepId: ExecuteST, req}."""
    return sha256_hex({"intentId": intent_id, "runId": run_id, "stepId": "ExecuteST", "req": request})


_SLUG = re.compile(r"[^a-z0-9:_-]+")


def gate_key_for(run_id: str, step_id: str, purpose: str, attempt: int = 1) -> str:
    """A gate key: slug(purpose)[:16] + "-" + sha256("<runId>:<stepId>:<purpose>:<attempt>")[:16]."""
    slug = _SLUG.sub("-", purpose.lower()).strip("-")[:16]
    return f"{slug}-{sha256_hex(f'{run_id}:{step_id}:{purpose}:{attempt}')[:16]}"


def artifact_uri(run_id: str, step_id: str, task_key: str, name: str) -> str:
    """``artifact://run/<runId>/step/<stepId>/task/<taskKey>/<name>``."""
    return f"artifact://run/{run_id}/step/{step_id}/task/{task_key}/{name}"
