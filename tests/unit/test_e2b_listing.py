"""The E2B workspace's listing rules (pure functions): what counts as changed, created or deleted."""

from __future__ import annotations

from pathlib import Path

from kodo.adapters.sandbox.e2b_workspace import LocalFile, changed_paths, deleted_paths, parse_listing, workspace_files


def uploaded(*names: str) -> list[LocalFile]:
    return [LocalFile(relative_path=name, path=Path("/nowhere") / name, size=1, sha256="a" * 64) for name in names]


def test_an_uploaded_file_missing_from_the_listing_is_deleted_a_changed_one_is_not() -> None:
    """a.txt kept, b.txt changed, c.txt gone, d.txt new: only c.txt is deleted, b and d are changed/created."""
    listing = parse_listing(f"{'a' * 64}  ./a.txt\n{'b' * 64}  ./b.txt\n{'d' * 64}  ./d.txt\n")
    files = uploaded("a.txt", "b.txt", "c.txt")
    assert deleted_paths(files, listing) == ["c.txt"]
    assert changed_paths(files, listing) == ["b.txt", "d.txt"]


def test_a_name_the_listing_must_escape_is_never_taken_for_deleted() -> None:
    """sha256sum escapes a backslash or newline in a name (the line starts with ``\\``) and parse_listing skips
    such lines, so those uploaded files cannot be told apart from deleted ones: they are kept."""
    listing = parse_listing(f"\\{'a' * 64}  ./back\\\\slash\n\\{'a' * 64}  ./new\\nline\n")
    assert listing == {}
    assert deleted_paths(uploaded("back\\slash", "new\nline", "plain"), listing) == ["plain"]


def test_a_deleted_entry_has_no_content() -> None:
    """A deleted filesOut entry becomes (path, None): the workflow deletes the local file through the ledger."""
    entries = [{"path": "x", "workspace": True, "deleted": True}, {"path": "y", "workspace": True, "inline": "1"}]
    assert workspace_files(entries) == [("x", None), ("y", b"1")]
