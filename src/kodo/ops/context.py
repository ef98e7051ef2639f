"""What every operator action needs: the database, a DBOS client and the settings; and the bounds of one
action (light to import: the CLI reads the bounds when it builds its options)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kodo.errors import InvalidInput

if TYPE_CHECKING:
    import sqlalchemy as sa
    from dbos import DBOSClient

    from kodo.settings import Settings

MAX_BATCH = 10_000  # workflows one batch action (cancel, resume, fork by filter) touches at most
MAX_EXECUTIONS = 500  # sandbox executions one read of a run's execution ledger returns at most


@dataclass(frozen=True, slots=True, kw_only=True)
class Ops:
    engine: sa.Engine
    client: DBOSClient
    settings: Settings


def require_text(**fields: str | None) -> dict[str, str]:
    """Every field must be a non-blank string (``actor`` and ``reason`` of every mutation)."""
    missing = [name for name, value in fields.items() if not isinstance(value, str) or not value.strip()]
    if missing:
        raise InvalidInput(
            f"{' and '.join(missing)} required (non-empty)", [{"loc": [m], "msg": "required"} for m in missing]
        )
    return {name: str(value).strip() for name, value in fields.items()}
