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

import pandas as pd
import sqlalchemy as sa

from forecast import predlog  # noqa: F401 (registers the log tables on the shared metadata)
from forecast.explain import Scorer
from forecast.keys import engine_for, ensure_tables
from forecast.settings import Settings
from forecast.tables import CrmTables
from service.metrics import Metrics

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


@dataclass(frozen=True)
class Serving:
    """One loaded champion: everything a request needs, replaced whole on a swap."""

    name: str
    version: str
    scorer: Scorer
    typical: pd.DataFrame | None
    loaded_at: datetime


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
        self.ready = False
        self._reload = threading.Lock()

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

    def versions(self) -> dict[str, str | None]:
        names = set(self.problems) | set(self.models)
        return {n: (self.models[n].version if n in self.models else None) for n in names}
