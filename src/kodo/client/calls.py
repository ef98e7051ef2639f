"""Each client call as data (method, path, query, body, how to read the answer), shared by the sync and the
async client, and kodo's status codes mapped back onto its error tree."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from kodo.client import records
from kodo.errors import (
    AccessDenied,
    Conflict,
    Gone,
    IdentityDrift,
    InfrastructureError,
    InvalidInput,
    KodoError,
    NotFound,
    PolicyViolation,
)

T = TypeVar("T")
LONG_POLL_MAX_S = 30  # the server's bound on one ``?until=`` wait


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[Any], T]
    params: Mapping[str, str | int] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None
    timeout_s: float | None = None  # None: the client's default
    text: bool = False  # the answer is text (read gets the body as a string), not JSON

    def answer(self, status: int, text: str) -> T:
        """What kodo's answer (status, body text) means: the record read from it, or kodo's error for it."""
        if self.text and status < 400:
            return self.read(text)
        body: Any = json.loads(text) if text else None
        if status >= 400:
            raise error_for(status, body)
        return self.read(body)


def unreachable(error: Exception) -> InfrastructureError:
    """The error for a server that could not be reached (or broke the connection)."""
    return InfrastructureError(f"kodo is not reachable: {type(error).__name__}: {error}")


def _segment(value: str) -> str:
    return quote(value, safe="")


def _many(kind: Callable[[Mapping[str, Any]], T]) -> Callable[[Any], list[T]]:
    return lambda data: [kind(item) for item in data]


def _none(_data: Any) -> None:
    return None


def error_for(status: int, body: Any) -> KodoError:
    """The kodo error an answer stands for (``status_code`` and ``body`` are kept on it)."""
    data = body if isinstance(body, dict) else {}
    message = str(data.get("error") or f"HTTP {status}")
    error: KodoError
    if status == 400 or status == 413:
        if "code" in data:
            error = PolicyViolation(message, str(data["code"]))
        else:
            error = InvalidInput(message, data.get("details") or [])
    elif status in {401, 403}:
        error = AccessDenied(message)
    elif status == 404:
        error = NotFound(message)
    elif status == 409:
        if isinstance(data.get("drift"), list):
            error = IdentityDrift(message, data["drift"])
        else:
            error = Conflict(message, **{k: v for k, v in data.items() if k != "error"})
    elif status == 410:
        error = Gone(message)
    else:
        error = InfrastructureError(message)
    vars(error).update(status_code=status, body=body)  # what the server answered, for the curious caller
    return error


# --- the calls ----------------------------------------------------------------------------------------


def health() -> Call[Mapping[str, Any]]:
    return Call("GET", "/healthz", lambda data: dict(data))


def whoami() -> Call[records.Identity]:
    return Call("GET", "/api/whoami", records.Identity.from_json)


def create_intent(
    goal: str, inputs: Mapping[str, Any] | None, constraints: Mapping[str, Any] | None
) -> Call[records.Intent]:
    body = {"goal": goal, "inputs": dict(inputs or {}), "constraints": dict(constraints or {})}
    return Call("POST", "/api/intents", records.Intent.from_json, body=body)


def start_run(intent_id: str, queue_partition_key: str, options: Mapping[str, Any]) -> Call[records.RunHeader]:
    body = {"intentId": intent_id, "queuePartitionKey": queue_partition_key, **options}
    return Call("POST", "/api/runs", records.RunHeader.from_json, body=body)


def start_recipe_run(
    recipe_id: str, version: str, form_data: Mapping[str, Any], options: Mapping[str, Any]
) -> Call[records.RunHeader]:
    body: dict[str, Any] = {"recipeRef": {"id": recipe_id, "v": version}, "formData": dict(form_data)}
    if options:
        body["opts"] = dict(options)
    return Call("POST", "/api/run", records.RunHeader.from_json, body=body)


def get_run(workflow_id: str, until: str | None = None, timeout_s: int | None = None) -> Call[records.RunHeader]:
    params: dict[str, str | int] = {}
    if until is not None:
        params = {"until": until, "timeoutS": min(LONG_POLL_MAX_S, max(0, timeout_s or 0))}
    wait = float(params["timeoutS"]) + 10 if params else None  # the HTTP read outlives the server's wait
    return Call("GET", f"/api/runs/{_segment(workflow_id)}", records.RunHeader.from_json, params, timeout_s=wait)


def list_gates(workflow_id: str) -> Call[list[records.Gate]]:
    return Call("GET", f"/api/runs/{_segment(workflow_id)}/gates", _many(records.Gate.from_json))


def reply_to_gate(
    workflow_id: str, gate_key: str, payload: Mapping[str, Any], dedupe_key: str, origin: str
) -> Call[records.Reply]:
    body = {"payload": dict(payload), "dedupeKey": dedupe_key, "origin": origin}
    path = f"/api/runs/{_segment(workflow_id)}/gates/{_segment(gate_key)}/reply"
    return Call("POST", path, records.Reply.from_json, body=body)


def approve_plan(workflow_id: str, approved_by: str, notes: str | None) -> Call[records.Reply]:
    body = {"approvedBy": approved_by, "notes": notes}
    return Call("POST", f"/api/runs/{_segment(workflow_id)}/approve-plan", records.Reply.from_json, body=body)


def inbox(limit: int) -> Call[list[records.InboxItem]]:
    return Call("GET", "/api/hitl/inbox", _many(records.InboxItem.from_json), {"limit": limit})


def diagnosis(workflow_id: str) -> Call[records.Diagnosis]:
    return Call("GET", f"/api/runs/{_segment(workflow_id)}/diagnosis", records.Diagnosis.from_json)


def diff(workflow_id: str) -> Call[str]:
    """The run's change as a unified diff against its base commit (``text/x-diff``; empty: no change)."""
    return Call("GET", f"/api/runs/{_segment(workflow_id)}/diff", str, text=True)


