"""Hot swap under load: the champion alias moves while 8 callers score; nothing fails.

The versions are registered before any load starts, each a copy of the trained champion's
artifact (nothing is trained or fitted in this process while the service predicts). One copy is
truncated and one deleted on disk, and one is the churn champion's artifact registered as a deal-win
version: those are refused and the serving version keeps answering. So is a version whose fast
scorer, altered by one coefficient, no longer answers what the logged pipeline answers.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from service.state import CHURN_MODEL, DEAL_MODEL
from tests.service.conftest import Api, home_env, serve

GOOD = [str(v) for v in range(1, 13)]  # 12 good versions: the alias moves 11 times
TRUNCATED, DELETED, GOOD_AFTER, WRONG_MODEL = "13", "14", "15", "16"
POLL = "0.05"
CALLERS = 8


@pytest.fixture(scope="module")
def swap_home(trained_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the trained store and 15 registered deal-win versions (2 of them broken)."""
    import mlflow

    from forecast.training.registry import client

    home = tmp_path_factory.mktemp("swap-home")
    shutil.copytree(trained_home / "store", home / "store")
    sources = {}
    with home_env(trained_home):
        client()
        for name in (DEAL_MODEL, CHURN_MODEL):
            sources[name] = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{name}@champion", dst_path=str(home / "from" / name)
                )
            )
    with home_env(home):
        registry = client()
        registry.create_registered_model(CHURN_MODEL)
        registry.create_model_version(CHURN_MODEL, source=str(sources[CHURN_MODEL]))
        registry.set_registered_model_alias(CHURN_MODEL, "champion", "1")
        registry.create_registered_model(DEAL_MODEL)
        for version in [*GOOD, TRUNCATED, DELETED, GOOD_AFTER]:
            copy = home / "versions" / version
            shutil.copytree(sources[DEAL_MODEL], copy)
            assert registry.create_model_version(DEAL_MODEL, source=str(copy)).version == int(
                version
            )
        # the churn model's artifact, registered and promoted as a deal-win version by mistake
        wrong = registry.create_model_version(DEAL_MODEL, source=str(sources[CHURN_MODEL]))
        assert wrong.version == int(WRONG_MODEL)
        model_file = home / "versions" / TRUNCATED / "model.skops"
        model_file.write_bytes(model_file.read_bytes()[:1000])
        shutil.rmtree(home / "versions" / DELETED)
    return home


def move_champion(version: str) -> None:
    from forecast.training.registry import client

    client().set_registered_model_alias(DEAL_MODEL, "champion", version)


