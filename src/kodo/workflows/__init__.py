"""The only place DBOS decorators appear. Importing this package registers every workflow."""

from kodo.workflows import ceiling, escalation, proofs, runs, tasks, timers, webhook_retention, webhooks

__all__ = ["ceiling", "escalation", "proofs", "runs", "tasks", "timers", "webhook_retention", "webhooks"]
