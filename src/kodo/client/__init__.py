"""A typed Python client for kodo's HTTP API: ``KodoClient`` (sync) and ``AsyncKodoClient`` (asyncio).

    from kodo.client import KodoClient

    with KodoClient("http://127.0.0.1:3001") as kodo:
        intent = kodo.create_intent("golden tour")
        run = kodo.start_run(intent.intent_id, queue_partition_key="tenant-1")
        run = kodo.wait_for_input(run.workflow_id)
        kodo.approve_plan(run.workflow_id, approved_by="po-007")
        assert kodo.wait_for_end(run.workflow_id).status == "SUCCESS"

It talks HTTP only: it imports nothing of the server but ``kodo.errors`` (an answer's status becomes the
matching kodo error) and this package's records.
"""

from kodo.client.asynchronous import AsyncKodoClient
from kodo.client.records import (
    Diagnosis,
    Gate,
    Identity,
    InboxItem,
    Intent,
    Recipe,
    Reply,
    RunError,
    RunHeader,
    WebhookDelivery,
    WebhookSubscription,
)
from kodo.client.synchronous import KodoClient

__all__ = [
    "AsyncKodoClient",
    "Diagnosis",
    "Gate",
    "Identity",
    "InboxItem",
    "Intent",
    "KodoClient",
    "Recipe",
    "Reply",
    "RunError",
    "RunHeader",
    "WebhookDelivery",
    "WebhookSubscription",
]
