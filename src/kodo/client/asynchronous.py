"""``AsyncKodoClient``: kodo's HTTP API from asyncio (httpx), method for method as ``KodoClient``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from kodo.client import calls, records

T = TypeVar("T")


class AsyncKodoClient:
    """One kodo server. ``token`` is sent as ``Authorization: Bearer …`` when given.

    Every method returns a typed record or raises kodo's own error for the answer (``InvalidInput`` for a
    400, ``AccessDenied`` for 401/403, ``NotFound``, ``Conflict``/``IdentityDrift``, ``Gone``,
    ``InfrastructureError`` for 5xx and for a server that cannot be reached).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:3001",
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout_s, transport=transport)

    async def __aenter__(self) -> AsyncKodoClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, call: calls.Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=dict(call.params) or None,
                json=call.body,
                timeout=call.timeout_s if call.timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as error:
            raise calls.unreachable(error) from error
        return call.answer(response.status_code, response.text)

    # --- runs ---------------------------------------------------------------------------------------

    async def health(self) -> Mapping[str, Any]:
        return await self._send(calls.health())

    async def whoami(self) -> records.Identity:
        return await self._send(calls.whoami())

    async def create_intent(
        self, goal: str, *, inputs: Mapping[str, Any] | None = None, constraints: Mapping[str, Any] | None = None
    ) -> records.Intent:
        return await self._send(calls.create_intent(goal, inputs, constraints))

    async def start_run(
        self,
        intent_id: str,
        *,
        queue_partition_key: str,
        auto_approve: bool | None = None,
        lane: str | None = None,
        priority: int | None = None,
        workload: Mapping[str, int] | None = None,
    ) -> records.RunHeader:
        options = calls.run_options(auto_approve=auto_approve, lane=lane, priority=priority, workload=workload)
        return await self._send(calls.start_run(intent_id, queue_partition_key, options))

    async def start_recipe_run(
        self,
        recipe_id: str,
        version: str,
        form_data: Mapping[str, Any],
        *,
        queue_partition_key: str | None = None,
        auto_approve: bool | None = None,
    ) -> records.RunHeader:
        options = calls.run_options(auto_approve=auto_approve, lane=None, priority=None, workload=None)
        if queue_partition_key is not None:
            options["queuePartitionKey"] = queue_partition_key
        return await self._send(calls.start_recipe_run(recipe_id, version, form_data, options))

    async def get_run(self, workflow_id: str) -> records.RunHeader:
        return await self._send(calls.get_run(workflow_id))

    async def wait_for_input(self, workflow_id: str, *, timeout_s: float = 300.0) -> records.RunHeader:
        """Long-poll until the run waits for a human or has ended; the header as it is at ``timeout_s``."""
        return await self._wait(workflow_id, "input", records.INPUT_STATUSES, timeout_s)

    async def wait_for_end(self, workflow_id: str, *, timeout_s: float = 300.0) -> records.RunHeader:
        """Long-poll until the run has ended; the header as it is at ``timeout_s``."""
        return await self._wait(workflow_id, "end", records.TERMINAL_STATUSES, timeout_s)

    async def _wait(
        self, workflow_id: str, until: str, statuses: frozenset[str], timeout_s: float
    ) -> records.RunHeader:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            header = await self._send(calls.get_run(workflow_id, until, int(max(0, min(left, calls.LONG_POLL_MAX_S)))))
            if header.status in statuses or time.monotonic() >= deadline:
                return header

    async def diagnosis(self, workflow_id: str) -> records.Diagnosis:
        return await self._send(calls.diagnosis(workflow_id))

    async def diff(self, workflow_id: str) -> str:
        """The run's change as a unified diff against its base commit (empty when it changed nothing)."""
        return await self._send(calls.diff(workflow_id))

    async def list_recipes(self) -> list[records.Recipe]:
        return await self._send(calls.list_recipes())

    # --- gates --------------------------------------------------------------------------------------

    async def list_gates(self, workflow_id: str) -> list[records.Gate]:
        return await self._send(calls.list_gates(workflow_id))

    async def reply_to_gate(
        self,
        workflow_id: str,
        gate_key: str,
        payload: Mapping[str, Any],
        *,
        dedupe_key: str,
        origin: str = "external",
    ) -> records.Reply:
        return await self._send(calls.reply_to_gate(workflow_id, gate_key, payload, dedupe_key, origin))

    async def approve_plan(self, workflow_id: str, *, approved_by: str, notes: str | None = None) -> records.Reply:
        return await self._send(calls.approve_plan(workflow_id, approved_by, notes))

    async def inbox(self, *, limit: int = 100) -> list[records.InboxItem]:
        return await self._send(calls.inbox(limit))

    # --- webhooks -----------------------------------------------------------------------------------

    async def create_webhook(
        self, url: str, events: Sequence[str], *, description: str | None = None
    ) -> records.WebhookSubscription:
        return await self._send(calls.create_webhook(url, events, description))

    async def list_webhooks(self) -> list[records.WebhookSubscription]:
        return await self._send(calls.list_webhooks())

    async def delete_webhook(self, subscription_id: str) -> None:
        await self._send(calls.delete_webhook(subscription_id))

    async def iter_webhook_deliveries(
        self, *, state: str | None = None, page_size: int = 100
    ) -> AsyncIterator[records.WebhookDelivery]:
        """Every delivery, newest first, page by page (``page_size`` per request)."""
        before: str | None = None
        while True:
            page = await self._send(calls.webhook_deliveries(state, page_size, before))
            for delivery in page:
                yield delivery
            if len(page) < page_size:
                return
            before = page[-1].delivery_id

    async def redeliver_webhook(self, delivery_id: str) -> None:
        await self._send(calls.redeliver_webhook(delivery_id))
