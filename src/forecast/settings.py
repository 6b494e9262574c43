"""Settings: one pydantic-settings class, read when needed, never at import time."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the project keeps its data and models; every field can be set as FORECAST_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="FORECAST_", env_file=".env", extra="ignore")

    home: Path = Field(
        default_factory=lambda: Path.home() / ".forecast",
        description="Root folder of the local store, MLflow files and the service database.",
    )
    store_dir: Path | None = Field(
        default=None, description="Where imported CRM tables live (default: <home>/store)."
    )
    store_versions_kept: int = Field(
        default=3, ge=1, description="How many earlier imports the store keeps for rollback."
    )
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI (default: sqlite:///<home>/mlflow.db)."
    )
    database_url: str | None = Field(
        default=None, description="Service database (default: sqlite:///<home>/service.db)."
    )
    dask_scheduler: str | None = Field(
        default=None,
        description="A Dask scheduler (tcp://HOST:8786) the commands that can run on a cluster "
        "use (docs/scale.md); unset, they run in this process and Dask is not imported.",
    )
    dask_worker_memory: str = Field(
        default="auto",
        description="Memory limit of each worker of a --local-cluster (e.g. 4GB; auto: the "
        "machine's memory shared among the workers).",
    )
    training_threads: int = Field(
        default=2,
        ge=1,
        description="Threads LightGBM trains with in this process. 1 where other work shares "
        "the cores (a test suite's workers, a busy server): there two threads ran about 3x "
        "slower than one.",
    )
    max_violations_shown: int = Field(
        default=20, ge=1, description="How many validation violations are printed in full."
    )
    currency: str = Field(
        default="USD",
        pattern=r"^[A-Z]{3}$",
        description="The reporting currency every amount is in (ISO 4217); scored records "
        "in another currency are refused.",
    )
    grade_cutoffs: tuple[float, float, float] = Field(
        default=(0.70, 0.45, 0.20),
        description="Lowest win probability for grades A, B and C (below the last: D).",
    )

    coaching_min_others: int = Field(
        default=5,
        ge=1,
        description="A rep (or manager) sees a group's coaching figures (their team's, the "
        "company's) only when at least this many people in it are out of their sight: fewer, "
        "and subtracting their own would reveal a colleague's.",
    )
    scenario_budget_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Longest a scenario may run before it is stopped and answered 503.",
    )
    dashboard_session_hours: float = Field(
        default=8.0, gt=0, description="How long a dashboard sign-in lasts before asking again."
    )
    model_poll_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How often the service checks whether a champion alias moved (0: never; "
        "`POST /v1/admin/reload` still works).",
    )
    sync_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How often each service process checks for a reload asked of any other "
        "(every worker, every instance sharing the service database) and for a newly imported "
        "store (0: never).",
    )
    key_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long the service trusts a verified API key before checking it again: "
        "a revoked key stops working within this time (0: check every request).",
    )
    log_flush_seconds: float = Field(
        default=0.2,
        gt=0,
        description="Longest wait before the service writes queued prediction and audit rows.",
    )
    log_spool_dir: Path | None = Field(
        default=None,
        description="Where log rows wait while the service database is away, and where rows "
        "it refuses are set aside (default: <home>/log-spool).",
    )
    log_spool_max_mb: float = Field(
        default=256.0,
        gt=0,
        description="Most the log spool may hold on disk; past it, new rows are dropped and "
        'counted (forecast_log_rows{outcome="lost"} in /metrics).',
    )
    shutdown_grace_seconds: float = Field(
        default=0.0,
        ge=0,
        description="After SIGTERM, how long the service keeps answering (with /readyz 503) "
        "before it stops taking connections, so a load balancer sees it leave.",
    )

    # digests and alerts in Slack and Teams (`forecast notify`, docs/deploy.md)
    dashboard_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The dashboard's address as people open it: the links in digests and alerts.",
    )
    notify_big_deal_amount: float = Field(
        default=50_000.0,
        ge=0,
        description="A deal this large or larger is watched: its win probability dropping "
        "fast raises an alert.",
    )
    notify_deal_drop_points: float = Field(
        default=15.0,
        gt=0,
        le=100,
        description="Alert when a big deal's win probability drops by more than this many "
        "percentage points in a week.",
    )
    notify_reach_target_below: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Alert when a node's chance to reach its quarter target falls below this "
        "(it was at or above it a week earlier).",
    )
    notify_key_account_arr: float = Field(
        default=100_000.0,
        ge=0,
        description="An account with this much revenue a year or more is a key account: its "
        "churn risk jumping raises an alert.",
    )
    notify_churn_jump_points: float = Field(
        default=15.0,
        gt=0,
        le=100,
        description="Alert when a key account's churn risk rises by more than this many "
        "percentage points in a week.",
    )
    notify_tries: int = Field(
        default=5,
        ge=1,
        le=20,
        description="How many times a webhook is called for one message when it answers 429 "
        "or 5xx (or does not answer); pauses double from 1 s, or follow Retry-After.",
    )
    notify_max_wait_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Longest pause between two calls of a webhook, whatever Retry-After asks.",
    )

    # OAuth2 bearer JWTs for the service: off unless a secret or a public key is set
    jwt_secret: SecretStr | None = Field(
        default=None, description="Shared secret verifying HS256 bearer tokens (JWT)."
    )
    jwt_public_key: str | None = Field(
        default=None, description="PEM public key verifying RS256/ES256 bearer tokens (JWT)."
    )
    jwt_algorithms: tuple[str, ...] | None = Field(
        default=None,
        description="Accepted JWT algorithms (default: HS256 with a secret, RS256 with a key).",
    )
    jwt_issuer: str | None = Field(default=None, description="Required `iss` of bearer tokens.")
    jwt_audience: str | None = Field(default=None, description="Required `aud` of bearer tokens.")
    jwt_role_claim: str = Field(default="role", description="The claim holding the caller's role.")
    jwt_rep_id_claim: str = Field(
        default="rep_id", description="The claim holding the caller's rep id (reps, managers)."
    )
    jwt_leeway_seconds: int = Field(
        default=30, ge=0, le=600, description="Clock skew allowed on `exp` and `nbf`."
    )

    @model_validator(mode="after")
    def _one_jwt_key_family(self) -> Settings:
        """HMAC (HS*) and public-key algorithms never mix: with both accepted, a token signed
        with HS256 using the public key (which is public) as its secret would verify."""
        algorithms = set(self.jwt_algorithms or ())
        hmac = {a for a in algorithms if a.upper().startswith("HS")}
        if hmac and algorithms - hmac:
            raise ValueError(
                f"FORECAST_JWT_ALGORITHMS mixes HMAC ({', '.join(sorted(hmac))}) with public-key "
                f"algorithms ({', '.join(sorted(algorithms - hmac))}): accept one family"
            )
        if hmac and self.jwt_public_key:
            raise ValueError(
                "FORECAST_JWT_ALGORITHMS names HMAC algorithms but FORECAST_JWT_PUBLIC_KEY is "
                "set: HMAC tokens are checked with FORECAST_JWT_SECRET (unset the public key)"
            )
        if algorithms - hmac and not self.jwt_public_key and self.jwt_secret is not None:
            raise ValueError(
                "FORECAST_JWT_ALGORITHMS names public-key algorithms but only "
                "FORECAST_JWT_SECRET is set: give FORECAST_JWT_PUBLIC_KEY (PEM)"
            )
        return self

    @property
    def jwt_enabled(self) -> bool:
        return self.jwt_secret is not None or self.jwt_public_key is not None

    @property
    def store_path(self) -> Path:
        return (self.store_dir or self.home / "store").expanduser().resolve()

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(self.home.expanduser().resolve() / 'mlflow.db').as_posix()}"

    @property
    def log_spool(self) -> Path:
        return self.log_spool_dir or self.home.expanduser().resolve() / "log-spool"

    @property
    def service_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home.expanduser().resolve() / 'service.db').as_posix()}"


class SettingsError(ValueError):
    """A setting that cannot work; the message names each variable and what is wrong."""


@lru_cache
def get_settings() -> Settings:
    """The process's settings; tests call `get_settings.cache_clear()` after changing variables.

    Raises:
        SettingsError: a variable (or .env line) that cannot be used, named.
    """
    try:
        return Settings()
    except ValidationError as err:
        problems = [
            f"FORECAST_{str(e['loc'][0]).upper()}: {e['msg']}" if e["loc"] else e["msg"]
            for e in err.errors()
        ]
        raise SettingsError("; ".join(p.removeprefix("Value error, ") for p in problems)) from None


def disable_telemetry() -> None:
    """Keep MLflow from reaching the network; called by every entry point the project starts."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
