"""Identity laws (SPEC §4): canonical JSON, hashes and the ids derived from them."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from kodo.identity import (
    artifact_uri,
    canonical,
    gate_key_for,
    new_intent_id,
    recipe_intent_id,
    run_id_for,
    sha256_hex,
    task_key_for,
)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- canonical ----------------------------------------------------------------------------------


def test_canonical_sorts_keys_at_every_depth() -> None:
    """Key order of the input never changes the canonical text (nested objects included)."""
    value = {"b": 1, "a": {"z": [3, {"y": 1, "x": 2}], "c": None}}
    assert canonical(value) == '{"a":{"c":null,"z":[3,{"x":2,"y":1}]},"b":1}'
    reordered = {"a": {"c": None, "z": [3, {"x": 2, "y": 1}]}, "b": 1}
    assert canonical(reordered) == canonical(value)


def test_canonical_has_no_spaces() -> None:
    """Separators are "," and ":" with no whitespace, so hashes match across producers."""
    text = canonical({"k": [1, 2], "m": {"n": "o p"}})
    assert text == '{"k":[1,2],"m":{"n":"o p"}}'
    assert ", " not in text and ": " not in text


def test_canonical_keeps_non_ascii() -> None:
    """UTF-8 characters are kept verbatim (ensure_ascii=False), not \\u-escaped."""
    assert canonical({"goal": "café ✓"}) == '{"goal":"café ✓"}'
    assert "\\u" not in canonical(["日本"])


def test_canonical_keeps_array_order() -> None:
    """Arrays are not sorted; their order is part of the identity."""
    assert canonical([3, 1, 2]) != canonical([1, 2, 3])


def test_canonical_matches_the_spec_formula() -> None:
    """canonical(x) is exactly json.dumps(sort_keys, compact separators, ensure_ascii=False)."""
    value = {"Z": 1, "a": "é", "list": [{"b": 2, "A": 1}], "n": 1.5, "t": True}
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical(value) == expected


# --- sha256_hex ---------------------------------------------------------------------------------


def test_sha256_of_string_hashes_the_string_itself() -> None:
    """A str is hashed as its own UTF-8 bytes, not as a JSON string literal."""
    assert sha256_hex("abc") == _sha("abc")
    assert sha256_hex("abc") != _sha('"abc"')
    assert sha256_hex("é") == hashlib.sha256("é".encode()).hexdigest()


def test_sha256_of_object_hashes_its_canonical_json() -> None:
    """Non-strings are hashed through canonical(), so key order does not matter."""
    assert sha256_hex({"b": 2, "a": 1}) == _sha('{"a":1,"b":2}')
    assert sha256_hex({"a": 1, "b": 2}) == sha256_hex({"b": 2, "a": 1})
    assert sha256_hex([1, "x"]) == _sha('[1,"x"]')
    assert sha256_hex(7) == _sha("7")


def test_sha256_hex_is_64_lowercase_hex() -> None:
    """Every hash is 64 lowercase hex digits."""
    assert re.fullmatch(r"[0-9a-f]{64}", sha256_hex({"x": 1}))


# --- intent ids ---------------------------------------------------------------------------------


def test_new_intent_id_format() -> None:
    """POST /api/intents ids are "it_" + 16 lowercase hex digits."""
    for _ in range(200):
        assert re.fullmatch(r"it_[0-9a-f]{16}", new_intent_id())


def test_new_intent_id_is_unique_over_many_draws() -> None:
    """Random intent ids do not collide (the predecessor's fixed-seed hazard)."""
    draws = [new_intent_id() for _ in range(20_000)]
    assert len(set(draws)) == len(draws)


def test_recipe_intent_id_is_ih_plus_sha_of_canonical() -> None:
    """Recipe intents are content-addressed: "ih_" + sha256(canonical(intent))."""
    intent = {"goal": "build é", "inputs": {"b": 1, "a": 2}, "constraints": {}}
    expected = "ih_" + _sha(json.dumps(intent, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    assert recipe_intent_id(intent) == expected
    assert recipe_intent_id(dict(reversed(list(intent.items())))) == expected
    assert recipe_intent_id({**intent, "goal": "other"}) != expected


# --- run id -------------------------------------------------------------------------------------


@pytest.mark.parametrize("workflow_id", ["it_0123456789abcdef", "ih_" + "a" * 64, "x", "ünïcode"])
def test_run_id_is_run_plus_first_32_hex_of_sha_of_workflow_id(workflow_id: str) -> None:
    """runId = "run_" + sha256(workflowID)[:32], checked against hashlib directly."""
    expected = "run_" + hashlib.sha256(workflow_id.encode("utf-8")).hexdigest()[:32]
    assert run_id_for(workflow_id) == expected
    assert len(run_id_for(workflow_id)) == 4 + 32


def test_run_id_differs_per_workflow() -> None:
    """Different workflow ids give different run ids."""
    assert run_id_for("it_a") != run_id_for("it_b")


# --- task key -----------------------------------------------------------------------------------


def test_task_key_matches_the_spec_formula() -> None:
    """taskKey = sha256(canonical({intentId, runId, stepId: "ExecuteST", req}))."""
    req = {"cmd": "echo test0", "test": "test0"}
    body = {"intentId": "it_1", "runId": "run_1", "stepId": "ExecuteST", "req": req}
    expected = _sha(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    assert task_key_for("it_1", "run_1", req) == expected


def test_task_key_is_deterministic() -> None:
    """The same inputs always give the same child workflow id (key order irrelevant)."""
    a = task_key_for("it_1", "run_1", {"cmd": "echo", "test": "t"})
    b = task_key_for("it_1", "run_1", {"test": "t", "cmd": "echo"})
    assert a == b
    assert re.fullmatch(r"[0-9a-f]{64}", a)


@pytest.mark.parametrize(
    ("intent_id", "run_id", "req"),
    [
        ("it_2", "run_1", {"cmd": "echo", "test": "t"}),
        ("it_1", "run_2", {"cmd": "echo", "test": "t"}),
        ("it_1", "run_1", {"cmd": "echo2", "test": "t"}),
        ("it_1", "run_1", {"cmd": "echo", "test": "u"}),
        ("it_1", "run_1", {"cmd": "echo"}),
    ],
)
def test_task_key_is_sensitive_to_each_input(intent_id: str, run_id: str, req: dict[str, str]) -> None:
    """Changing the intent, the run or any request field changes the task key."""
    base = task_key_for("it_1", "run_1", {"cmd": "echo", "test": "t"})
    assert task_key_for(intent_id, run_id, req) != base


# --- gate key -----------------------------------------------------------------------------------


def test_gate_key_format() -> None:
    """Gate key = slug(purpose)[:16] + "-" + sha256("<runId>:<stepId>:<purpose>:<attempt>")[:16]."""
    key = gate_key_for("run_abc", "ApplyPatchST", "approve-plan")
    assert key == "approve-plan-" + _sha("run_abc:ApplyPatchST:approve-plan:1")[:16]
    assert re.fullmatch(r"[a-z0-9:_-]+-[0-9a-f]{16}", key)


def test_gate_key_attempt_and_inputs_matter() -> None:
    """A different attempt, run, step or purpose gives a different gate key."""
    base = gate_key_for("run_abc", "CompileST", "ask-user")
    assert gate_key_for("run_abc", "CompileST", "ask-user", attempt=1) == base
    assert gate_key_for("run_abc", "CompileST", "ask-user", attempt=2) != base
    assert gate_key_for("run_abd", "CompileST", "ask-user") != base
    assert gate_key_for("run_abc", "DecideST", "ask-user") != base
    assert gate_key_for("run_abc", "CompileST", "ask-users") != base


def test_gate_key_slug_is_normalized_and_truncated() -> None:
    """The purpose slug is lowercase [a-z0-9:_-] and at most 16 characters."""
    key = gate_key_for("run_x", "ApplyPatchST", "Parallel Approval Of Everything!")
    slug, _, digest = key.rpartition("-")
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    assert len(slug) <= 16
    assert re.fullmatch(r"[a-z0-9:_-]+", slug)
    assert slug.startswith("parallel-approva")


# --- artifact uri -------------------------------------------------------------------------------


def test_artifact_uri_format() -> None:
    """artifact://run/<runId>/step/<stepId>/task/<taskKey>/<name>."""
    uri = artifact_uri("run_1", "ExecuteST", "abc", "stdout.log")
    assert uri == "artifact://run/run_1/step/ExecuteST/task/abc/stdout.log"


def test_artifact_uri_with_empty_task_key() -> None:
    """Step-level artifacts have an empty task key, which reads as "task//"."""
    uri = artifact_uri("run_1", "CompileST", "", "plan.json")
    assert uri == "artifact://run/run_1/step/CompileST/task//plan.json"
