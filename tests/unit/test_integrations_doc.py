"""docs/integrations.md's receiver snippet, run as printed against headers kodo itself signs."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kodo.workflows.webhooks import new_secret, signed_headers

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def _snippet() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### Verifying a signature") :]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, "the verification snippet is gone from docs/integrations.md"
    return found.group(1)


def test_the_verification_snippet_accepts_kodos_signature_and_refuses_a_forgery(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The documented handler verifies a kodo-signed event, skips a seen id, and refuses a changed body."""
    seen: set[str] = set()
    namespace: dict[str, Any] = {"already_seen": lambda message_id: message_id in seen}
    exec(compile(_snippet(), str(DOC), "exec"), namespace)  # the doc's own code, run as written
    handle = namespace["handle"]
    secret = new_secret()
    body = '{"data":{"runId":"run_1"},"timestamp":"2026-12-02T11:02:21+00:00","type":"gate.opened"}'
    headers = signed_headers(secret, "msg_1", body, datetime.now(UTC))
    handle(body.encode(), headers, secret)
    assert capsys.readouterr().out == "gate.opened run_1\n"
    seen.add("msg_1")
    handle(body.encode(), headers, secret)
    assert capsys.readouterr().out == ""  # a retry of a handled event: nothing done
    with pytest.raises(PermissionError, match="not from kodo"):
        handle(body.replace("run_1", "run_2").encode(), headers, secret)
    with pytest.raises(PermissionError):
        handle(body.encode(), headers, new_secret())
