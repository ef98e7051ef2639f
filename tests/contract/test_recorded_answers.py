"""Recorded answers: a fixed golden-path scenario's API answers, and the OpenAPI document, compared with
checked-in snapshots (ids, times and durations normalized), so a refactor that should change no answer
shows any it does change.

Re-record on purpose with ``KODO_RECORD_SNAPSHOTS=1`` and review the diff."""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from helpers import wait_status, wait_until
from integration.conftest import client, engine, worker

__all__ = ["client", "engine", "worker"]

SNAPSHOTS = Path(__file__).parent / "snapshots"
RECORD = os.environ.get("KODO_RECORD_SNAPSHOTS") == "1"
# Keys whose values are moments or spans of time: kept only as "is there one" (and its type).
_TIME_KEY = re.compile(r"(At|_at|Ms|_ms|Sec|Seconds)$")
_TIME_KEYS = {"deadline", "since", "at"}
# Artifacts whose content records timings: their size varies from run to run.
_TIMED_KINDS = {"json_diagnostic", "timings", "artifact_index"}
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:?\d{2}|Z)?")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX = re.compile(r"\b([a-z]{2,4}_)?[0-9a-f]{16,64}\b")
_EPOCH_MS = re.compile(r"\b1[0-9]{12}\b")


class Normalizer:
    """Replaces each distinct id by ``<id:N>`` in order of first sight (so equal ids stay equal), times by
    ``<time>`` and durations by ``<duration>``."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def learn(self, *values: str) -> None:
        for value in values:
            if value and value not in self.ids:
                self.ids[value] = f"<id:{len(self.ids) + 1}>"

    def text(self, value: str) -> str:
        for known in sorted(self.ids, key=len, reverse=True):
            value = value.replace(known, self.ids[known])
        value = _ISO.sub("<time>", value)
        value = _EPOCH_MS.sub("<time>", value)
        value = _UUID.sub(lambda m: self._id(m.group(0)), value)
        return _HEX.sub(lambda m: self._id(m.group(0)), value)

    def _id(self, raw: str) -> str:
        self.learn(raw)
        return self.ids[raw]

    def __call__(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            timed = value.get("kind") in _TIMED_KINDS and "size" in value
            return {k: "<size>" if timed and k == "size" else self(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v, key) for v in value]
        if value is None or isinstance(value, bool):
            return value
        if key in _TIME_KEYS or _TIME_KEY.search(key):
            return f"<{type(value).__name__}:time>"
        if isinstance(value, str):
            return self.text(value)
        return value


class Recorder:
    """Sends requests, keeps each answer (status, media type, normalized body) under a label."""

    def __init__(self, http: TestClient) -> None:
        self.http = http
        self.normalize = Normalizer()
        self.answers: list[dict[str, Any]] = []

    def normalized(self) -> list[dict[str, Any]]:
        """Every answer, normalized once all ids of the scenario are known."""
        return [
            {**answer, "request": self.normalize.text(answer["request"]), "body": self.normalize(answer["body"])}
            for answer in self.answers
        ]

    def __call__(self, label: str, method: str, url: str, status: int, **kw: Any) -> Any:
        response = self.http.request(method, url, **kw)
        assert response.status_code == status, (label, method, url, response.status_code, response.text)
        media = response.headers.get("content-type", "")
        body: Any = response.json() if media.startswith("application/json") else response.text
        kept = _events(body) if media.startswith("text/event-stream") else body
        request = f"{method} {url}"
        self.answers.append(
            {"label": label, "request": request, "status": response.status_code, "mediaType": media, "body": kept}
        )
        return body


def _events(stream: str) -> list[Any]:
    """A Server-Sent Events body as a list of ``[event, data]`` (data parsed as JSON) and comment lines."""
    parsed: list[Any] = []
    for block in stream.split("\n\n"):
        if not block:
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        parsed.append([fields.get("event"), json.loads(fields["data"])] if "data" in fields else block)
    return parsed


def _compare(name: str, value: Any) -> None:
    path = SNAPSHOTS / name
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    if RECORD or not path.exists():
        path.write_text(text)
    recorded = path.read_text()
    if recorded != text:
        diff = "".join(difflib.unified_diff(recorded.splitlines(True), text.splitlines(True), "recorded", "now"))
        raise AssertionError(f"{name} changed (re-record with KODO_RECORD_SNAPSHOTS=1 if on purpose):\n{diff}")


def test_the_golden_path_answers_as_recorded(client: TestClient) -> None:
    """A fixed golden-path scenario (start, plan gate, approve, SUCCESS, reads, errors) answers exactly as
    recorded: a refactor of the read model changes no answer."""
    record = Recorder(client)
    intent = record("intent", "POST", "/api/intents", 201, json={"goal": "recorded", "inputs": {}, "constraints": {}})
    start = {"intentId": intent["intentId"], "queuePartitionKey": "recorded"}
    run = record("start", "POST", "/api/runs", 201, json=start)
    wid = run["workflowID"]
    record.normalize.learn(intent["intentId"], wid, run["runId"])
    record("start replay", "POST", "/api/runs", 200, json=start)
    waiting = record("header until input", "GET", f"/api/runs/{wid}?until=input&timeoutS=30", 200)
    assert waiting["status"] == "WAITING_INPUT"
    (gate,) = record("gates", "GET", f"/api/runs/{wid}/gates", 200)
    key = gate["gateKey"]
    record("gate view", "GET", f"/api/runs/{wid}/gates/{key}", 200)
    record("inbox", "GET", "/api/hitl/inbox", 200)
    record("diagnosis waiting", "GET", f"/api/runs/{wid}/diagnosis", 200)
    # The parked run's phase workflow (the one before it may still be finishing: PENDING for a moment).
    record("queue depth delayed", "GET", "/api/ops/queue-depth?status=DELAYED", 200)
    reply = {"payload": {"choice": "yes"}, "dedupeKey": "recorded", "origin": "manual"}
    record("reply", "POST", f"/api/runs/{wid}/gates/{key}/reply", 200, json=reply)
    record("reply again", "POST", f"/api/runs/{wid}/gates/{key}/reply", 200, json=reply)
    wait_status(client, wid, {"SUCCESS"})
    # DBOS's own status follows the run's by a moment: wait for both, so every read below is settled.
    wait_until(lambda: client.get(f"/api/runs/{wid}").json()["dbosStatus"] == "SUCCESS", what="DBOS SUCCESS")
    wait_until(lambda: client.get("/api/ops/queue-depth").json() == [], what="an empty queue")
    record("queue depth empty", "GET", "/api/ops/queue-depth", 200)
    record("header", "GET", f"/api/runs/{wid}", 200)
    record("header until end", "GET", f"/api/runs/{wid}?until=end&timeoutS=1", 200)
    steps = record("steps", "GET", f"/api/runs/{wid}/steps", 200)
    record("steps page", "GET", f"/api/runs/{wid}/steps?limit=1&offset=1", 200)
    record("legacy view", "GET", f"/runs/{wid}", 200)
    record("gate resolved", "GET", f"/api/runs/{wid}/gates/{key}", 200)
    record("interactions", "GET", f"/api/runs/{wid}/interactions", 200)
    record("evals", "GET", f"/api/runs/{wid}/evals", 200)
    record("inbox empty", "GET", "/api/hitl/inbox", 200)
    record("diagnosis done", "GET", f"/api/runs/{wid}/diagnosis", 200)
    record("events", "GET", f"/api/runs/{wid}/events?maxSeconds=5", 200)
    refs = [ref for step in steps for ref in step["artifactRefs"]]
    assert refs, "the golden path makes artifacts"
    record("artifact", "GET", f"/api/artifacts/{refs[0]['id']}", 200)
    record("recipes", "GET", "/api/recipes", 200)
    recipe = {"recipeRef": {"id": "compile-default", "v": "v1"}, "formData": {"goal": "recorded recipe"}}
    started = record("recipe start", "POST", "/api/run", 201, json={**recipe, "opts": {"queuePartitionKey": "r"}})
    record.normalize.learn(started["workflowID"], started["runId"], started["intentId"])
    # One answer of each error kind.
    record("400 body", "POST", "/api/runs", 400, json={"intentId": intent["intentId"]})
    record("400 query", "GET", f"/api/runs/{wid}?until=never", 400)
    record("400 gate key", "GET", f"/api/runs/{wid}/gates/NOT A KEY", 400)
    record("404 run", "GET", "/api/runs/it_nope", 404)
    record("404 intent", "POST", "/api/runs", 404, json={"intentId": "it_nope", "queuePartitionKey": "x"})
    record("404 gate", "GET", f"/api/runs/{wid}/gates/nope", 404)
    record("404 diagnosis", "GET", "/api/runs/it_nope/diagnosis", 404)
    record("404 events", "GET", "/api/runs/it_nope/events", 404)
    record("404 steps", "GET", "/api/runs/it_nope/steps", 404)
    record("409 identity", "POST", "/api/runs", 409, json={**start, "queuePartitionKey": "other"})
    record("409 reply", "POST", f"/api/runs/{wid}/gates/{key}/reply", 409, json={**reply, "payload": {}})
    _compare("recorded_answers.json", record.normalized())


def test_the_openapi_document_is_as_recorded(client: TestClient) -> None:
    """``/openapi.json`` equals its checked-in snapshot: a route's documented shape never changes unnoticed."""
    document = client.get("/openapi.json").json()
    _compare("openapi.json", document)
