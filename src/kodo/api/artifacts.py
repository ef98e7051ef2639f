"""``GET /api/artifacts/{uri}``: an artifact's content by its URL-encoded URI."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from kodo.api.access import not_found, requires
from kodo.api.deps import context
from kodo.errors import NotFound
from kodo.store import artifacts

router = APIRouter()
_JSON_KINDS = {"json", "raw", "timings", "artifact_index", "question_card"}
_TEXT_KINDS = {"text", "stdout", "stderr", "none", "file"}


_REF_JSON_KINDS = {"plan_card", "question_card", "json", "json_diagnostic"}


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


@router.get("/api/artifacts/{uri:path}")
@requires("viewer", hidden=not_found("artifact not found"))
def get_artifact(uri: str, request: Request) -> Response:
    """The artifact's content (highest attempt), rendered by kind; 404 if unknown."""
    ctx = context(request)
    with ctx.read() as conn:
        artifact = artifacts.get_by_uri(conn, uri)
    if artifact is None:
        raise NotFound("artifact not found")
    if artifact.inline is None:
        return JSONResponse({"uri": artifact.uri, "kind": artifact.kind, "sha256": artifact.sha256})
    media_type, body = render(artifact.kind, artifact.inline)
    return Response(body, media_type=media_type, headers={"X-Artifact-Sha256": artifact.sha256})
