"""Artifacts as answers show them: a ref (what lists carry, never content) and the rendering of content
by kind (what ``GET /api/artifacts/{uri}`` serves)."""

from __future__ import annotations

import json
from typing import Any

from typing_extensions import TypedDict

from kodo.models import Run
from kodo.store.artifacts import ArtifactRef

_JSON_KINDS = {"json", "raw", "timings", "artifact_index", "question_card"}
_TEXT_KINDS = {"text", "stdout", "stderr", "none", "file"}
_REF_JSON_KINDS = {"plan_card", "question_card", "json", "json_diagnostic"}


class ArtifactRefView(TypedDict):
    """An artifact ref in a step row: where the artifact is and what it is, never its content."""

    id: str
    workflowID: str
    stepID: str
    taskKey: str
    idx: int
    attempt: int
    kind: str
    mime: str
    size: int
    sha256: str
    storageKey: str


def media_type(kind: str) -> str:
    """The content type ``GET /api/artifacts/{uri}`` serves an artifact of this kind with."""
    return render(kind, {})[0].split(";")[0]


def ref_media_type(kind: str) -> str:
    """The ``mime`` of an artifact ref (reference artifact-ref contract): what the artifact *is*.

    ``plan_card``, ``question_card``, ``json`` and ``json_diagnostic`` are JSON documents and ``svg`` an
    image, although the content route serves some of them compacted as text.
    """
    if kind in _REF_JSON_KINDS:
        return "application/json"
    return media_type(kind)


def render(kind: str, inline: Any) -> tuple[str, str]:
    """(media type, body) for an artifact's inline content, by kind."""
    if kind in _JSON_KINDS:
        value = inline
        if isinstance(inline, dict):
            value = inline.get("json", inline.get("text", inline))
        return "application/json", value if isinstance(value, str) else json.dumps(value, indent=2)
    if kind == "diff":  # a workspace's unified diff (kodo.workflows.review)
        return "text/x-diff; charset=utf-8", inline.get("text", "") if isinstance(inline, dict) else str(inline)
    if kind == "svg":
        return "image/svg+xml", inline.get("text", "") if isinstance(inline, dict) else str(inline)
    if kind in _TEXT_KINDS:
        if isinstance(inline, dict) and isinstance(inline.get("text"), str):
            return "text/plain; charset=utf-8", inline["text"]
        return "text/plain; charset=utf-8", json.dumps(inline, indent=2)
    return "text/plain; charset=utf-8", json.dumps(inline, separators=(",", ":"))


def artifact_ref(run: Run, artifact: ArtifactRef) -> ArtifactRefView:
    return {
        "id": artifact.uri,
        "workflowID": run.workflow_id,
        "stepID": artifact.step_id,
        "taskKey": artifact.task_key,
        "idx": artifact.idx,
        "attempt": artifact.attempt,
        "kind": artifact.kind,
        "mime": ref_media_type(artifact.kind),
        "size": artifact.size,
        "sha256": artifact.sha256,
        "storageKey": artifact.uri,
    }
