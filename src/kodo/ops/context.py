"""What every operator action needs: the database, a DBOS client and the settings."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from dbos import DBOSClient

from kodo.errors import InvalidInput
from kodo.settings import Settings


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
