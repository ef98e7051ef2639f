"""The run's workspace in an E2B sandbox: uploaded before the command, its changed files brought back after it.

* **Upload**: every regular file under the request's ``workdir`` (``.git`` and symbolic links are skipped: the
  repository's history is not needed to run a command, and a link may point outside the workspace) is written to
  ``WORKSPACE_DIRECTORY`` with ``files.write_files`` (batched). A workspace over the size limit is refused
  before any sandbox is created (``WORKSPACE_TOO_LARGE``, terminal).
* **Files out**: after the command, one listing command (``find`` + ``sha256sum`` in the sandbox) hashes every
  file of the sandbox's workspace; a file whose hash differs from the uploaded one, or that was not uploaded, is
  read back with ``files.read(format="bytes")``. More files or bytes than the bounds allow is
  ``FILES_OUT_TOO_LARGE`` (terminal; nothing comes back). An uploaded file the listing no longer holds was
  deleted by the command: it comes back as a ``deleted`` entry (no content), and the workflow deletes the local
  copy through the patch ledger (postimage ``absent``). A name ``sha256sum`` has to escape (a backslash or a
  newline in it) is never taken for deleted: the listing skips such lines.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKSPACE_DIRECTORY = "/home/user/workspace"
# An installed template's packages (kodo.adapters.toolchains.ensure_packages), uploaded into every sandbox.
PACKAGES_DIRECTORY = "/home/user/.kodo/packages"
PACKAGES_MAX_BYTES = 1 << 30
SKIPPED_DIRECTORIES = frozenset({".git"})
UPLOAD_BATCH_BYTES = 8 << 20  # files per write_files request: about this many bytes
# Hash every file of the sandbox's workspace (``.git`` skipped, as on upload): ``<sha256>  ./<path>`` per line.
LISTING_COMMAND = "find . -path ./.git -prune -o -type f -print0 | xargs -0 -r sha256sum"


class WorkspaceRefused(Exception):
    """The workspace cannot be moved in or out of the sandbox; ``code`` is the result's ``errCode``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalFile:
    relative_path: str  # POSIX, relative to the workspace
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceLimits:
    upload_max_bytes: int
    files_out_max_count: int
    files_out_max_bytes: int


def local_files(workdir: Path, upload_max_bytes: int) -> list[LocalFile]:
    """The workspace's regular files, sorted by path; ``WORKSPACE_TOO_LARGE`` once their total exceeds the limit."""
    found: list[LocalFile] = []
    total = 0
    for directory, subdirectories, names in os.walk(workdir):
        subdirectories[:] = sorted(name for name in subdirectories if name not in SKIPPED_DIRECTORIES)
        for name in sorted(names):
            path = Path(directory) / name
            if path.is_symlink() or not path.is_file():
                continue
            size = path.stat().st_size
            total += size
            if total > upload_max_bytes:
                raise WorkspaceRefused(
                    "WORKSPACE_TOO_LARGE",
                    f"WORKSPACE_TOO_LARGE: the workspace {workdir} holds more than {upload_max_bytes} bytes "
                    "(SBX_E2B_UPLOAD_MAX_MB); nothing was uploaded or run",
                )
            relative = path.relative_to(workdir).as_posix()
            found.append(LocalFile(relative_path=relative, path=path, size=size, sha256=_sha256_of(path)))
    return found


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload(sandbox: Any, files: list[LocalFile], directory: str = WORKSPACE_DIRECTORY) -> int:
    """Write every file into ``directory`` of the sandbox (the directory itself is made first), in batches of up to
    ``UPLOAD_BATCH_BYTES`` per ``files.write_files`` request (one multipart upload each); returns the batches."""
    sandbox.files.make_dir(directory)
    batches = 0
    batch: list[dict[str, Any]] = []
    size = 0
    for item in files:
        batch.append({"path": f"{directory}/{item.relative_path}", "data": item.path.read_bytes()})
        size += item.size
        if size >= UPLOAD_BATCH_BYTES:
            sandbox.files.write_files(batch)
            batches, batch, size = batches + 1, [], 0
    if batch:
        sandbox.files.write_files(batch)
        batches += 1
    return batches


def parse_listing(text: str) -> dict[str, str]:
    """``sha256sum`` output → {relative path: hash}; escaped names (a backslash or newline in the name) are skipped."""
    hashes: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("\\") or "  " not in line:
            continue
        digest, name = line.split("  ", 1)
        hashes[name.removeprefix("./")] = digest
    return hashes


