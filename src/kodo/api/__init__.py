"""The HTTP boundary: parse → one call into workflows/store → respond."""

from __future__ import annotations

from fastapi import FastAPI

from kodo.api import artifacts, errors, events, gates, health, intents, ops, proofs, recipes, run_evidence, runs
from kodo.api.deps import ApiContext


def create_api(context: ApiContext, *, title: str = "kodo") -> FastAPI:
    """The FastAPI app for one process; ``context`` carries the engine, DBOS client and settings."""
    app = FastAPI(title=title, version="0.1.0", docs_url="/docs", redoc_url=None)
    app.state.kodo = context
    errors.install(app)
    for module in (health, intents, runs, recipes, gates, events, artifacts, proofs, ops, run_evidence):
        app.include_router(module.router)
    return app
