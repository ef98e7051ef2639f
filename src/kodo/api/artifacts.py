"""``GET /api/artifacts/{uri}``: an artifact's content by its URL-encoded URI."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from kodo.api.access import not_found, requires
from kodo.api.deps import context
from kodo.errors import NotFound
from kodo.store import artifacts
from kodo.views.artifacts import render

router = APIRouter()


@router.get(
    "/api/artifacts/{uri:path}",
    responses={
        200: {
            "description": "The content, by kind (JSON; an artifact kept elsewhere answers its identity)",
            "content": {
                "application/json": {"schema": {"description": "Any JSON value, or an ArtifactStubAnswer"}},
                "text/plain": {"schema": {"type": "string"}},
                "text/x-diff": {"schema": {"type": "string"}},
                "image/svg+xml": {"schema": {"type": "string"}},
            },
        }
    },
)
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
