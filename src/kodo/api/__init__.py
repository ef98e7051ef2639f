"""The HTTP boundary: parse → one call into workflows/store → respond."""

from __future__ import annotations

from fastapi import FastAPI

from kodo.access import parse as parse_tokens
from kodo.api import (
    access,
    answers,
    artifacts,
    errors,
    events,
    gates,
    health,
    hygiene,
    intents,
    metrics,
    ops,
    proofs,
    recipes,
    review,
    run_evidence,
    runs,
    streams,
    webhooks,
    whoami,
)
from kodo.api.deps import ApiContext
from kodo.api.observe import Observe


def create_api(context: ApiContext, *, title: str = "kodo") -> FastAPI:
    """The FastAPI app for one process; ``context`` carries the engine, DBOS client and settings."""
    app = FastAPI(title=title, version="0.1.0", docs_url="/docs", redoc_url=None)
    app.state.kodo = context
    app.openapi = lambda: answers.document(app)  # type: ignore[method-assign]
    app.state.metrics = metrics.build(context.engine)
    errors.install(app)
    modules = (
        health,
        intents,
        runs,
        recipes,
        gates,
        events,
        artifacts,
        proofs,
        ops,
        run_evidence,
        metrics,
        webhooks,
        whoami,
        access,
    )
    for module in modules:
        app.include_router(module.router)
    app.include_router(review.router)  # the plan gate's review and a run's diff and delivery
    settings = context.settings
    access.install(
        app, engine=context.engine, tokens=parse_tokens(settings.api_tokens), max_body=settings.max_body_bytes
    )
    streams.install(app, settings.max_streams)  # inside hygiene: a refused Host never takes a slot
    hygiene.install(app, settings)
    app.add_middleware(Observe, metrics=app.state.metrics, tracing=context.settings.dbos_enable_otlp)
    return app
