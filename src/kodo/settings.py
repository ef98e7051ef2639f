"""The one typed settings object, built once at the entry point and passed down.

Environment names and defaults follow the predecessor (reference §17) so its runbooks keep working;
kodo's own additions are ``DATABASE_URL``, ``KODO_HOME``, ``OC_PROVIDER``, ``KODO_API_TOKENS`` and the
``KODO_*`` tuning knobs. Every field is listed in ``docs/configuration.md`` (a test keeps it complete).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kodo import pricing
from kodo.errors import ConfigurationError

RuntimeMode = Literal["inproc-worker", "api-shim"]
Role = Literal["monolith", "worker", "api"]


class Settings(BaseSettings):
    """Every knob kodo reads from the environment, validated once."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    # --- processes and ports
    port: int = Field(3001, validation_alias="PORT")
    admin_port: int = Field(3002, validation_alias="ADMIN_PORT")
    host: str = Field("127.0.0.1", validation_alias="KODO_HOST")
    app_version: str = Field("v1", validation_alias="DBOS__APPVERSION")
    executor_id: str | None = Field(None, validation_alias="DBOS__VMID")
    runtime_mode: RuntimeMode | None = Field(None, validation_alias="WORKFLOW_RUNTIME_MODE")
    app_name: str = Field("kodo", validation_alias="DBOS_APP_NAME")

    # --- storage
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    kodo_home: Path = Field(Path(".kodo"), validation_alias="KODO_HOME")
    # Directories a run's ``inputs.repo`` may be cloned from (``:``-separated, as PATH); unset = no repo inputs.
    repo_roots: str | None = Field(None, validation_alias="KODO_REPO_ROOTS")

    # --- coding agent
    oc_mode: Literal["replay", "record", "live"] = Field("replay", validation_alias="OC_MODE")
    oc_provider: Literal["opencode", "openai"] = Field("opencode", validation_alias="OC_PROVIDER")
    oc_server_port: int = Field(4096, validation_alias="OC_SERVER_PORT")
    oc_base_url: str | None = Field(None, validation_alias="OC_BASE_URL")
    oc_timeout_ms: int = Field(300_000, validation_alias="OC_TIMEOUT_MS")
    oc_strict_mode: bool = Field(False, validation_alias="OC_STRICT_MODE")
    opencode_server_password: SecretStr | None = Field(None, validation_alias="OPENCODE_SERVER_PASSWORD")
    openai_base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    openai_model: str = Field("gpt-4o-mini", validation_alias="OPENAI_MODEL")
    # Spend (docs/budgets.md): prices laid over kodo.pricing.DEFAULT_PRICES, and each call's output ceiling.
    model_prices: str | None = Field(None, validation_alias="KODO_MODEL_PRICES")
    agent_max_output_tokens: int = Field(8192, validation_alias="KODO_AGENT_MAX_OUTPUT_TOKENS")
    oc_model: str | None = Field(None, validation_alias="OC_MODEL")

    # --- sandbox
    sbx_mode: Literal["mock", "live"] = Field("mock", validation_alias="SBX_MODE")
    sbx_provider: Literal["e2b", "local", "microsandbox"] = Field("e2b", validation_alias="SBX_PROVIDER")
    sbx_alt_provider_enabled: bool = Field(False, validation_alias="SBX_ALT_PROVIDER_ENABLED")
    sbx_default_timeout_ms: int = Field(300_000, validation_alias="SBX_DEFAULT_TIMEOUT_MS")
    sbx_default_net: bool = Field(False, validation_alias="SBX_DEFAULT_NET")
    e2b_api_key: SecretStr | None = Field(None, validation_alias="E2B_API_KEY")
    # The E2B workspace's bounds (kodo.adapters.sandbox.e2b_workspace): what is uploaded, what comes back.
    sbx_e2b_upload_max_mb: int = Field(50, ge=1, validation_alias="SBX_E2B_UPLOAD_MAX_MB")
    sbx_e2b_files_out_max_count: int = Field(200, ge=1, validation_alias="SBX_E2B_FILES_OUT_MAX_COUNT")
    sbx_e2b_files_out_max_mb: int = Field(10, ge=1, validation_alias="SBX_E2B_FILES_OUT_MAX_MB")
    # Where the e2b SDK finds E2B's API and every sandbox's envd (unset: the SDK's own, https://api.e2b.app).
    e2b_api_url: str | None = Field(None, validation_alias="E2B_API_URL")
    e2b_sandbox_url: str | None = Field(None, validation_alias="E2B_SANDBOX_URL")
    # SBX_PROVIDER=local without a working bwrap refuses to start unless this says commands may run unisolated.
    sbx_allow_unisolated: bool = Field(False, validation_alias="SBX_ALLOW_UNISOLATED")
    # The local sandbox's limits beyond memory and CPU (kodo.adapters.sandbox.local.SandboxLimits).
    sbx_max_processes: int = Field(256, validation_alias="SBX_MAX_PROCESSES")
    sbx_max_file_mb: int = Field(1024, validation_alias="SBX_MAX_FILE_MB")
    sbx_tmp_mb: int = Field(256, validation_alias="SBX_TMP_MB")
    sbx_workspace_growth_mb: int = Field(1024, validation_alias="SBX_WORKSPACE_GROWTH_MB")

    # --- human gates
    budget_gate_timeout_s: int = Field(86_400, validation_alias="KODO_BUDGET_GATE_TIMEOUT_S")
    hitl_plan_approval_timeout_s: int = Field(3600, validation_alias="HITL_PLAN_APPROVAL_TIMEOUT_S")
    # The plan gate's card shows at most this many diff lines, then links to the full diff artifact.
    review_diff_max_lines: int = Field(1500, ge=1, validation_alias="REVIEW_DIFF_MAX_LINES")

    # --- queues (predecessor defaults)
    intent_queue_worker_concurrency: int = Field(5, validation_alias="INTENT_QUEUE_WORKER_CONCURRENCY")
    intent_queue_concurrency: int = Field(50, validation_alias="INTENT_QUEUE_CONCURRENCY")
    intent_queue_rate_limit_per_period: int = Field(100, validation_alias="INTENT_QUEUE_RATE_LIMIT_PER_PERIOD")
    intent_queue_rate_limit_period_sec: int = Field(60, validation_alias="INTENT_QUEUE_RATE_LIMIT_PERIOD_SEC")
    intent_queue_partition: bool = Field(True, validation_alias="INTENT_QUEUE_PARTITION")
    intent_queue_priority_enabled: bool = Field(True, validation_alias="INTENT_QUEUE_PRIORITY_ENABLED")
    sbx_queue_worker_concurrency: int = Field(10, validation_alias="SBX_QUEUE_WORKER_CONCURRENCY")
    sbx_queue_concurrency: int = Field(50, validation_alias="SBX_QUEUE_CONCURRENCY")
    sbx_queue_rate_limit_per_period: int = Field(100, validation_alias="SBX_QUEUE_RATE_LIMIT_PER_PERIOD")
    sbx_queue_rate_limit_period_sec: int = Field(60, validation_alias="SBX_QUEUE_RATE_LIMIT_PERIOD_SEC")
    sbx_queue_partition: bool = Field(True, validation_alias="SBX_QUEUE_PARTITION")
    sbx_queue_priority_enabled: bool = Field(True, validation_alias="SBX_QUEUE_PRIORITY_ENABLED")
    queue_polling_interval_sec: float = Field(0.1, validation_alias="KODO_QUEUE_POLLING_INTERVAL_SEC")
    control_queue_polling_interval_sec: float = Field(0.5, validation_alias="KODO_CONTROL_QUEUE_POLLING_INTERVAL_SEC")
    max_executor_threads: int = Field(64, validation_alias="KODO_MAX_EXECUTOR_THREADS")
    # Each of kodo's engines holds this many connections (and as many more in overflow): see docs/configuration.md.
    db_pool_size: int = Field(10, validation_alias="KODO_DB_POOL_SIZE")
    # Sandbox tasks one run may fan out to, at admission and at runtime, whatever its budget (kodo.workflows.limits).
    max_fanout: int = Field(64, validation_alias="KODO_MAX_FANOUT")

    # --- proofs and chaos
    wf_sleep_ms: int = Field(5000, validation_alias="WF_SLEEP_MS")
    chaos_sleep_execute: int = Field(0, validation_alias="CHAOS_SLEEP_EXECUTE")
    # Named fault points to arm in this process (kodo.faults): tests and `kodo chaos` only.
    fault_points: str | None = Field(None, validation_alias="KODO_FAULT_POINTS")

    # --- ops plane: heartbeats, dead-executor recovery, sandbox cancel watch, scheduler
    heartbeat_interval_sec: float = Field(5.0, validation_alias="KODO_HEARTBEAT_INTERVAL_SEC")
    executor_dead_after_sec: float = Field(30.0, validation_alias="KODO_EXECUTOR_DEAD_AFTER_SEC")
    recovery_enabled: bool = Field(True, validation_alias="KODO_RECOVERY_ENABLED")
    cancel_poll_interval_sec: float = Field(0.5, validation_alias="KODO_CANCEL_POLL_INTERVAL_SEC")
    scheduled_tick_cron: str = Field("*/30 * * * * *", validation_alias="KODO_SCHEDULED_TICK_CRON")
    # How long a workflow waits out a database outage before it gives up (kodo.outages; docs/ops.md).
    db_outage_max_sec: float = Field(600.0, validation_alias="KODO_DB_OUTAGE_MAX_SEC")

    # --- observability and posture
    dbos_enable_otlp: bool = Field(False, validation_alias="DBOS_ENABLE_OTLP")
    otel_exporter_otlp_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    otel_exporter_otlp_traces_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    otel_exporter_otlp_logs_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
    otel_service_name: str | None = Field(None, validation_alias="OTEL_SERVICE_NAME")
    otel_resource_attributes: str | None = Field(None, validation_alias="OTEL_RESOURCE_ATTRIBUTES")
    trace_base_url: str | None = Field(None, validation_alias="TRACE_BASE_URL")
    enable_legacy_run_routes: bool = Field(True, validation_alias="ENABLE_LEGACY_RUN_ROUTES")
    claim_scope: str = Field("demo", validation_alias="CLAIM_SCOPE")
    api_tokens: str | None = Field(None, validation_alias="KODO_API_TOKENS")
    max_body_bytes: int = Field(1_048_576, validation_alias="KODO_MAX_BODY_BYTES")
    # Request hygiene (kodo.api.hygiene): Host names and browser Origins accepted; unset = loopback + KODO_HOST,
    # and same-origin.
    allowed_hosts: str | None = Field(None, validation_alias="KODO_ALLOWED_HOSTS")
    allowed_origins: str | None = Field(None, validation_alias="KODO_ALLOWED_ORIGINS")
    # Event streams and long-polls open at once in one API process (kodo.api.streams); past it: 503 + Retry-After.
    max_streams: int = Field(256, validation_alias="KODO_MAX_STREAMS")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", validation_alias="KODO_LOG_LEVEL")
    # Set by ``kodo api --processes N``: every API process binds PORT with SO_REUSEPORT (the kernel spreads
    # connections over them).
    reuse_port: bool = Field(False, validation_alias="KODO_REUSE_PORT")

    # --- webhooks (kodo.workflows.webhooks)
    webhook_allowed_hosts: str = Field("", validation_alias="KODO_WEBHOOK_ALLOWED_HOSTS")
    webhook_max_attempts: int = Field(8, validation_alias="KODO_WEBHOOK_MAX_ATTEMPTS")
    webhook_backoff_sec: float = Field(1.0, validation_alias="KODO_WEBHOOK_BACKOFF_SEC")
    webhook_timeout_sec: float = Field(5.0, validation_alias="KODO_WEBHOOK_TIMEOUT_SEC")
    # Retention (kodo.workflows.webhook_retention): finished deliveries and spent events older than this go.
    webhook_retention_days: int = Field(14, validation_alias="KODO_WEBHOOK_RETENTION_DAYS")
    webhook_retention_cron: str = Field("0 0 * * * *", validation_alias="KODO_WEBHOOK_RETENTION_CRON")
    # The key that seals secrets at rest (kodo.sealing); unset: $KODO_HOME/secret.key, made on first use.
    secret_key: SecretStr | None = Field(None, validation_alias="KODO_SECRET_KEY")

    @field_validator("port", "admin_port", "oc_server_port")
    @classmethod
    def _port_range(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise ValueError("must be a TCP port between 0 and 65535")
        return value

    @field_validator(
        "oc_timeout_ms",
        "sbx_default_timeout_ms",
        "hitl_plan_approval_timeout_s",
        "intent_queue_worker_concurrency",
        "intent_queue_concurrency",
        "intent_queue_rate_limit_per_period",
        "intent_queue_rate_limit_period_sec",
        "sbx_queue_worker_concurrency",
        "sbx_queue_concurrency",
        "sbx_queue_rate_limit_per_period",
        "sbx_queue_rate_limit_period_sec",
        "max_executor_threads",
        "db_pool_size",
        "max_fanout",
        "max_streams",
        "sbx_max_processes",
        "sbx_max_file_mb",
        "sbx_tmp_mb",
        "sbx_workspace_growth_mb",
        "max_body_bytes",
        "agent_max_output_tokens",
        "budget_gate_timeout_s",
    )
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be a positive integer")
        return value

    @field_validator("wf_sleep_ms", "chaos_sleep_execute")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @field_validator("queue_polling_interval_sec", "control_queue_polling_interval_sec")
    @classmethod
    def _polling(cls, value: float) -> float:
        if not 0.001 <= value <= 60:
            raise ValueError("must be between 0.001 and 60 seconds")
        return value

    @field_validator("heartbeat_interval_sec", "cancel_poll_interval_sec")
    @classmethod
    def _interval(cls, value: float) -> float:
        if not 0.05 <= value <= 3600:
            raise ValueError("must be between 0.05 and 3600 seconds")
        return value

    @field_validator("db_outage_max_sec")
    @classmethod
    def _outage_max(cls, value: float) -> float:
        if not 1 <= value <= 86400:
            raise ValueError("must be between 1 and 86400 seconds")
        return value

    @field_validator("executor_dead_after_sec")
    @classmethod
    def _dead_after(cls, value: float) -> float:
        if not 1 <= value <= 86400:
            raise ValueError("must be between 1 and 86400 seconds")
        return value

    @field_validator("webhook_max_attempts")
    @classmethod
    def _webhook_attempts(cls, value: int) -> int:
        if not 1 <= value <= 50:
            raise ValueError("must be between 1 and 50")
        return value

    @field_validator("webhook_retention_days")
    @classmethod
    def _webhook_retention(cls, value: int) -> int:
        if not 1 <= value <= 3650:
            raise ValueError("must be between 1 and 3650 days")
        return value

    @field_validator("webhook_backoff_sec", "webhook_timeout_sec")
    @classmethod
    def _webhook_seconds(cls, value: float) -> float:
        if not 0.01 <= value <= 600:
            raise ValueError("must be between 0.01 and 600 seconds")
        return value

    @field_validator("scheduled_tick_cron", "webhook_retention_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if value.strip().lower() != "off" and len(value.split()) not in {5, 6}:
            raise ValueError("must be off, or a cron expression with 5 fields (6 with seconds first)")
        return value

    @field_validator("claim_scope")
    @classmethod
    def _claim_scope(cls, value: str) -> str:
        return value if value in {"signoff", "live-smoke", "demo"} else "demo"

    @field_validator("app_version", "app_name", "openai_model")
    @classmethod
    def _non_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("model_prices")
    @classmethod
    def _model_prices(cls, value: str | None) -> str | None:
        pricing.parse(value)  # raises ValueError with what is wrong
        return value

    @property
    def price_table(self) -> dict[str, pricing.ModelPrice]:
        return pricing.parse(self.model_prices)

    @field_validator("trace_base_url")
    @classmethod
    def _trace_base_url(cls, value: str | None) -> str | None:
        if value is not None and not _is_http_url(value.replace("{traceId}", "t").replace("{spanId}", "s")):
            raise ValueError("must be an http(s) URL, optionally with {traceId} and {spanId} placeholders")
        return value

    @model_validator(mode="after")
    def _otlp_endpoints(self) -> Settings:
        for name, value in (
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", self.otel_exporter_otlp_traces_endpoint),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.otel_exporter_otlp_endpoint),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", self.otel_exporter_otlp_logs_endpoint),
        ):
            bad = [url for url in _split(value) if not _is_http_url(url)]
            if bad:
                raise ValueError(f"{name}: not an http(s) URL: {', '.join(bad)}")
        if self.dbos_enable_otlp and not self.otlp_traces_endpoints:
            raise ValueError(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: DBOS_ENABLE_OTLP=true needs an OTLP/HTTP traces endpoint "
                "(or OTEL_EXPORTER_OTLP_ENDPOINT, to which /v1/traces is appended)"
            )
        return self

    # --- derived values -------------------------------------------------------------------------

    @property
    def home(self) -> Path:
        """``KODO_HOME`` as an absolute path."""
        return self.kodo_home.expanduser().resolve()

    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    @property
    def templates_dir(self) -> Path:
        """Installed sandbox templates: one virtual environment per deps hash (kodo.adapters.toolchains)."""
        return self.home / "templates"

    @property
    def unisolated_allowed(self) -> bool:
        """Whether live local sandbox commands may run without bubblewrap (shown in health, headers, console)."""
        return self.sbx_mode == "live" and self.sbx_provider == "local" and self.sbx_allow_unisolated

    @property
    def repository_roots(self) -> tuple[Path, ...]:
        """``KODO_REPO_ROOTS`` as absolute real paths."""
        parts = [part.strip() for part in (self.repo_roots or "").split(os.pathsep) if part.strip()]
        return tuple(Path(part).expanduser().resolve() for part in parts)

    @property
    def host_names(self) -> frozenset[str]:
        """The ``Host`` names requests may carry (lower case, no port, no brackets); ``*`` allows any."""
        listed = _split(self.allowed_hosts)
        if not listed:
            listed = ["localhost", "127.0.0.1", "::1"] + ([] if self.host in {"0.0.0.0", "::", "[::]"} else [self.host])
        return frozenset(name.strip("[]").lower() for name in listed)

    @property
    def origins(self) -> frozenset[str] | None:
        """The browser ``Origin`` values accepted on writes (``None``: same origin only; ``*``: any)."""
        listed = _split(self.allowed_origins)
        return frozenset(origin.rstrip("/").lower() for origin in listed) if listed else None

    @property
    def agent_base_url(self) -> str:
        return self.oc_base_url or f"http://127.0.0.1:{self.oc_server_port}"

    @property
    def otlp_traces_endpoints(self) -> list[str]:
        """Where spans go: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (comma list) as is, else the generic
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces`` (the OTLP/HTTP convention)."""
        explicit = _split(self.otel_exporter_otlp_traces_endpoint)
        if explicit:
            return explicit
        return [url.rstrip("/") + "/v1/traces" for url in _split(self.otel_exporter_otlp_endpoint)]

    @property
    def otlp_logs_endpoints(self) -> list[str]:
        explicit = _split(self.otel_exporter_otlp_logs_endpoint)
        if explicit:
            return explicit
        return [url.rstrip("/") + "/v1/logs" for url in _split(self.otel_exporter_otlp_endpoint)]

    def mode_for(self, role: Role) -> RuntimeMode:
        """The runtime mode reported in run headers: explicit, or implied by the process role."""
        if self.runtime_mode is not None:
            return self.runtime_mode
        return "api-shim" if role == "api" else "inproc-worker"

    def executor_for(self, role: Role) -> str:
        """A stable executor id per host, data directory and role, so a restart recovers its own work."""
        if self.executor_id:
            return self.executor_id
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:8]
        return f"{socket.gethostname()}-{digest}-{role}"


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


class _ExplicitSettings(Settings):
    """Settings read only from the values given, never from the process environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        del settings_cls, env_settings, dotenv_settings, file_secret_settings
        return (init_settings,)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build Settings from the environment (or ``environ``), turning errors into one clear message."""
    source = dict(os.environ if environ is None else environ)
    try:
        if environ is None:
            return Settings(**overrides)  # type: ignore[arg-type]
        aliases = {field.validation_alias: name for name, field in Settings.model_fields.items()}
        values: dict[str, object] = {
            aliases[key]: value for key, value in source.items() if key in aliases and value != ""
        }
        values.update(overrides)
        return _ExplicitSettings.model_validate(values)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            if not item["loc"]:  # a cross-field rule: its message names the variable
                problems.append(str(item["msg"]).removeprefix("Value error, "))
                continue
            field = str(item["loc"][0])
            env_name = Settings.model_fields[field].validation_alias if field in Settings.model_fields else field
            problems.append(f"{env_name or field}: {item['msg']} (got {item.get('input')!r})")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from error
