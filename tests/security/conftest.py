"""Security tier: each test is one attack, sent as the attacker would, against the monolith's API (in-process,
ASGI, on the test's own database) or a real process; each expects its clear refusal and zero writes."""

from __future__ import annotations

from integration.conftest import client, engine, worker

__all__ = ["client", "engine", "worker"]
