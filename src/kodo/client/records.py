"""What the client returns: frozen dataclasses read from kodo's JSON answers.

Each record names the fields a caller acts on and keeps the whole answer in ``raw`` (read-only), so a
field kodo adds later is reachable before this module learns its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

TERMINAL_STATUSES = frozenset({"SUCCESS", "ERROR", "CANCELLED"})
INPUT_STATUSES = TERMINAL_STATUSES | {"WAITING_INPUT"}


def _frozen(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(data))


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class RunError:
    code: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunHeader:
    """``GET /api/runs/{wid}``: the run's status (``ENQUEUED|PENDING|WAITING_INPUT|SUCCESS|ERROR|CANCELLED``)."""

    workflow_id: str
    run_id: str
    intent_id: str
    status: str
    durable_status: str
    dbos_status: str | None
    next_action: str | None
    last_step: str | None
    retry_count: int
    queue_partition_key: str | None
    error: RunError | None
    is_replay: bool | None
    raw: Mapping[str, Any]

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def waiting_for_input(self) -> bool:
        return self.status == "WAITING_INPUT"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunHeader:
        error = data.get("error")
        replay = data.get("isReplay")
        return cls(
            workflow_id=str(data["workflowID"]),
            run_id=str(data["runId"]),
            intent_id=str(data.get("intentId") or data["workflowID"]),
            status=str(data["status"]),
            durable_status=str(data.get("durableStatus") or ""),
            dbos_status=_text(data, "dbosStatus"),
            next_action=_text(data, "nextAction"),
            last_step=_text(data, "lastStep"),
            retry_count=int(data.get("retryCount") or 0),
            queue_partition_key=_text(data, "queuePartitionKey"),
            error=RunError(str(error.get("code")), str(error.get("message"))) if isinstance(error, dict) else None,
            is_replay=replay if isinstance(replay, bool) else None,
            raw=_frozen(data),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    intent_id: str
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Intent:
        return cls(intent_id=str(data["intentId"]), raw=_frozen(data))


@dataclass(frozen=True, slots=True, kw_only=True)
class Gate:
    """A human gate of a run; ``state`` is ``PENDING`` while it waits for an answer."""

    workflow_id: str
    gate_key: str
    purpose: str
    state: str
    prompt: Mapping[str, Any] | None
    decision: Mapping[str, Any] | None
    raw: Mapping[str, Any]

    @property
    def open(self) -> bool:
        return self.state == "PENDING"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Gate:
        prompt, decision = data.get("prompt"), data.get("decision")
        return cls(
            workflow_id=str(data["workflowID"]),
            gate_key=str(data["gateKey"]),
            purpose=str(data["purpose"]),
            state=str(data["state"]),
            prompt=_frozen(prompt) if isinstance(prompt, dict) else None,
            decision=_frozen(decision) if isinstance(decision, dict) else None,
            raw=_frozen(data),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class InboxItem:
    """An open gate of a waiting run, with its SLA state (``NORMAL|WARNING|CRITICAL``)."""

    workflow_id: str
    run_id: str
    gate_key: str
    purpose: str
    next_action: str | None
    deadline_ms: int | None
    sla_status: str
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InboxItem:
        deadline = data.get("deadline")
        return cls(
            workflow_id=str(data["workflowID"]),
            run_id=str(data["runId"]),
            gate_key=str(data["gateKey"]),
            purpose=str(data["purpose"]),
            next_action=_text(data, "nextAction"),
            deadline_ms=int(deadline) if isinstance(deadline, int) else None,
            sla_status=str(data.get("slaStatus") or "NORMAL"),
            raw=_frozen(data),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """The answer to a gate reply or a plan approval."""

    accepted: bool
    is_replay: bool
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reply:
        return cls(
            accepted=bool(data.get("ok", data.get("accepted", False))),
            is_replay=bool(data.get("isReplay", False)),
            raw=_frozen(data),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnosis:
    """Why a run is (not) moving: a ``code`` and a plain-language ``reason``."""

    code: str
    reason: str
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Diagnosis:
        return cls(code=str(data.get("code")), reason=str(data.get("reason")), raw=_frozen(data))


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    recipe_id: str
    latest_version: str
    status: str
    stable_ref: str | None
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Recipe:
        return cls(
            recipe_id=str(data["id"]),
            latest_version=str(data.get("latestV")),
            status=str(data.get("status")),
            stable_ref=_text(data, "stableRef"),
            raw=_frozen(data),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """``GET /api/whoami``: who the token is (all ``None`` but the role when kodo runs without tokens)."""

    subject: str | None
    tenant: str | None
    role: str
    authenticated: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Identity:
        return cls(
            subject=_text(data, "subject"),
            tenant=_text(data, "tenant"),
            role=str(data["role"]),
            authenticated=bool(data.get("authenticated")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSubscription:
    subscription_id: str
    url: str
    events: tuple[str, ...]
    tenant: str
    secret: str | None  # only in the answer to the create
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WebhookSubscription:
        return cls(
            subscription_id=str(data["id"]),
            url=str(data["url"]),
            events=tuple(str(e) for e in data.get("events", [])),
            tenant=str(data.get("tenant")),
            secret=_text(data, "secret"),
            raw=_frozen(data),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookDelivery:
    delivery_id: str
    event_id: str
    event_type: str
    subscription_id: str
    state: str
    attempts: int
    last_error: str | None
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WebhookDelivery:
        return cls(
            delivery_id=str(data["id"]),
            event_id=str(data["eventId"]),
            event_type=str(data["eventType"]),
            subscription_id=str(data["subscriptionId"]),
            state=str(data["state"]),
            attempts=int(data.get("attempts") or 0),
            last_error=_text(data, "lastError"),
            raw=_frozen(data),
        )
