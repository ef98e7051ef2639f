"""Decision-as-data normalisation of gate replies (reference §7.2): fail closed."""

from __future__ import annotations

from typing import Any

import pytest

from kodo.workflows.gates import normalize_decision


def _decision(payload: Any) -> str:
    return str(normalize_decision(payload)["decision"])


@pytest.mark.parametrize(("choice", "expected"), [("yes", "yes"), ("no", "no")])
def test_choice_yes_no(choice: str, expected: str) -> None:
    """choice yes/no decides."""
    assert _decision({"choice": choice}) == expected


def test_choice_wins_over_approved_and_decision() -> None:
    """A valid choice beats approved and decision in the same reply."""
    assert _decision({"choice": "no", "approved": True, "decision": "approve"}) == "no"
    assert _decision({"choice": "yes", "approved": False, "decision": "reject"}) == "yes"


def test_invalid_choice_falls_through_to_approved() -> None:
    """A choice outside yes/no is ignored and approved decides."""
    assert _decision({"choice": "maybe", "approved": True}) == "yes"
    assert _decision({"choice": 1, "approved": False}) == "no"


@pytest.mark.parametrize(("approved", "expected"), [(True, "yes"), (False, "no")])
def test_approved_bool(approved: bool, expected: str) -> None:
    """approved true/false decides when there is no valid choice."""
    assert _decision({"approved": approved}) == expected


def test_approved_wins_over_decision() -> None:
    """approved beats the decision string."""
    assert _decision({"approved": False, "decision": "approve"}) == "no"
    assert _decision({"approved": True, "decision": "reject"}) == "yes"


@pytest.mark.parametrize("approved", ["true", 1, "yes", None])
def test_non_bool_approved_does_not_approve(approved: Any) -> None:
    """Only a JSON boolean counts as approved; strings and numbers do not approve."""
    assert _decision({"approved": approved}) == "no"


@pytest.mark.parametrize("word", ["yes", "approve", "approved", "YES", " Approve ", "APPROVED\n"])
def test_decision_yes_aliases(word: str) -> None:
    """decision yes|approve|approved (trimmed, any case) → yes."""
    assert _decision({"decision": word}) == "yes"


@pytest.mark.parametrize("word", ["no", "reject", "rejected", "NO", " Rejected "])
def test_decision_no_aliases(word: str) -> None:
    """decision no|reject|rejected → no."""
    assert _decision({"decision": word}) == "no"


@pytest.mark.parametrize(
    "payload",
    [
        None,
        "yes",
        ["yes"],
        42,
        {},
        {"decision": "maybe"},
        {"decision": ""},
        {"decision": True},
        {"decision": None},
        {"answer": "yes"},
        {"choice": "approve"},
    ],
)
def test_anything_else_fails_closed_to_no(payload: Any) -> None:
    """Unknown, missing or malformed replies are a "no" — never an approval."""
    assert _decision(payload) == "no"


@pytest.mark.parametrize("word", ["ok", "sure", "approves", "yes please", "accept"])
def test_decision_words_outside_the_alias_list_fail_closed(word: str) -> None:
    """Only yes|approve|approved approve; any other decision word is "no"."""
    assert _decision({"decision": word}) == "no"


# FAILS TODAY — src bug: gates._YES also holds "y" and "true", so these approve a plan although
# reference §7.2 lists only yes|approve|approved and says anything else is "no" (fail closed).
@pytest.mark.parametrize("word", ["y", "true", "Y", "TRUE"])
def test_decision_y_and_true_are_not_approval_aliases(word: str) -> None:
    """The decision words "y" and "true" are not in the spec's alias list, so they must read "no"."""
    assert _decision({"decision": word}) == "no"


@pytest.mark.parametrize("key", ["rationale", "reason", "note", "notes"])
def test_rationale_from_each_alias(key: str) -> None:
    """The rationale is read from rationale, reason, note or notes."""
    assert normalize_decision({"choice": "yes", key: "because"})["rationale"] == "because"


def test_rationale_precedence() -> None:
    """rationale beats reason beats note beats notes."""
    full = {"rationale": "r", "reason": "s", "note": "n", "notes": "ns"}
    assert normalize_decision(full)["rationale"] == "r"
    assert normalize_decision({k: v for k, v in full.items() if k != "rationale"})["rationale"] == "s"
    assert normalize_decision({"note": "n", "notes": "ns"})["rationale"] == "n"
    assert normalize_decision({"notes": "ns"})["rationale"] == "ns"


def test_non_string_rationale_is_skipped() -> None:
    """A non-string rationale is ignored in favour of the next string alias."""
    assert normalize_decision({"rationale": 5, "reason": "text"})["rationale"] == "text"


@pytest.mark.parametrize("payload", [None, {}, {"choice": "yes"}, "yes"])
def test_missing_rationale_is_none(payload: Any) -> None:
    """No rationale field gives rationale None."""
    assert normalize_decision(payload)["rationale"] is None


def test_result_shape() -> None:
    """The decision is exactly {decision, rationale}."""
    assert normalize_decision({"choice": "yes", "rationale": "ok", "actor": "me"}) == {
        "decision": "yes",
        "rationale": "ok",
    }
