"""Scenarios drawn where they cannot slow scoring: a process of their own, at the lowest CPU
priority, with a time budget.

A scenario prepares and draws the quarter again (a second of CPU, more with many added deals);
in the serving process it would take turns at the interpreter with every scoring request, and
at the same priority it would take their CPU. Here the serving process sends the question (the
quarter, the scenario, and which champion versions and store version it serves) and waits; the
scenario process loads that store and those versions (once, then again only when they change),
draws the base and the scenario, and sends both forecasts back. A scenario that runs past the
budget is stopped (the process with it; the next one starts afresh) and answered 503.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import os
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forecast.revenue import QuarterForecast, Scenario
    from forecast.settings import Settings
    from service.state import ServiceConfig

SETTINGS = ("FORECAST_", "MLFLOW_")  # the variables the scenario process reads as the service


class ScenarioTimeoutError(RuntimeError):
    """A scenario ran past its time budget and was stopped."""


@dataclass(frozen=True)
class Serving:
    """What the asking process serves: the scenario process draws with the same."""

    deal_win: str
    churn: str | None
    store: str | None


class ScenarioProcess:
    """The serving process's end: starts the scenario process when first needed, and again
    after it was stopped or died. Requests ask in `HeavyWork`'s turn (who may ask, and how
    long to wait); the lock here keeps the pipe to one question at a time whoever asks (the
    start-up warm-up holds no turn)."""

    def __init__(self, settings: Settings, config: ServiceConfig, budget_seconds: float):
        self.settings = settings
        self.config = config
        self.budget_seconds = budget_seconds
        # the settings this service was made with, as the scenario process will read them
        # (a process's settings come from its environment, which may change after)
        self.environment = {k: v for k, v in os.environ.items() if k.startswith(SETTINGS)}
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._pipe: Connection | None = None

    def forecasts(
        self, quarter: str, scenario: Scenario, serving: Serving
    ) -> tuple[QuarterForecast, QuarterForecast]:
        """The quarter's base forecast and the scenario's, drawn by the scenario process.

        Raises:
            KeyError, ValueError: the scenario names what the pipeline does not hold.
            ScenarioTimeoutError: not done within the budget (the process is stopped).
        """
        with self._lock:
            pipe = self._running()
            pipe.send((quarter, scenario, serving))
            if not pipe.poll(self.budget_seconds):
                self.stop()
                raise ScenarioTimeoutError(
                    f"the scenario ran past its budget of {self.budget_seconds:g} s and was "
                    "stopped: ask a smaller one (fewer added deals)"
                )
            try:
                kind, answer = pipe.recv()
            except EOFError:  # it died: the next question starts another
                self.stop()
                raise ScenarioTimeoutError("the scenario process stopped: ask again") from None
        if kind == "error":
            raise answer
        return answer

    def _running(self) -> Connection:
        if self._process is None or not self._process.is_alive() or self._pipe is None:
            self.stop()
            context = multiprocessing.get_context("spawn")  # no threads or locks copied
            ours, theirs = context.Pipe()
            self._process = context.Process(
                target=draw_forever,
                args=(theirs, self.config, self.environment),
                name="forecast-scenarios",
                daemon=True,
            )
            self._process.start()
            theirs.close()
            self._pipe = ours
        return self._pipe

    def stop(self) -> None:
        process, pipe = self._process, self._pipe
        self._process = self._pipe = None
        if pipe is not None:
            pipe.close()  # an idle scenario process exits when its pipe closes
        if process is not None and process.is_alive():
            process.kill()  # it ignores SIGTERM (see draw_forever)
            process.join(timeout=10)


def draw_forever(pipe: Connection, config: ServiceConfig, environment: dict[str, str]) -> None:
    """The scenario process: answers each question until the serving process is gone."""
    for name in [k for k in os.environ if k.startswith(SETTINGS)]:
        del os.environ[name]
    os.environ.update(environment)
    os.nice(19)  # scoring first: scenarios take what CPU is left
    # the serving process decides when this one stops (its pipe closed, or a kill): a signal to
    # the whole group must not fail the scenario a request is waiting for in the grace
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from prometheus_client import values

    # the service's /metrics counts what the serving processes do, not this one's loads
    values.ValueClass = values.MutexValue  # type: ignore[misc]
    from forecast.settings import get_settings
    from service.state import ServiceState

    state = ServiceState(get_settings(), config)
    while True:
        try:
            quarter, scenario, serving = pipe.recv()
        except (EOFError, OSError):
            return
        try:
            answer: tuple[str, Any] = ("done", _draw(state, quarter, scenario, serving))
        except Exception as err:  # said to the caller: a scenario error is theirs to fix
            answer = ("error", err)
        try:
            pipe.send(answer)
        except (BrokenPipeError, OSError):
            return


def _draw(
    state: Any, quarter: str, scenario: Scenario, serving: Serving
) -> tuple[QuarterForecast, QuarterForecast]:
    from service.state import CHURN_MODEL, DEAL_MODEL

    if state.store_version != serving.store or state.tables is None:
        state.load_store()
    for name, version in ((DEAL_MODEL, serving.deal_win), (CHURN_MODEL, serving.churn)):
        current = state.models.get(name)
        if version is None:
            state.models.pop(name, None)
        elif current is None or current.version != version:
            state.models[name] = state.load_version(name, version)
    return state.quarter_forecast(quarter), state.quarter_forecast(quarter, scenario)