def list_recipes() -> Call[list[records.Recipe]]:
    return Call("GET", "/api/recipes", _many(records.Recipe.from_json))


def create_webhook(url: str, events: Sequence[str], description: str | None) -> Call[records.WebhookSubscription]:
    body: dict[str, Any] = {"url": url, "events": list(events)}
    if description is not None:
        body["description"] = description
    return Call("POST", "/api/webhooks", records.WebhookSubscription.from_json, body=body)


def list_webhooks() -> Call[list[records.WebhookSubscription]]:
    return Call("GET", "/api/webhooks", _many(records.WebhookSubscription.from_json))


def delete_webhook(subscription_id: str) -> Call[None]:
    return Call("DELETE", f"/api/webhooks/{_segment(subscription_id)}", _none)


def webhook_deliveries(state: str | None, page_size: int, before: str | None) -> Call[list[records.WebhookDelivery]]:
    params: dict[str, str | int] = {"limit": page_size}
    if state is not None:
        params["state"] = state
    if before is not None:
        params["before"] = before
    return Call("GET", "/api/webhooks/deliveries", _many(records.WebhookDelivery.from_json), params)


def redeliver_webhook(delivery_id: str) -> Call[None]:
    return Call("POST", f"/api/webhooks/deliveries/{_segment(delivery_id)}/redeliver", _none)


def run_options(
    *,
    auto_approve: bool | None,
    lane: str | None,
    priority: int | None,
    workload: Mapping[str, int] | None,
) -> dict[str, Any]:
    """The optional fields of a run start, only those given."""
    options: dict[str, Any] = {}
    if auto_approve is not None:
        options["autoApprove"] = auto_approve
    if lane is not None:
        options["lane"] = lane
    if priority is not None:
        options["priority"] = priority
    if workload is not None:
        options["workload"] = dict(workload)
    return options
