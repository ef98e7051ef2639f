"""docs/security.md names, for each defence, the test that proves it: every test it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"


def test_every_test_the_threat_model_names_exists() -> None:
    """Each `tests/…py` file and each `::test_name` after it in docs/security.md is real."""
    text = DOC.read_text(encoding="utf-8")
    named = re.findall(r"`((?:tests/[\w/]+\.py|\w+\.py)?)(::test_\w+)?`", text)
    current: Path | None = None
    checked = 0
    for file_name, test_name in named:
        if file_name:
            found = (
                ROOT / file_name if file_name.startswith("tests/") else next(ROOT.glob(f"tests/**/{file_name}"), None)
            )
            assert found is not None and found.is_file(), f"docs/security.md names a missing file: {file_name}"
            current = found
        if test_name:
            assert current is not None, f"{test_name} names no file"
            assert f"def {test_name[2:]}(" in current.read_text(encoding="utf-8"), (
                f"{current.name}{test_name} is missing"
            )
            checked += 1
    assert checked >= 15
