"""The sandbox failure classifier (reference §10.5) and the retryable/terminal split."""

from __future__ import annotations

import signal

import pytest

from kodo.adapters.sandbox.failures import (
    ERR_CODES,
    TERMINAL_CODES,
    classify_exception,
    classify_exit,
    classify_text,
    is_retryable,
)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Request timed out after 30s", "TIMEOUT"),
        ("context deadline exceeded", "TIMEOUT"),
        ("Out of memory: Killed process 42", "OOM"),
        ("sandbox OOM", "OOM"),
        ("getaddrinfo ENOTFOUND api.e2b.app", "NET_FAIL"),
        ("[Errno 111] Connection refused", "NET_FAIL"),
        ("socket hang up", "NET_FAIL"),
        ("failed to upload file", "UPLOAD_FAIL"),
        ("filesIn rejected", "UPLOAD_FAIL"),
        ("download failed", "DOWNLOAD_FAIL"),
        ("could not read file out.json", "DOWNLOAD_FAIL"),
        ("template not found", "BOOT_FAIL"),
    ],
)
def test_text_classes(text: str, code: str) -> None:
    """Provider error text maps to its class by the predecessor's ordered rules."""
    assert classify_text(text) == code


def test_timeout_words_win_over_network_words() -> None:
    """The rules are ordered: a network timeout is TIMEOUT, not NET_FAIL."""
    assert classify_text("network timeout") == "TIMEOUT"


def test_unmatched_text_with_a_non_zero_exit_is_cmd_nonzero() -> None:
    """No rule matches: a non-zero exit → CMD_NONZERO, none → BOOT_FAIL."""
    assert classify_text("weird", exit_code=2) == "CMD_NONZERO"
    assert classify_text("weird", exit_code=0) == "BOOT_FAIL"
    assert classify_text("weird") == "BOOT_FAIL"


def test_exceptions_classify_by_type_and_message() -> None:
    """classify_exception reads the exception's type name and message."""
    assert classify_exception(ConnectionRefusedError("nope")) == "NET_FAIL"
    assert classify_exception(TimeoutError("slow")) == "TIMEOUT"
    assert classify_exception(RuntimeError("boom")) == "BOOT_FAIL"


def test_exit_classes_of_a_command_that_ran() -> None:
    """A finished command: 0 → NONE, non-zero → CMD_NONZERO, its own output never makes it NET_FAIL."""
    assert classify_exit(0) == "NONE"
    assert classify_exit(1, stderr="AssertionError: network unreachable in test") == "CMD_NONZERO"
    assert classify_exit(124, timed_out=True) == "TIMEOUT"
    assert classify_exit(128 + signal.SIGXCPU, signal_number=signal.SIGXCPU) == "TIMEOUT"


def test_memory_exhaustion_is_oom() -> None:
    """An allocation failure in stderr, or a SIGKILL kodo did not send, is OOM; kodo's own kill is not."""
    assert classify_exit(1, stderr="Traceback...\nMemoryError\n") == "OOM"
    assert classify_exit(134, stderr="terminate called after throwing 'std::bad_alloc'") == "OOM"
    assert classify_exit(137, signal_number=signal.SIGKILL) == "OOM"
    assert classify_exit(137, signal_number=signal.SIGKILL, killed_by_kodo=True) == "CMD_NONZERO"


def test_retryable_and_terminal_split() -> None:
    """BOOT/NET/UPLOAD/DOWNLOAD are retried; CMD_NONZERO, TIMEOUT, OOM, DISK_QUOTA and E2B's workspace bounds
    are terminal."""
    assert {c for c in ERR_CODES if is_retryable(c)} == {"BOOT_FAIL", "NET_FAIL", "UPLOAD_FAIL", "DOWNLOAD_FAIL"}
    terminal = {"CMD_NONZERO", "TIMEOUT", "OOM", "DISK_QUOTA", "WORKSPACE_TOO_LARGE", "FILES_OUT_TOO_LARGE"}
    assert terminal == TERMINAL_CODES
    assert not is_retryable("NONE")
