"""API tokens: who a bearer token is (subject), whose runs it reaches (tenant → partitions) and what it may
do (role). ``KODO_API_TOKENS`` is either inline JSON or the path of a JSON file, in this shape::

    {"tokens": [
      {"token": "<at least 16 chars>", "subject": "alice", "tenant": "acme", "role": "approver"},
      {"sha256": "<hex of the token>", "subject": "ops-bot", "tenant": "*", "role": "operator",
       "partitions": ["acme", "acme:*", "beta"]}
    ]}

A bare list of entries is accepted too. ``sha256`` keeps the secret itself out of the file. A tenant reaches
the runs whose ``queuePartitionKey`` matches one of its ``partitions`` (glob patterns; default: the tenant
name itself and ``<tenant>:*``); tenant ``*`` (default partitions ``*``) reaches every run and the
cluster-wide views. Roles are ordered: viewer < approver < operator < admin.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from kodo.errors import ConfigurationError

Role = Literal["viewer", "approver", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "approver", "operator", "admin")
VARIABLE = "KODO_API_TOKENS"
_Text = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]


@dataclass(frozen=True, slots=True)
class Principal:
    """The bearer of a valid token."""

    subject: str
    tenant: str
    role: Role
    partitions: tuple[str, ...]

    @property
    def everywhere(self) -> bool:
        """Whether the token reaches every partition (and the cluster-wide views)."""
        return "*" in self.partitions

    def allows(self, needed: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(needed)

    def sees(self, partition: str | None) -> bool:
        """Whether a run in ``partition`` belongs to this token's tenant (a run without one belongs to none)."""
        if self.everywhere:
            return True
        return partition is not None and any(fnmatchcase(partition, pattern) for pattern in self.partitions)

    def owns(self, partition: str) -> bool:
        """Whether a run may be started in ``partition``: the tenant's own name or ``<tenant>:<suffix>``."""
        return self.everywhere or partition == self.tenant or partition.startswith(f"{self.tenant}:")

    def like_patterns(self) -> list[str] | None:
        """The partitions as SQL ``LIKE`` patterns (``None``: no restriction)."""
        if self.everywhere:
            return None
        escaped = [p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for p in self.partitions]
        return [p.replace("*", "%").replace("?", "_") for p in escaped]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    token: Annotated[str, StringConstraints(min_length=16, max_length=4096)] | None = None
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    subject: _Text
    tenant: _Text
    role: Role
    partitions: list[_Text] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_secret(self) -> _Entry:
        if (self.token is None) == (self.sha256 is None):
            raise ValueError("give exactly one of token or sha256")
        return self

    def digest(self) -> str:
        return self.sha256.lower() if self.sha256 else digest(self.token or "")

    def principal(self) -> Principal:
        default = ["*"] if self.tenant == "*" else [self.tenant, f"{self.tenant}:*"]
        return Principal(self.subject, self.tenant, self.role, tuple(self.partitions or default))


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenTable:
    by_digest: dict[str, Principal]

    def lookup(self, token: str | None) -> Principal | None:
        """The principal of ``token``; tokens are compared by their SHA-256, never as given."""
        if not token:
            return None
        return self.by_digest.get(digest(token))


def _raw(spec: str) -> Any:
    text = spec.strip()
    if not text.startswith(("{", "[")):
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigurationError(f"{VARIABLE}: cannot read token file {path}: {error.strerror}") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"{VARIABLE}: not valid JSON ({error.msg} at line {error.lineno})") from error


def parse(spec: str | None) -> TokenTable | None:
    """The token table of ``KODO_API_TOKENS`` (inline JSON or a file path); ``None`` when unset."""
    if spec is None or not spec.strip():
        return None
    data = _raw(spec)
    entries = data.get("tokens") if isinstance(data, dict) and set(data) == {"tokens"} else data
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f'{VARIABLE}: expected {{"tokens": [...]}} or a non-empty list of token entries')
    table: dict[str, Principal] = {}
    for index, raw in enumerate(entries):
        try:
            entry = _Entry.model_validate(raw)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in error.errors())
            raise ConfigurationError(f"{VARIABLE}: token entry {index}: {problems}") from error
        key = entry.digest()
        if key in table:
            raise ConfigurationError(f"{VARIABLE}: token entry {index} repeats an earlier token")
        table[key] = entry.principal()
    return TokenTable(table)
