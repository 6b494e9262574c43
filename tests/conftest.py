"""Shared fixtures: every test gets its own FORECAST_HOME, and optional services are explicit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forecast.settings import get_settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The files that take longest (minutes each; `--durations`), longest first. With
# `--dist loadfile` a file runs whole on one worker, so a long file collected last becomes the
# suite's tail while the other worker idles: these start first, the short files fill in after.
LONGEST_FIRST = (
    "tests/pipelines/test_on_dask.py",
    "tests/model/test_whole_book.py",
    "tests/service/test_team.py",
    "tests/pipelines/test_parts_on_dask.py",
    "tests/service/test_drill.py",
    "tests/pipelines/test_scale_docs.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: place for place, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable


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
    # two test workers share two cores: LightGBM on two threads each ran about 3x slower
    monkeypatch.setenv("FORECAST_TRAINING_THREADS", "1")
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
