"""Settings (SPEC §3, reference §17): predecessor names and defaults, fail-fast validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kodo.errors import ConfigurationError
from kodo.settings import Settings, load_settings

ENV_NAMES = [str(field.validation_alias) for field in Settings.model_fields.values()]


@pytest.fixture(autouse=True)
def _clean_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's shell out of these tests: explicit environ dicts only."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def _error(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ)
    return str(caught.value)


# --- defaults -----------------------------------------------------------------------------------


def test_process_and_runtime_defaults_match_predecessor() -> None:
    """PORT, ADMIN_PORT, DBOS__APPVERSION, OC_MODE, SBX_MODE keep the predecessor's defaults."""
    s = load_settings({})
    assert s.port == 3001
    assert s.admin_port == 3002
    assert s.app_version == "v1"
    assert s.oc_mode == "replay"
    assert s.sbx_mode == "mock"


def test_intent_queue_defaults_match_predecessor() -> None:
    """INTENT_QUEUE_* defaults are 5/50/100/60/true/true."""
    s = load_settings({})
    assert (
        s.intent_queue_worker_concurrency,
        s.intent_queue_concurrency,
        s.intent_queue_rate_limit_per_period,
        s.intent_queue_rate_limit_period_sec,
        s.intent_queue_partition,
        s.intent_queue_priority_enabled,
    ) == (5, 50, 100, 60, True, True)


def test_sbx_queue_defaults_match_predecessor() -> None:
    """SBX_QUEUE_* defaults are 10/50/100/60/true/true."""
    s = load_settings({})
    assert (
        s.sbx_queue_worker_concurrency,
        s.sbx_queue_concurrency,
        s.sbx_queue_rate_limit_per_period,
        s.sbx_queue_rate_limit_period_sec,
        s.sbx_queue_partition,
        s.sbx_queue_priority_enabled,
    ) == (10, 50, 100, 60, True, True)


def test_gate_route_and_claim_defaults_match_predecessor() -> None:
    """HITL TTL 3600 s, legacy routes on, CLAIM_SCOPE demo, runtime mode unset."""
    s = load_settings({})
    assert s.hitl_plan_approval_timeout_s == 3600
    assert s.enable_legacy_run_routes is True
    assert s.claim_scope == "demo"
    assert s.runtime_mode is None


def test_adapter_defaults_match_predecessor() -> None:
    """OC/SBX timeouts and defaults follow reference §17."""
    s = load_settings({})
    assert s.oc_server_port == 4096
    assert s.oc_timeout_ms == 300_000
    assert s.oc_strict_mode is False
    assert s.sbx_provider == "e2b"
    assert s.sbx_default_timeout_ms == 300_000
    assert s.sbx_default_net is False
    assert s.wf_sleep_ms == 5000
    assert s.chaos_sleep_execute == 0
    assert s.agent_base_url == "http://127.0.0.1:4096"


def test_environment_values_are_read_by_their_predecessor_names() -> None:
    """Values given under the predecessor's variable names land in the settings."""
    s = load_settings(
        {
            "PORT": "4001",
            "ADMIN_PORT": "4002",
            "DBOS__APPVERSION": "v7",
            "OC_MODE": "record",
            "INTENT_QUEUE_CONCURRENCY": "9",
            "SBX_QUEUE_PARTITION": "false",
            "HITL_PLAN_APPROVAL_TIMEOUT_S": "12",
            "ENABLE_LEGACY_RUN_ROUTES": "false",
            "CLAIM_SCOPE": "signoff",
        }
    )
    assert (s.port, s.admin_port, s.app_version, s.oc_mode) == (4001, 4002, "v7", "record")
    assert s.intent_queue_concurrency == 9
    assert s.sbx_queue_partition is False
    assert s.hitl_plan_approval_timeout_s == 12
    assert s.enable_legacy_run_routes is False
    assert s.claim_scope == "signoff"


def test_empty_string_means_default() -> None:
    """An empty variable is treated as unset (reference §17), not as an invalid value."""
    s = load_settings({"PORT": "", "OC_MODE": "", "INTENT_QUEUE_PARTITION": "", "CLAIM_SCOPE": ""})
    assert s.port == 3001
    assert s.oc_mode == "replay"
    assert s.intent_queue_partition is True
    assert s.claim_scope == "demo"


