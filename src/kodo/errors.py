"""kodo's one error tree. The HTTP mapping lives in exactly one place: ``kodo.api.errors``.

KodoError
├── ConfigurationError        a setting is invalid; start-up stops
├── InvalidInput              a request is malformed or breaks its schema        (400)
│   └── PolicyViolation       a request breaks queue/budget policy, with a code   (400)
├── NotFound                  the thing asked for does not exist                  (404)
├── Conflict                  the request clashes with recorded state             (409)
│   └── IdentityDrift         same id, different identity fields (``drift``)      (409)
├── Gone                      a legacy route is switched off                      (410)
├── StepFailure               a run step failed; carries a structured ``code``
├── InfrastructureError       Postgres, DBOS or an adapter failed                 (500)
│   └── DatabaseUnavailable   Postgres is unreachable for now (an outage)         (503 + Retry-After)
└── AccessDenied              no valid token, or a role too low (401/403: raised by ``kodo.client``; the
                              server's access middleware answers these itself)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class KodoError(Exception):
    """Something went wrong in kodo."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__class__.__doc__ or "error").strip()
        super().__init__(self.message)


class ConfigurationError(KodoError):
    """The configuration is invalid."""


class InvalidInput(KodoError):
    """The request is invalid."""

    def __init__(self, message: str, details: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.details = list(details)


class PolicyViolation(InvalidInput):
    """The request breaks a queue or budget policy."""

    def __init__(self, message: str, code: str = "queue_policy_violation") -> None:
        super().__init__(message)
        self.code = code


class NotFound(KodoError):
    """Not found."""


class Conflict(KodoError):
    """The request conflicts with the recorded state."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra = extra


class IdentityDrift(Conflict):
    """The same id was started with different identity fields."""

    def __init__(self, message: str, drift: list[dict[str, Any]]) -> None:
        super().__init__(message, drift=drift)
        self.drift = drift


class Gone(KodoError):
    """This route is disabled."""


class StepFailure(KodoError):
    """A run step failed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class InfrastructureError(KodoError):
    """An infrastructure dependency failed."""


class DatabaseUnavailable(InfrastructureError):
    """The database is unavailable for now; retry later."""

    def __init__(self, message: str | None = None, retry_after_sec: int = 5) -> None:
        super().__init__(message)
        self.retry_after_sec = retry_after_sec


class AccessDenied(KodoError):
    """No valid bearer token, or the token's role or tenant does not allow this."""
