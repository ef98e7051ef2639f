"""The ``kodo_workflow_done`` trigger: a ``pg_notify`` when a sandbox child workflow ends.

When a row of ``dbos.workflow_status`` moves to a terminal status (SUCCESS, ERROR, CANCELLED,
MAX_RECOVERY_ATTEMPTS_EXCEEDED) and it is a sandbox child (it was on ``sbxQ`` until this update, or it
is an ``ExecuteTask``), the trigger sends ``NOTIFY kodo_workflow_done, '<workflow id>'``. The
notification is delivered when the completing transaction commits, so its output is readable by then.

Why "was on sbxQ" rather than "is on sbxQ": DBOS keeps ``queue_name`` on SUCCESS and ERROR rows, but
clears it when it cancels a row or dead-letters it (MAX_RECOVERY_ATTEMPTS_EXCEEDED), so ``OLD`` is the
reliable side. A resumed child sits on DBOS's internal queue; its name still says ``ExecuteTask``.
Every other workflow is filtered out by the trigger's ``WHEN`` clause, which Postgres evaluates
without calling the function, and updates that leave ``status`` out of their SET list skip it entirely.

kodo's numbered migrations run before DBOS creates its tables, so this is installed separately, by
``install`` after the DBOS migrations, idempotently: the trigger carries a hash of its own SQL as its
comment, and an unchanged installation is left alone (no lock taken on ``dbos.workflow_status``).
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from kodo.store.statements import sql

CHANNEL = "kodo_workflow_done"
TERMINAL = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
TRIGGER = "kodo_workflow_done"
_LOCK_ID = 0x6B6F6470  # one installer at a time across processes

FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION app.notify_workflow_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', NEW.workflow_uuid);
    RETURN NULL;
END
$$
"""

_TERMINAL_LIST = ", ".join(f"'{status}'" for status in TERMINAL)
TRIGGER_SQL = f"""
CREATE TRIGGER {TRIGGER}
AFTER UPDATE OF status ON dbos.workflow_status
FOR EACH ROW
WHEN (
    NEW.status IN ({_TERMINAL_LIST})
    AND OLD.status IS DISTINCT FROM NEW.status
    AND (OLD.queue_name = 'sbxQ' OR NEW.name = 'ExecuteTask')
)
EXECUTE FUNCTION app.notify_workflow_done()
"""

VERSION = "kodo " + hashlib.sha256((FUNCTION_SQL + TRIGGER_SQL).encode()).hexdigest()[:16]


def installed_version(conn: sa.Connection, trigger: str = TRIGGER) -> str | None:
    """The version comment of kodo's ``trigger`` on ``dbos.workflow_status`` (this module's by default), or None
    if there is none (or no ``dbos`` schema yet)."""
    return conn.execute(
        sql(
            "SELECT coalesce(obj_description(t.oid, 'pg_trigger'), '') FROM pg_trigger t "
            "WHERE t.tgname = :name AND t.tgrelid = to_regclass('dbos.workflow_status') AND NOT t.tgisinternal"
        ),
        {"name": trigger},
    ).scalar()


def install(conn: sa.Connection) -> bool:
    """Create (or replace) the function and the trigger in the caller's transaction; returns whether it changed.

    Needs ``dbos.workflow_status``, so it runs after DBOS's migrations.
    """
    if installed_version(conn) == VERSION:
        return False
    conn.execute(sql("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    if installed_version(conn) == VERSION:  # a concurrent installer got there first
        return False
    conn.execute(sql("CREATE SCHEMA IF NOT EXISTS app"))
    conn.exec_driver_sql(FUNCTION_SQL)
    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TRIGGER} ON dbos.workflow_status")
    conn.exec_driver_sql(TRIGGER_SQL)
    conn.exec_driver_sql(f"COMMENT ON TRIGGER {TRIGGER} ON dbos.workflow_status IS '{VERSION}'")
    return True
