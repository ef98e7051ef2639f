"""docs/configuration.md names every environment variable that Settings reads."""

from __future__ import annotations

from pathlib import Path

from kodo.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_settings_variable_is_documented() -> None:
    """Every Settings field's validation_alias appears in docs/configuration.md in backticks."""
    aliases = [field.validation_alias for field in Settings.model_fields.values()]
    assert aliases, "Settings has no fields"
    names = [alias for alias in aliases if isinstance(alias, str) and alias]
    assert len(names) == len(aliases), f"every field needs a plain environment name: {aliases}"
    text = DOC.read_text(encoding="utf-8")
    missing = sorted(name for name in names if f"`{name}`" not in text)
    assert not missing, f"docs/configuration.md does not document: {', '.join(missing)}"
