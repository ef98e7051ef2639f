"""schemathesis against kodo's own OpenAPI schema: no request ends in a 5xx, no rejected request (4xx)
writes a row, and every answer conforms to the document (status, media type, body schema).
Bounded: a fixed number of derandomized examples per operation, valid and invalid."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from helpers import table_counts
from kodo.api.deps import ApiContext
from kodo.main import LOOP_READ_CONNECTIONS, create_app, dbos_client
from kodo.settings import Settings
from kodo.store.async_connections import AsyncConnections

EXAMPLES = 12  # per operation and generation mode
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def api(settings: Settings, engine: sa.Engine) -> Iterator[FastAPI]:
    """The API shim's app (no worker: nothing runs in the background, so row counts only move by requests)."""
    client = dbos_client(settings, engine)
    fuzzed = settings.model_copy(update={"allowed_hosts": "testserver"})  # schemathesis's ASGI Host
    assert settings.database_url is not None
    loop_reads = AsyncConnections(settings.database_url, size=LOOP_READ_CONNECTIONS, application_name="kodo-fuzz-reads")
    yield create_app(ApiContext(settings=fuzzed, engine=engine, client=client, role="api", loop_reads=loop_reads))
    loop_reads.close()
    client.destroy()


def _check_operation(operation: Any, mode: GenerationMode, engine: sa.Engine, seen: dict[str, int]) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        with engine.connect() as conn:
            before = table_counts(conn)
        response = case.call()
        seen[str(response.status_code)[0] + "xx"] = seen.get(str(response.status_code)[0] + "xx", 0) + 1
        where = f"{case.method} {case.formatted_path} {case.query} {case.body!r:.300}"
        assert response.status_code < 500, f"{where} → {response.status_code} {response.text[:500]}"
        if 400 <= response.status_code < 500:
            assert "Traceback" not in response.text
            with engine.connect() as conn:
                assert table_counts(conn) == before, f"{where} → {response.status_code} wrote rows"
        # The answer is one the document promises: its status is documented for the operation, and its media
        # type and body match what is documented for that status.
        case.validate_response(response, checks=CONFORMANCE)

    try:
        check()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise  # only an operation without inputs has no invalid ones


def test_fuzzing_the_schema_finds_no_5xx_and_no_writes_on_rejection(api: FastAPI, engine: sa.Engine) -> None:
    """Every operation of /openapi.json, fuzzed with valid and invalid inputs: never a 5xx, never a row
    written by a 4xx, every answer as documented."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 45
    seen: dict[str, int] = {}
    started = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _check_operation(operation, mode, engine, seen)
    print(f"fuzzed {len(operations)} operations in {time.monotonic() - started:.1f}s: {seen}")
    assert seen.get("4xx", 0) > 0 and seen.get("2xx", 0) > 0
