"""Table cells of the console's pages: values an operator can read (issue #20 item 10)."""

from __future__ import annotations

import pytest

from kodo.ui.pages import _cell


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (118.44999999999997, "118.45"),
        (0.30000000000000004, "0.3"),
        (0.0041666666, "0.004167"),
        (2.0, "2"),
        (1234567.891, "1234567.89"),
        (7, "7"),
        (None, "—"),
        ("x", "x"),
    ],
)
def test_float_cells_are_rounded_for_reading(value: object, text: str) -> None:
    """A float from percentile_cont prints as 118.45, not 118.44999999999997."""
    assert _cell(value) == text