def changed_paths(uploaded: list[LocalFile], listing: dict[str, str]) -> list[str]:
    """Paths whose hash in the sandbox differs from the uploaded one, or that were not uploaded; sorted."""
    before = {item.relative_path: item.sha256 for item in uploaded}
    return sorted(path for path, digest in listing.items() if before.get(path) != digest)


def deleted_paths(uploaded: list[LocalFile], listing: dict[str, str]) -> list[str]:
    """Uploaded paths the sandbox's listing no longer holds (names the listing cannot show are kept); sorted."""
    return sorted(
        item.relative_path
        for item in uploaded
        if item.relative_path not in listing and not any(mark in item.relative_path for mark in ("\\", "\n"))
    )


def file_out(relative_path: str, content: bytes) -> dict[str, Any]:
    """One ``filesOut`` entry (it crosses a DBOS checkpoint as JSON): text inline, other bytes as base64."""
    entry: dict[str, Any] = {
        "path": relative_path,
        "workspace": True,  # a file of the run's workspace: written back into it (kodo.workflows.tasks)
        "sha256": hashlib.sha256(content).hexdigest(),
        "bytes": len(content),
    }
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        entry["inline"] = text
    else:
        entry["contentBase64"] = base64.b64encode(content).decode("ascii")
    return entry


def deleted_file(relative_path: str) -> dict[str, Any]:
    """One ``filesOut`` entry for a workspace file the command deleted (no content)."""
    return {"path": relative_path, "workspace": True, "deleted": True, "sha256": "absent", "bytes": 0}


def workspace_files(entries: list[dict[str, Any]]) -> list[tuple[str, bytes | None]]:
    """(relative path, exact bytes — ``None`` for a deleted file) of the ``filesOut`` entries that are workspace
    files, in order."""
    return [
        (str(entry["path"]), None if entry.get("deleted") else content_of(entry))
        for entry in entries
        if entry.get("workspace")
    ]


def content_of(entry: dict[str, Any]) -> bytes:
    """The exact bytes of a ``filesOut`` entry."""
    if "contentBase64" in entry:
        return base64.b64decode(entry["contentBase64"])
    return str(entry.get("inline", "")).encode("utf-8")


def install_packages(sandbox: Any, packages: list[LocalFile]) -> int:
    """The template's install step, once per sandbox: its packages uploaded to ``PACKAGES_DIRECTORY`` and their
    scripts made executable (uploads carry no mode); returns the upload's batches."""
    batches = upload(sandbox, packages, PACKAGES_DIRECTORY)
    sandbox.commands.run("if [ -d bin ]; then chmod -R a+x bin; fi", cwd=PACKAGES_DIRECTORY, timeout=120)
    return batches


def with_packages(cmd: str) -> str:
    """``cmd`` with the uploaded packages first on ``PATH`` and ``PYTHONPATH`` (set after the login shell's
    profile, which resets ``PATH``)."""
    directory = PACKAGES_DIRECTORY
    return f'export PATH="{directory}/bin:$PATH" PYTHONPATH="{directory}${{PYTHONPATH:+:$PYTHONPATH}}"\n{cmd}'


def download(sandbox: Any, uploaded: list[LocalFile], limits: WorkspaceLimits) -> list[dict[str, Any]]:
    """The files the command changed or created, read back within the bounds (``FILES_OUT_TOO_LARGE`` beyond),
    then the uploaded files it deleted."""
    listed = sandbox.commands.run(LISTING_COMMAND, cwd=WORKSPACE_DIRECTORY, timeout=120)
    listing = parse_listing(listed.stdout or "")
    paths, deleted = changed_paths(uploaded, listing), deleted_paths(uploaded, listing)
    if len(paths) + len(deleted) > limits.files_out_max_count:
        raise WorkspaceRefused(
            "FILES_OUT_TOO_LARGE",
            f"FILES_OUT_TOO_LARGE: the command changed or deleted {len(paths) + len(deleted)} files, more than "
            f"{limits.files_out_max_count} (SBX_E2B_FILES_OUT_MAX_COUNT); none were brought back",
        )
    entries: list[dict[str, Any]] = []
    total = 0
    for path in paths:
        content = bytes(sandbox.files.read(f"{WORKSPACE_DIRECTORY}/{path}", format="bytes"))
        total += len(content)
        if total > limits.files_out_max_bytes:
            raise WorkspaceRefused(
                "FILES_OUT_TOO_LARGE",
                f"FILES_OUT_TOO_LARGE: the changed files hold more than {limits.files_out_max_bytes} bytes "
                "(SBX_E2B_FILES_OUT_MAX_MB); none were brought back",
            )
        entries.append(file_out(path, content))
    return entries + [deleted_file(path) for path in deleted]
