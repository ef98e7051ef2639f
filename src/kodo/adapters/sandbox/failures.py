"""Sandbox failure classes (reference §10.5) and which of them the workflow step retries.

Two entry points:

* ``classify_text`` / ``classify_exception`` — the predecessor's text match, for errors raised by a
  provider or its SDK (the command's own output is never matched this way): timeout words →
  ``TIMEOUT``; ``out of memory|oom|killed process`` → ``OOM``; connection and DNS words →
  ``NET_FAIL``; ``upload|write file|filesin`` → ``UPLOAD_FAIL``; ``download|read file|filesout`` →
  ``DOWNLOAD_FAIL``; else a non-zero exit → ``CMD_NONZERO``; else ``BOOT_FAIL``.
* ``classify_exit`` — for a command that really ran: killed at its time limit (or over its CPU
  limit) → ``TIMEOUT``; exit 0 → ``NONE``; out of memory (killed by SIGKILL it was not sent by kodo,
  or an allocation failure in its stderr) → ``OOM``; any other non-zero exit → ``CMD_NONZERO``.

Retryable (the step retries): ``BOOT_FAIL``, ``NET_FAIL``, ``UPLOAD_FAIL``, ``DOWNLOAD_FAIL``.
Terminal: ``CMD_NONZERO``, ``TIMEOUT``, ``OOM``.
"""

from __future__ import annotations

import re
import signal

from kodo.models import RETRYABLE_SANDBOX_CODES

ERR_CODES = (
    "NONE", "BOOT_FAIL", "CMD_NONZERO", "TIMEOUT", "OOM", "NET_FAIL", "UPLOAD_FAIL", "DOWNLOAD_FAIL", "DISK_QUOTA",
    "WORKSPACE_TOO_LARGE", "FILES_OUT_TOO_LARGE",
)  # fmt: skip
# WORKSPACE_TOO_LARGE / FILES_OUT_TOO_LARGE: the E2B workspace over its bounds (kodo.adapters.sandbox.e2b_workspace).
TERMINAL_CODES = frozenset(
    {"CMD_NONZERO", "TIMEOUT", "OOM", "DISK_QUOTA", "WORKSPACE_TOO_LARGE", "FILES_OUT_TOO_LARGE"}
)

_RULES = (
    ("TIMEOUT", re.compile(r"timed? ?out|timeout|deadline exceeded")),
    ("OOM", re.compile(r"out of memory|\boom\b|killed process")),
    (
        "NET_FAIL",
        re.compile(
            r"enotfound|econnrefused|econnreset|connection ?refused|connection ?reset|connect ?error|network|dns"
            r"|socket hang up|name or service not known|temporary failure in name resolution"
        ),
    ),
    ("UPLOAD_FAIL", re.compile(r"upload|write file|filesin")),
    ("DOWNLOAD_FAIL", re.compile(r"download|read file|filesout")),
)
_MEMORY_MARKERS = re.compile(
    r"memoryerror|cannot allocate memory|out of memory|std::bad_alloc|allocation failed|fatal process oom"
)


def classify_text(text: str, exit_code: int | None = None) -> str:
    """The failure class of a provider error message (reference §10.5)."""
    lowered = text.lower()
    for code, pattern in _RULES:
        if pattern.search(lowered):
            return code
    if exit_code not in (None, 0):
        return "CMD_NONZERO"
    return "BOOT_FAIL"


def classify_exception(error: BaseException, exit_code: int | None = None) -> str:
    return classify_text(f"{type(error).__name__}: {error}", exit_code)


def classify_exit(
    exit_code: int,
    *,
    stderr: str = "",
    timed_out: bool = False,
    signal_number: int | None = None,
    killed_by_kodo: bool = False,
) -> str:
    """The class of a finished command; ``signal_number`` is the signal that ended it, if any."""
    if timed_out or signal_number == signal.SIGXCPU:
        return "TIMEOUT"
    if exit_code == 0 and signal_number is None:
        return "NONE"
    if (signal_number == signal.SIGKILL and not killed_by_kodo) or _MEMORY_MARKERS.search(stderr[-4000:].lower()):
        return "OOM"
    return "CMD_NONZERO"


def is_retryable(code: str) -> bool:
    return code in RETRYABLE_SANDBOX_CODES
