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
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Protocol

from service.at_exit import forget, stop_at_exit

if TYPE_CHECKING:
    from forecast.revenue import QuarterForecast, Scenario
    from forecast.settings import Settings
    from service.state import ServiceConfig

SETTINGS = ("FORECAST_", "MLFLOW_")  # the variables the scenario process reads as the service


class Drawer(Protocol):
    """What the scenario process draws with: a service state (`service.state.ServiceState`)."""

    def follow(self, serving: Serving) -> None: ...

    def quarter_forecast(
        self, quarter: str, scenario: Scenario | None = None, *, seed: int = 0
    ) -> QuarterForecast: ...


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

    def __init__(
        self,
        settings: Settings,
        config: ServiceConfig,
        budget_seconds: float,
        make_drawer: Callable[[Settings, ServiceConfig], Drawer],
    ):
        self.settings = settings
        self.config = config
        self.budget_seconds = budget_seconds
        self.make_drawer = make_drawer  # sent to the process by name: a class or function
        # the settings this service was made with, as the scenario process will read them
        # (a process's settings come from its environment, which may change after)
        self.environment = {k: v for k, v in os.environ.items() if k.startswith(SETTINGS)}
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._pipe: Connection | None = None

    def forecasts(
        self, quarter: str, scenario: Scenario, serving: Serving, node: tuple[str, str]
    ) -> tuple[QuarterForecast, QuarterForecast]:
        """The quarter's base forecast and the scenario's, drawn by the scenario process, with
        the draws of `node` (level, name) only (`QuarterForecast.for_node`): the whole draws
        would cost the serving process milliseconds of unpickling, held from every request.

        Raises:
            KeyError, ValueError: the scenario names what the pipeline does not hold.
            ScenarioTimeoutError: not done within the budget (the process is stopped).
        """
        with self._lock:
            pipe = self._running()
            pipe.send((quarter, scenario, serving, node))
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
                args=(theirs, self.make_drawer, self.config, self.environment),
                name="forecast-scenarios",
                daemon=True,
            )
            self._process.start()
            theirs.close()
            self._pipe = ours
            stop_at_exit(self.stop)  # it ignores SIGTERM: multiprocessing's exit would wait
        return self._pipe

    def stop(self) -> None:
        process, pipe = self._process, self._pipe
        self._process = self._pipe = None
        forget(self)
        if pipe is not None:
            pipe.close()  # an idle scenario process exits when its pipe closes
        if process is not None and process.is_alive():
            process.kill()  # it ignores SIGTERM (see draw_forever)
            process.join(timeout=10)


def draw_forever(
    pipe: Connection,
    make_drawer: Callable[[Settings, ServiceConfig], Drawer],
    config: ServiceConfig,
    environment: dict[str, str],
) -> None:
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

    drawer = make_drawer(get_settings(), config)
    while True:
        try:
            quarter, scenario, serving, (level, node) = pipe.recv()
        except (EOFError, OSError):
            return
        try:
            drawer.follow(serving)
            drawn = drawer.quarter_forecast(quarter), drawer.quarter_forecast(quarter, scenario)
            answer: tuple[str, Any] = ("done", tuple(f.for_node(level, node) for f in drawn))
        except Exception as err:  # said to the caller: a scenario error is theirs to fix
            answer = ("error", err)
        try:
            pipe.send(answer)
        except (BrokenPipeError, OSError):
            return
