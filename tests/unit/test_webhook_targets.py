"""Webhook target rules and the backoff schedule (kodo.workflows.webhooks), without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from helpers import make_settings
from kodo.errors import InvalidInput
from kodo.settings import Settings
from kodo.workflows.webhooks import backoff, check_target, new_secret, signed_headers


def _settings(tmp_path: Path, allowed: str = "") -> Settings:
    return make_settings("postgresql://u@127.0.0.1/x", tmp_path, KODO_WEBHOOK_ALLOWED_HOSTS=allowed)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/h", "https://localhost/h", "http://[::1]:8080/h", "http://127.8.9.10/h"]
)
def test_loopback_targets_are_always_allowed(tmp_path: Path, url: str) -> None:
    """Loopback (localhost, 127/8, ::1) needs no configuration."""
    assert check_target(url, _settings(tmp_path)) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/h",
        "http://172.16.3.4/h",
        "http://192.168.0.2/h",
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00::1]/h",
        "http://0.0.0.0/h",
        "http://hooks.example.com/h",
        "file:///etc/passwd",
        "127.0.0.1/h",
        "http://a:b@127.0.0.1/h",
    ],
)
def test_other_targets_are_refused(tmp_path: Path, url: str) -> None:
    """Private, link-local, public and non-http targets are InvalidInput (400) unless listed."""
    with pytest.raises(InvalidInput):
        check_target(url, _settings(tmp_path))


def test_allowed_hosts_admit_exactly_their_hosts(tmp_path: Path) -> None:
    """KODO_WEBHOOK_ALLOWED_HOSTS admits its names (any case), and nothing else."""
    settings = _settings(tmp_path, "Hooks.Example.com, 10.0.0.7")
    assert check_target("https://hooks.example.com/x", settings)
    assert check_target("http://10.0.0.7:8080/x", settings)
    with pytest.raises(InvalidInput):
        check_target("http://evil.example.com/x", settings)


def test_backoff_doubles_and_is_capped(tmp_path: Path) -> None:
    """Waits grow base·2^(n-1) and stop at 300 s."""
    settings = make_settings("postgresql://u@127.0.0.1/x", tmp_path, KODO_WEBHOOK_BACKOFF_SEC="1.5")
    assert [backoff(settings, n) for n in (1, 2, 3)] == [1.5, 3.0, 6.0]
    assert backoff(settings, 30) == 300.0


def test_signed_headers_verify_with_the_library() -> None:
    """The three Standard Webhooks headers verify; a changed body does not."""
    secret = new_secret()
    body = '{"type":"run.succeeded"}'
    headers = signed_headers(secret, "msg_1", body, datetime.now(UTC))
    assert Webhook(secret).verify(body, headers) == {"type": "run.succeeded"}
    with pytest.raises(Exception, match="signature"):
        Webhook(secret).verify(body + " ", headers)
