"""The legacy routes' deprecation headers (issue #20 item 10)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from kodo.api.deps import DEPRECATION


def test_sunset_is_a_valid_http_date_still_ahead() -> None:
    """The Sunset header is a well-formed HTTP date that has not passed (a past one says the route is gone)."""
    sunset = parsedate_to_datetime(DEPRECATION["Sunset"])
    assert format_datetime(sunset, usegmt=True) == DEPRECATION["Sunset"]
    assert sunset > datetime.now(UTC)
