"""What the service holds while it runs: the serving champions, the CRM store, the database.

Champions are loaded (never trained) here, at start-up and on reload; a new version replaces
the old one by a single assignment, so a request holding the old `Serving` finishes on it. A
version that fails to load is refused and the old one keeps serving.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import sqlalchemy as sa

from forecast import predlog  # noqa: F401 (registers the log tables on the shared metadata)
from forecast.explain import Scorer
from forecast.keys import engine_for, ensure_tables
from forecast.settings import Settings
from forecast.tables import CrmTables
from service.metrics import Metrics

if TYPE_CHECKING:
    from forecast.revenue import QuarterForecast, QuarterInputs, Scenario

log = logging.getLogger(__name__)

DEAL_MODEL = "deal-win"
CHURN_MODEL = "account-churn"
HOW_TO_TRAIN = {DEAL_MODEL: "forecast train win", CHURN_MODEL: "forecast train churn"}
SERVED = (DEAL_MODEL, CHURN_MODEL)


class ModelMissingError(RuntimeError):
    """No champion of a model is serving; the message says how to get one."""


class OrgTreeUnavailableError(RuntimeError):
    """The reps table (the org tree) cannot be read: access checks must fail closed."""


class StoreUnavailableError(RuntimeError):
    """No CRM data to read deals or coaching from."""


@dataclass(frozen=True)
class ServiceConfig:
    """Limits of the HTTP layer (the model limits live in the schemas)."""

    max_body_bytes: int = 4 * 1024 * 1024  # a full batch of 1,000 deals is under 1 MiB
    forecast_draws: int = 10_000  # as `forecast revenue`: the same question, the same figures
    forecast_quarters_kept: int = 4  # prepared quarters kept per champion version and store


@dataclass(frozen=True)
class Serving:
    """One loaded champion: everything a request needs, replaced whole on a swap."""

    name: str
    version: str
    scorer: Scorer
    typical: pd.DataFrame | None
    loaded_at: datetime

    def win_probability(self, features: pd.DataFrame) -> np.ndarray:
        """Feature rows -> calibrated probabilities (the revenue forecast's win scorer)."""
        return self.scorer.probability(self.scorer.coded(features))


def missing_message(name: str) -> str:
    return f"{name} has no champion: train one with `{HOW_TO_TRAIN.get(name, 'forecast train')}`"


class ServiceState:
    """The running service's state; one per app."""

    def __init__(self, settings: Settings, config: ServiceConfig):
        self.settings = settings
        self.config = config
        self.engine: sa.Engine = engine_for(settings.service_database_url)
        self.metrics = Metrics()
        self.models: dict[str, Serving] = {}
        self.problems: dict[str, str] = {name: missing_message(name) for name in SERVED}
        self.tables: CrmTables | None = None
        self.store_problem: str | None = "not loaded yet"
        self.store_generation = 0  # counts loads: cached results of an older store are dropped
        self.ready = False
        self._reload = threading.Lock()
        self._quarters: dict[tuple, QuarterInputs] = {}
        self._quarters_lock = threading.Lock()

    # --- start-up and reload --------------------------------------------------------------

    def start(self) -> None:
        ensure_tables(self.engine)
        self.load_store()
        self.load_models()
        self.ready = True

    def load_store(self) -> None:
        from forecast.store import StoreError, read_store

        try:
            self.tables = read_store()
            self.store_problem = None
            self.store_generation += 1
        except StoreError as err:
            self.tables, self.store_problem = None, str(err)

    def load_models(self) -> list[str]:
        """Load each champion whose version changed; returns the names that changed."""
        with self._reload:
            changed = []
            for name in SERVED:
                try:
                    serving = self._load(name, self.models.get(name))
                except ModelMissingError as err:
                    if name not in self.models:
                        self.problems[name] = str(err)
                    continue
                except Exception as err:  # a corrupt or unloadable version is refused
                    log.exception("refused a new %s champion; the old one keeps serving", name)
                    self.problems[name] = f"{name}: new champion refused ({err})"
                    continue
                self.problems.pop(name, None)
                if serving is not self.models.get(name):
                    self.models[name] = serving  # the swap: one assignment
                    changed.append(name)
            return changed

    def _load(self, name: str, current: Serving | None) -> Serving:
        import mlflow

        from forecast.account_features import ACCOUNT_FEATURES
        from forecast.explain import scorer_for
        from forecast.features import DEAL_FEATURES
        from forecast.registry import champion_version, client
        from forecast.scoring import won_deal_yardsticks

        version = champion_version(name)
        if version is None:
            raise ModelMissingError(missing_message(name))
        if current is not None and current.version == version:
            return current
        client()
        # by version, not alias: the alias may move while this loads
        model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
        features = DEAL_FEATURES if name == DEAL_MODEL else ACCOUNT_FEATURES
        typical = None
        if name == DEAL_MODEL and self.tables is not None:
            typical = won_deal_yardsticks(self.tables, as_of=self.tables.as_of)
        return Serving(name, version, scorer_for(model, features), typical, datetime.now(UTC))

    # --- what requests ask for ------------------------------------------------------------

    def champion(self, name: str) -> Serving:
        serving = self.models.get(name)
        if serving is None:
            raise ModelMissingError(self.problems.get(name, missing_message(name)))
        return serving

    def store(self) -> CrmTables:
        if self.tables is None:
            raise StoreUnavailableError(
                f"no CRM data: {self.store_problem} (import or generate with `forecast data`)"
            )
        return self.tables

    def reps(self) -> pd.DataFrame:
        tables = self.tables
        if tables is None or tables.reps.empty:
            raise OrgTreeUnavailableError("the org tree (reps) cannot be read: access is refused")
        return tables.reps

    def quarter_forecast(
        self, quarter: str, scenario: Scenario | None = None, *, seed: int = 0
    ) -> QuarterForecast:
        """A quarter's bookings at the store's as-of, by the serving deal-win champion.

        The prepared inputs (features, timing, renewals: the slow part) are kept per quarter,
        champion version and store, so a scenario only re-draws. The same question gives the
        same answer (one seed).

        Raises:
            ModelMissingError, StoreUnavailableError: nothing to forecast with.
            ValueError: a malformed quarter; KeyError, ValueError: a scenario naming an unknown
                deal or stage.
        """
        from forecast.bookings import parse_quarter
        from forecast.revenue import prepare_quarter, simulate_quarter

        serving, tables = self.champion(DEAL_MODEL), self.store()
        period = str(parse_quarter(quarter))
        key = (period, serving.version, self.store_generation)
        with self._quarters_lock:  # one preparation per key, even under concurrent requests
            inputs = self._quarters.get(key)
            if inputs is None:
                inputs = prepare_quarter(
                    tables, quarter=period, as_of=tables.as_of, win_scorer=serving.win_probability
                )
                # keep a few quarters of the current version and store, nothing older
                kept = {k: v for k, v in self._quarters.items() if k[1:] == key[1:]}
                kept = dict(list(kept.items())[-(self.config.forecast_quarters_kept - 1) :])
                self._quarters = {**kept, key: inputs}
        if scenario is not None:
            inputs = scenario.apply(inputs, serving.win_probability)
        return simulate_quarter(inputs, draws=self.config.forecast_draws, seed=seed)

    def versions(self) -> dict[str, str | None]:
        names = set(self.problems) | set(self.models)
        return {n: (self.models[n].version if n in self.models else None) for n in names}
