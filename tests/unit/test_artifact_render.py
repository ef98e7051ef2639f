"""Artifact GET rendering by kind (reference §11.3)."""

from __future__ import annotations

import json

import pytest

from kodo.views.artifacts import ref_media_type, render

JSON_KINDS = ["json", "raw", "timings", "artifact_index", "question_card"]
TEXT_KINDS = ["stdout", "stderr", "file", "text", "none"]
COMPACT_KINDS = ["plan_card", "patch", "patch_apply", "json_diagnostic", "ops"]


@pytest.mark.parametrize("kind", JSON_KINDS)
def test_json_kinds_render_inline_json_pretty(kind: str) -> None:
    """JSON kinds are application/json with inline["json"] pretty-printed (2 spaces)."""
    value = {"b": [1, 2], "a": {"x": "y"}}
    media, body = render(kind, {"json": value})
    assert media == "application/json"
    assert body == json.dumps(value, indent=2)
    assert json.loads(body) == value


@pytest.mark.parametrize("kind", JSON_KINDS)
def test_json_kinds_fall_back_to_text_then_inline(kind: str) -> None:
    """Without "json", a JSON kind serves inline["text"] as is, else the whole inline pretty."""
    assert render(kind, {"text": "plain words"}) == ("application/json", "plain words")
    media, body = render(kind, {"other": 1})
    assert media == "application/json"
    assert json.loads(body) == {"other": 1}
    assert "\n  " in body


def test_json_kind_with_string_payload_is_not_requoted() -> None:
    """A string payload is served verbatim, not JSON-encoded again."""
    assert render("json", {"json": "already text"}) == ("application/json", "already text")
    assert render("raw", "bare") == ("application/json", "bare")


@pytest.mark.parametrize("kind", TEXT_KINDS)
def test_text_kinds_render_inline_text(kind: str) -> None:
    """stdout/stderr/file/text/none are text/plain with inline["text"] verbatim."""
    media, body = render(kind, {"text": "OK: echo test0\n"})
    assert media.startswith("text/plain")
    assert body == "OK: echo test0\n"


@pytest.mark.parametrize("kind", TEXT_KINDS)
def test_text_kinds_without_text_render_pretty_json(kind: str) -> None:
    """A text kind without a text field falls back to pretty JSON of the inline value."""
    media, body = render(kind, {"json": {"k": 1}})
    assert media.startswith("text/plain")
    assert json.loads(body) == {"json": {"k": 1}}
    assert body == json.dumps({"json": {"k": 1}}, indent=2)


@pytest.mark.parametrize("kind", COMPACT_KINDS)
def test_other_kinds_render_compact_json_text(kind: str) -> None:
    """plan_card, patch, patch_apply, json_diagnostic, ops are text/plain compact JSON of inline."""
    inline = {"goal": "g", "design": ["Design for: g"], "tests": ["test0", "test1"]}
    media, body = render(kind, inline)
    assert media.startswith("text/plain")
    assert json.loads(body) == inline
    assert " " not in body.replace("Design for: g", "")
    assert "\n" not in body


def test_plan_card_round_trips_non_ascii() -> None:
    """A plan card with non-ASCII text renders to JSON that parses back to the same value."""
    inline = {"goal": "café ✓"}
    _, body = render("plan_card", inline)
    assert json.loads(body) == inline


def test_svg_is_image_svg_xml() -> None:
    """svg artifacts are image/svg+xml with inline["text"] as the body."""
    svg = '<svg xmlns="http://www.w3.org/2000/svg"/>'
    assert render("svg", {"text": svg}) == ("image/svg+xml", svg)
    assert render("svg", svg) == ("image/svg+xml", svg)


@pytest.mark.parametrize(
    ("kind", "mime"),
    [
        ("plan_card", "application/json"),
        ("question_card", "application/json"),
        ("json", "application/json"),
        ("json_diagnostic", "application/json"),
        ("svg", "image/svg+xml"),
        ("stdout", "text/plain"),
        ("patch", "text/plain"),
    ],
)
def test_artifact_ref_mime_follows_the_ref_contract(kind: str, mime: str) -> None:
    """A step row's artifact ref names JSON documents application/json and svg image/svg+xml (#20 item 3)."""
    assert ref_media_type(kind) == mime
