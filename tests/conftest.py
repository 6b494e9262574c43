"""Shared fixtures: every test gets its own FORECAST_HOME, and optional services are explicit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forecast.settings import get_settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def skip_or_fail(reason: str) -> None:
    """Skip with `reason`, except where FORECAST_TEST_STRICT=1 (CI): there a skip is a failure."""
    if os.environ.get("FORECAST_TEST_STRICT") == "1":
        pytest.fail(f"required in strict mode (FORECAST_TEST_STRICT=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def forecast_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "forecast-home"
    monkeypatch.setenv("FORECAST_HOME", str(home))
    monkeypatch.delenv("FORECAST_STORE_DIR", raising=False)
    monkeypatch.delenv("FORECAST_TRACKING_URI", raising=False)
    monkeypatch.delenv("FORECAST_DATABASE_URL", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("FORECAST_TEST_POSTGRES_URL")
    if not url:
        skip_or_fail(
            "PostgreSQL tests need FORECAST_TEST_POSTGRES_URL, e.g. "
            "FORECAST_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test"
        )
    return url


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        skip_or_fail(
            f"public datasets not found at {SHARED_DATA}: clone the project beside shared/"
        )
    return SHARED_DATA
