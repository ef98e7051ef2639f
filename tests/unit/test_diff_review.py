"""Parsing and capping of a workspace diff for the gate card (kodo.views.reviews)."""

from __future__ import annotations

from kodo.views.reviews import _cap, parse

DIFF = (
    "diff --git a/a.py b/a.py\n"
    "index 1111111..2222222 100644\n"
    "--- a/a.py\n"
    "+++ b/a.py\n"
    "@@ -3,3 +3,4 @@ def f():\n"
    " keep\n"
    "-old\n"
    "+new\n"
    "+more\n"
    " tail\n"
    "diff --git a/new.txt b/new.txt\n"
    "new file mode 100644\n"
    "--- /dev/null\n"
    "+++ b/new.txt\n"
    "@@ -0,0 +1 @@\n"
    "+hello\n"
    "\\ No newline at end of file\n"
)


def test_parse_numbers_lines_per_file_and_counts_changes() -> None:
    """Old/new line numbers follow each hunk header; headers are meta; counts are per file."""
    first, second = parse(DIFF)
    assert (first.path, first.added, first.removed) == ("a.py", 2, 1)
    body = [(x.kind, x.old, x.new, x.text) for x in first.lines if x.kind != "meta"]
    assert body == [
        ("hunk", None, None, "@@ -3,3 +3,4 @@ def f():"),
        ("ctx", 3, 3, "keep"),
        ("del", 4, None, "old"),
        ("add", None, 4, "new"),
        ("add", None, 5, "more"),
        ("ctx", 5, 6, "tail"),
    ]
    assert [x.text for x in first.lines if x.kind == "meta"] == [
        "index 1111111..2222222 100644",
        "--- a/a.py",
        "+++ b/a.py",
    ]
    assert (second.path, second.added, second.removed) == ("new.txt", 1, 0)
    assert second.lines[-1].kind == "meta" and second.lines[-1].text.startswith("\\ No newline")


def test_cap_cuts_at_the_line_budget_across_files() -> None:
    """Past the cap the view stops (and says so); under it nothing is cut and meta lines are dropped."""
    files = parse(DIFF)
    kept, cut = _cap(files, 7)
    assert cut is True and [f.path for f in kept] == ["a.py", "new.txt"] and len(kept[1].lines) == 1
    kept, cut = _cap(files, 100)
    assert cut is False and sum(len(f.lines) for f in kept) == 8
    assert parse("") == []


def test_ledger_diff_of_a_workspace_that_is_no_clone_parses_back() -> None:
    """The patch ledger's own diff (no git): new and changed files, unchanged ones left out, numbered on parse."""
    from kodo.adapters.workspace_git import ledger_diff

    text = ledger_diff([("new.txt", "", "a\nb\n"), ("same.txt", "x\n", "x\n"), ("m.py", "x = 1\n", "x = 2")])
    files = parse(text)
    assert [(f.path, f.added, f.removed) for f in files] == [("new.txt", 2, 0), ("m.py", 1, 1)]
    assert "--- /dev/null" in text and "\\ No newline at end of file" in text
