"""A task's sandbox template, installed: the recipe's ``deps`` per deps hash (:mod:`kodo.adapters.toolchains`),
built on the host that runs the task the first time (cold) and reused afterwards (warm) — for the local sandbox a
virtual environment, for E2B the packages installed flat, which the adapter uploads into each sandbox (unless
the template is hot: a registered E2B template id already holds the deps, and the sandbox boots it). A build
that fails is the task's result: ``TEMPLATE_BUILD_FAIL``, with the build log as its ``stderr.log`` artifact
(not retried: the same pins fail the same way)."""

from __future__ import annotations

from typing import Any

from kodo.adapters.sandbox import SandboxResult
from kodo.adapters.toolchains import Toolchain, ToolchainBuildError, ensure, ensure_packages
from kodo.models import TemplateErrorCode
from kodo.settings import Settings

BUILD_FAIL: TemplateErrorCode = "TEMPLATE_BUILD_FAIL"


def prepare(
    settings: Settings, provider: str, template: dict[str, Any] | None
) -> tuple[Toolchain | None, SandboxResult | None]:
    """(the environment to run in, None) — or (None, the failed result); (None, None) when there is none to
    install (no deps, a hot E2B template, or a provider that installs nothing)."""
    deps = [str(d) for d in (template or {}).get("deps") or []]
    if not deps or template is None:
        return None, None
    if provider == "local":
        build = ensure
    elif provider == "e2b" and not template.get("templateId"):
        build = ensure_packages
    else:
        return None, None
    try:
        return build(settings.templates_dir, str(template["depsHash"]), deps), None
    except ToolchainBuildError as error:
        failed = SandboxResult(
            exit=1,
            stdout="",
            stderr=f"{BUILD_FAIL}: {error}\n--- build log ---\n{error.log}\n",
            err_code=BUILD_FAIL,
            sandbox_ref=f"template:{template['depsHash'][:16]}",
            raw={"provider": provider, "template": {"depsHash": template["depsHash"], "deps": deps}},
        )
        return None, failed


def describe(toolchain: Toolchain, raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the task's boot record says about its environment: cold (built now) or warm, where, and (E2B) how
    long the sandbox's install step took (``raw``: the result's provider details)."""
    described: dict[str, Any] = {
        "environment": "cold" if toolchain.built else "warm",
        "buildMs": toolchain.build_ms,
        toolchain.layout: str(toolchain.path),  # "venv" or "packages"
    }
    installed = (raw or {}).get("packages")
    if isinstance(installed, dict) and "installMs" in installed:
        described["installMs"] = installed["installMs"]
    return described
