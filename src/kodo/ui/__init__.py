"""The web console: server-rendered pages (Jinja2) and one small hand-written script, served by kodo itself."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from kodo.ui import operations, pages

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the console's pages and its static files on the API app."""
    app.include_router(pages.router)
    app.include_router(operations.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