@dataclass
class Load:
    """8 callers scoring one deal each, in a loop, on keep-alive connections."""

    port: int
    key: str
    answers: list[list[tuple[int, str | None]]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def caller(self, out: list[tuple[int, str | None]]) -> None:
        body = json.dumps({"deals": [{"stage": "proposal", "amount": 48000.0}]})
        headers = {"Content-Type": "application/json", "X-API-Key": self.key}
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.is_set():
            try:
                connection.request("POST", "/v1/deals:scoreFeatures", body, headers)
                answer = connection.getresponse()
                payload = json.loads(answer.read())
            except Exception as err:  # a dropped connection is a failed request
                self.failures.append(repr(err))
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            version = payload.get("model", {}).get("version") if answer.status == 200 else None
            out.append((answer.status, version))
        connection.close()

    def seen(self) -> list[str | None]:
        return [v for answers in self.answers for _, v in answers]


@pytest.fixture
def service(swap_home: Path) -> Iterator[Api]:
    with home_env(swap_home, FORECAST_MODEL_POLL_SECONDS=POLL):
        move_champion(GOOD[0])
        with serve(_app()) as api:
            yield api


def _app():
    from service.app import create_app

    return create_app()


@pytest.fixture
def load(service: Api) -> Iterator[Load]:
    running = Load(int(service.base.rsplit(":", 1)[1]), service.key("crm"))
    threads = []
    for _ in range(CALLERS):
        running.answers.append([])
        threads.append(threading.Thread(target=running.caller, args=(running.answers[-1],)))
        threads[-1].start()
    try:
        yield running
    finally:
        running.stop.set()
        for thread in threads:
            thread.join(timeout=60)


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def served(api: Api) -> str:
    return api.state.models[DEAL_MODEL].version


def metric(api: Api, name: str) -> float:
    text = api.get("/metrics").body
    found = re.search(rf'^{name}{{model="{DEAL_MODEL}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_the_champion_moves_11_times_under_load_and_no_request_fails(service, load):
    wait_until(lambda: len(load.seen()) >= CALLERS, "the first answers")
    for version in GOOD[1:]:
        move_champion(version)
        wait_until(lambda v=version: served(service) == v, f"version {version} to serve")
        count = len(load.seen())
        wait_until(lambda c=count: len(load.seen()) >= c + CALLERS, "answers on the new version")
    load.stop.set()
    time.sleep(0.2)

    statuses = [s for answers in load.answers for s, _ in answers]
    assert load.failures == [] and set(statuses) == {200}, (load.failures, set(statuses))
    assert set(load.seen()) == set(GOOD), "every version answered in turn"
    for answers in load.answers:  # one caller never goes back to an older model: atomic swaps
        versions = [int(v) for _, v in answers]
        assert versions == sorted(versions)
    assert metric(service, "forecast_model_loads_total") == len(GOOD)
    assert metric(service, "forecast_model_refusals_total") == 0


def test_a_corrupt_or_missing_version_is_refused_and_the_old_one_keeps_answering(service, load):
    wait_until(lambda: len(load.seen()) >= CALLERS, "the first answers")
    for broken, refusals in ((TRUNCATED, 1), (DELETED, 2), (WRONG_MODEL, 3)):
        move_champion(broken)
        wait_until(
            lambda r=refusals: metric(service, "forecast_model_refusals_total") == r,
            f"version {broken} refused",
        )
        ready = service.get("/readyz")
        assert ready.status == 200, "the old version serves: still ready"
        [refused] = ready.body["refused"]
        assert f"version {broken} refused" in refused and "version 1 keeps serving" in refused
        [deal] = [
            m for m in service.get("/v1/models", load.key).body["models"] if m["name"] == DEAL_MODEL
        ]
        assert deal["version"] == "1" and f"version {broken} refused" in deal["detail"]
    assert "features this pipeline does not make" in service.state.refused[DEAL_MODEL]
    time.sleep(5 * float(POLL))
    assert metric(service, "forecast_model_refusals_total") == 3, "a refused version is not retried"
    assert served(service) == "1"

    move_champion(GOOD_AFTER)  # a later good version is taken
    wait_until(lambda: served(service) == GOOD_AFTER, f"version {GOOD_AFTER} to serve")
    count = len(load.seen())
    wait_until(lambda: len(load.seen()) >= count + CALLERS, "answers on the new version")
    load.stop.set()
    time.sleep(0.2)

    statuses = [s for answers in load.answers for s, _ in answers]
    assert load.failures == [] and set(statuses) == {200}, (load.failures, set(statuses))
    assert set(load.seen()) == {"1", GOOD_AFTER}
    assert service.get("/readyz").body["refused"] == []


def test_a_fast_scorer_that_differs_from_the_logged_pipeline_is_refused(service, monkeypatch):
    import forecast.explain.scorers

    real = forecast.explain.scorers.scorer_for

    def altered(model, features):
        # one coefficient moved by a millionth: the intercept of the served raw score
        scorer = real(model, features)
        calibrate = scorer.calibrate
        scorer.calibrate = lambda raw: calibrate(raw + 1e-6)
        return scorer

    monkeypatch.setattr(forecast.explain.scorers, "scorer_for", altered)
    move_champion(GOOD[1])
    wait_until(lambda: metric(service, "forecast_model_refusals_total") == 1, "the refusal")
    refused = service.get("/readyz").body["refused"]
    assert len(refused) == 1 and f"version {GOOD[1]} refused" in refused[0], refused
    assert "differs from the model's predict_proba" in refused[0]
    assert "on the logged input example" in refused[0]
    assert served(service) == GOOD[0], "the checked version keeps serving"
    monkeypatch.setattr(forecast.explain.scorers, "scorer_for", real)
    move_champion(GOOD[2])  # an honest fast path is taken
    wait_until(lambda: served(service) == GOOD[2], f"version {GOOD[2]} to serve")