# FAILS TODAY — src bug: Settings.model_validate runs BaseSettings.__init__ (pydantic calls a custom
# __init__ from model_validate), which merges os.environ under the explicit values.
def test_explicit_environ_ignores_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_settings(environ) reads only the dict it is given, never os.environ."""
    monkeypatch.setenv("PORT", "9999")
    monkeypatch.setenv("OC_MODE", "live")
    s = load_settings({})
    assert s.port == 3001
    assert s.oc_mode == "replay"


def test_bools_accept_true_false_and_1_0_in_any_case() -> None:
    """Boolean variables accept true/false (any case) and 1/0."""
    for text, value in [("true", True), ("TRUE", True), ("1", True), ("false", False), ("False", False), ("0", False)]:
        assert load_settings({"INTENT_QUEUE_PARTITION": text}).intent_queue_partition is value


@pytest.mark.parametrize("scope", ["signoff", "live-smoke", "demo"])
def test_known_claim_scopes_are_kept(scope: str) -> None:
    """CLAIM_SCOPE keeps each of its three known values."""
    assert load_settings({"CLAIM_SCOPE": scope}).claim_scope == scope


@pytest.mark.parametrize("scope", ["prod", "SIGNOFF", "anything"])
def test_unknown_claim_scope_becomes_demo(scope: str) -> None:
    """CLAIM_SCOPE outside signoff|live-smoke|demo reads as demo (never an error)."""
    assert load_settings({"CLAIM_SCOPE": scope}).claim_scope == "demo"


# --- invalid values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("PORT", "-1"),
        ("ADMIN_PORT", "x"),
        ("OC_MODE", "nope"),
        ("SBX_MODE", "real"),
        ("INTENT_QUEUE_PARTITION", "maybe"),
        ("SBX_QUEUE_WORKER_CONCURRENCY", "0"),
        ("INTENT_QUEUE_CONCURRENCY", "-5"),
        ("KODO_DB_POOL_SIZE", "0"),
        ("KODO_DB_POOL_SIZE", "many"),
        ("HITL_PLAN_APPROVAL_TIMEOUT_S", "1.5"),
        ("WORKFLOW_RUNTIME_MODE", "sideways"),
        ("DBOS__APPVERSION", "   "),
    ],
)
def test_invalid_value_raises_configuration_error_naming_the_variable(name: str, value: str) -> None:
    """A bad value stops start-up with a ConfigurationError whose message names the variable."""
    message = _error({name: value})
    assert re.search(rf"(?<![A-Z_]){re.escape(name)}(?![A-Z_])", message), message


def test_several_invalid_values_are_all_named() -> None:
    """Every invalid variable is reported in the one message, not just the first."""
    message = _error({"PORT": "abc", "OC_MODE": "nope"})
    assert "PORT" in message
    assert "OC_MODE" in message


def test_valid_variable_is_not_blamed() -> None:
    """Only the broken variable is named, not its valid neighbours."""
    message = _error({"PORT": "3005", "ADMIN_PORT": "abc"})
    assert "ADMIN_PORT" in message
    assert not re.search(r"(?<![A-Z_])PORT(?![A-Z_])", message)


# --- derived values -----------------------------------------------------------------------------


def test_executor_id_is_stable_for_the_same_home(tmp_path: Path) -> None:
    """The same KODO_HOME and role yield the same executor id, so a restart recovers its own work."""
    a = load_settings({"KODO_HOME": str(tmp_path)})
    b = load_settings({"KODO_HOME": str(tmp_path)})
    assert a.executor_for("worker") == b.executor_for("worker")


def test_executor_id_differs_per_role_and_home(tmp_path: Path) -> None:
    """Roles and data directories never share an executor id."""
    s = load_settings({"KODO_HOME": str(tmp_path / "one")})
    ids = {s.executor_for("monolith"), s.executor_for("worker"), s.executor_for("api")}
    assert len(ids) == 3
    other = load_settings({"KODO_HOME": str(tmp_path / "two")})
    assert other.executor_for("worker") != s.executor_for("worker")


def test_dbos_vmid_overrides_executor_id(tmp_path: Path) -> None:
    """DBOS__VMID, when set, is the executor id for every role."""
    s = load_settings({"KODO_HOME": str(tmp_path), "DBOS__VMID": "vm-42"})
    assert s.executor_for("worker") == "vm-42"
    assert s.executor_for("api") == "vm-42"


def test_mode_for_is_implied_by_role_when_unset() -> None:
    """Without WORKFLOW_RUNTIME_MODE the api role is api-shim and the others inproc-worker."""
    s = load_settings({})
    assert s.mode_for("api") == "api-shim"
    assert s.mode_for("worker") == "inproc-worker"
    assert s.mode_for("monolith") == "inproc-worker"


def test_explicit_runtime_mode_wins_over_role() -> None:
    """WORKFLOW_RUNTIME_MODE, when set, is reported for every role."""
    s = load_settings({"WORKFLOW_RUNTIME_MODE": "inproc-worker"})
    assert s.mode_for("api") == "inproc-worker"
    s = load_settings({"WORKFLOW_RUNTIME_MODE": "api-shim"})
    assert s.mode_for("monolith") == "api-shim"


def test_home_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative KODO_HOME resolves to an absolute path."""
    monkeypatch.chdir(tmp_path)
    s = load_settings({"KODO_HOME": "rel/home"})
    assert s.home.is_absolute()
    assert s.home == (tmp_path / "rel" / "home").resolve()
    assert s.workspaces_dir == s.home / "workspaces"


def test_settings_are_frozen() -> None:
    """Settings are built once and cannot be mutated afterwards."""
    s = load_settings({})
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError for frozen models
        s.port = 1  # type: ignore[misc]
