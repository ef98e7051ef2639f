"""The token table of KODO_API_TOKENS: file or inline JSON, digests, roles and tenant partitions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from kodo.access import parse
from kodo.errors import ConfigurationError


def test_a_token_file_with_digests_and_partition_globs(tmp_path: Path) -> None:
    """A file path works; sha256 entries match their token; partitions are globs (default tenant, tenant:*)."""
    digest = hashlib.sha256(b"secret-token-for-bob").hexdigest()
    entries = [
        {"token": "alice-token-0000001", "subject": "alice", "tenant": "acme", "role": "approver"},
        {"sha256": digest.upper(), "subject": "bob", "tenant": "beta", "role": "admin", "partitions": ["b-*", "x?"]},
        {"token": "ops-token-000000001", "subject": "ops", "tenant": "*", "role": "operator"},
    ]
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": entries}))
    table = parse(str(path))
    assert table is not None
    alice = table.lookup("alice-token-0000001")
    assert alice is not None and alice.subject == "alice" and alice.role == "approver"
    assert alice.sees("acme") and alice.sees("acme:ci") and not alice.sees("acme-labs") and not alice.sees(None)
    assert alice.allows("viewer") and alice.allows("approver") and not alice.allows("operator")
    assert alice.like_patterns() == ["acme", "acme:%"]
    bob = table.lookup("secret-token-for-bob")
    assert bob is not None and bob.sees("b-1") and bob.sees("x1") and not bob.sees("beta")
    ops = table.lookup("ops-token-000000001")
    assert ops is not None and ops.everywhere and ops.sees(None) and ops.like_patterns() is None
    assert table.lookup("nope") is None and table.lookup(None) is None


def test_like_patterns_escape_sql_wildcards() -> None:
    """A tenant named with % or _ matches only itself in SQL."""
    table = parse('[{"token": "t-0123456789abcdef", "subject": "s", "tenant": "a_b%", "role": "viewer"}]')
    assert table is not None
    who = table.lookup("t-0123456789abcdef")
    assert who is not None and who.like_patterns() == ["a\\_b\\%", "a\\_b\\%:%"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ('{"tokens": []}', "non-empty list"),
        ('[{"subject": "s", "tenant": "t", "role": "viewer"}]', "exactly one of token or sha256"),
        ('[{"token": "0123456789abcdef", "subject": "s", "tenant": "t", "role": "viewer", "x": 1}]', "x: Extra"),
        (
            '[{"token": "0123456789abcdef", "subject": "s", "tenant": "t", "role": "viewer"},'
            ' {"token": "0123456789abcdef", "subject": "u", "tenant": "t", "role": "admin"}]',
            "token entry 1 repeats an earlier token",
        ),
    ],
)
def test_a_bad_table_names_the_variable(spec: str, message: str) -> None:
    """Every refusal is a ConfigurationError that names KODO_API_TOKENS."""
    with pytest.raises(ConfigurationError) as raised:
        parse(spec)
    assert raised.value.message.startswith("KODO_API_TOKENS: ") and message in raised.value.message


def test_unset_means_no_tokens() -> None:
    """No value (or a blank one) turns authentication off."""
    assert parse(None) is None and parse("  ") is None
