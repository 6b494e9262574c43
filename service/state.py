"""What the service holds while it runs: the serving champions, the CRM store, the database.

Champions are loaded (never trained) here, at start-up, on reload and by a background poller
that watches the champion aliases; a new version replaces the old one by a single assignment,
so a request holding the old `Serving` finishes on it. A version that fails to load is refused
(logged, counted in /metrics, named in /readyz and /v1/models), the old one keeps serving, and
the refused version is not tried again until the alias moves on or an admin reloads.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa

from forecast.data.tables import CrmTables
from forecast.explain.scorers import Scorer
from forecast.features.records import StoredCrm
from forecast.revenue.tree import COMPANY
from forecast.settings import Settings
from service import predlog  # noqa: F401 (registers the log tables on the shared metadata)
from service.heavy import HeavyWork
from service.in_step import latest_reload, request_reload
from service.keys import KeyCache, engine_for, ensure_tables
from service.logwriter import LogWriter
from service.metrics import Metrics
from service.scenarios import ScenarioProcess, ScenarioTimeoutError
from service.scenarios import Serving as ServingVersions

if TYPE_CHECKING:
    from forecast.explain.account_scoring import AccountScore
    from forecast.explain.scoring import DealScore
    from forecast.revenue import QuarterForecast, QuarterInputs, Scenario
    from forecast.training.churn_task import Definition

log = logging.getLogger(__name__)
T = TypeVar("T")

DEAL_MODEL = "deal-win"
CHURN_MODEL = "account-churn"
HOW_TO_TRAIN = {DEAL_MODEL: "forecast train win", CHURN_MODEL: "forecast train churn"}
SERVED = (DEAL_MODEL, CHURN_MODEL)


DATABASE_AWAY = "the service database cannot be reached (API keys, sign-ins and logs live there)"
DATABASE_CHECK_SECONDS = 2.0
RETRY_AFTER_SECONDS = 5


class ModelMissingError(RuntimeError):
    """No champion of a model is serving; the message says how to get one."""


class OrgTreeUnavailableError(RuntimeError):
    """The reps table (the org tree) cannot be read: access checks must fail closed."""


class StoreUnavailableError(RuntimeError):
    """No CRM data to read deals or coaching from."""


class NotInTheDataError(RuntimeError):
    """The stored data cannot give this at all (no closed deals to train a win model on, no
    amounts to forecast bookings from): 409, the message says what the export lacks."""


@dataclass(frozen=True)
class ServiceConfig:
    """Limits of the HTTP layer (the model limits live in the schemas)."""

    max_body_bytes: int = 4 * 1024 * 1024  # a full batch of 1,000 deals is under 1 MiB
    forecast_draws: int = 10_000  # as `forecast revenue`: the same question, the same figures
    forecast_quarters_kept: int = 4  # prepared quarters kept per champion version and store
    # a store this much older than a record's as-of is said in the answer (a nightly import
    # keeps it under two days; a historic export scored "now" is years behind)
    stale_store_days: int = 7


@dataclass(frozen=True)
class Serving:
    """One loaded champion: everything a request needs, replaced whole on a swap."""

    name: str
    version: str
    scorer: Scorer
    typical: pd.DataFrame | None
    loaded_at: datetime
    churn: ChurnServed | None = None  # what a churn champion predicts (None: deal-win)
    below_bar: tuple[str, ...] = ()  # what it fails of the gate's bar, promoted with --force

    @property
    def forced(self) -> str | None:
        """What every answer from a champion promoted over the gate's bar says of it."""
        from forecast.training.registry import forced_sentence

        return forced_sentence(self.name, self.version, self.below_bar)

    def probability(self, features: pd.DataFrame) -> np.ndarray:
        """Feature rows -> calibrated probabilities (the revenue forecast's win scorer, or the
        churn scorer behind its renewals)."""
        return self.scorer.probability(self.scorer.coded(features))


@dataclass(frozen=True)
class ChurnServed:
    """What a churn champion predicts: its definition (who is scored, what churn is, what a
    scored account's `arr` is) and horizon."""

    definition: Definition
    horizon_days: int | None  # as logged with the training run (None: not logged)


UNAVAILABLE = (  # what keeps a request from being answered: 503, or 409 (see `status_of`)
    ModelMissingError,
    OrgTreeUnavailableError,
    StoreUnavailableError,
    sa.exc.SQLAlchemyError,
    ScenarioTimeoutError,
    NotInTheDataError,
)
# what `forecast.data.doctor.not_in_the_data` calls each served model
NEEDS = {DEAL_MODEL: "win", CHURN_MODEL: "churn"}


def status_of(err: Exception) -> int:
    """409 for what the stored data can never give; 503 for what may come (a champion, the
    store, the database)."""
    return 409 if isinstance(err, NotInTheDataError) else 503


def missing_message(name: str) -> str:
    from forecast.training.registry import no_champion

    return no_champion(name, HOW_TO_TRAIN.get(name, "forecast train"))


class ServiceState:
    """The running service's state; one per app."""

    def __init__(self, settings: Settings, config: ServiceConfig):
        self.settings = settings
        self.config = config
        self.engine: sa.Engine = engine_for(settings.service_database_url)
        self.keys = KeyCache(self.engine, settings.key_cache_seconds)
        self.metrics = Metrics()
        self.heavy = HeavyWork()  # scenarios: one at a time, one per caller (service.heavy)
        self.scenarios = ScenarioProcess(
            settings, config, settings.scenario_budget_seconds, make_drawer=ServiceState
        )
        self.logs = LogWriter(
            self.engine,
            settings.log_spool,
            flush_seconds=settings.log_flush_seconds,
            max_spool_bytes=int(settings.log_spool_max_mb * 1024 * 1024),
            on_counts=self.metrics.count_log_rows,
        )
        self.models: dict[str, Serving] = {}
        # what keeps a model from serving (readiness fails) ...
        self.problems: dict[str, str] = {name: f"{name}: not loaded yet" for name in SERVED}
        # ... and newer versions refused while an older one serves (readiness holds)
        self.refused: dict[str, str] = {}
        self._refused_versions: dict[str, str] = {}
        self.tables: CrmTables | None = None
        self.stored_crm: StoredCrm | None = None  # the tables, ready to score CRM records
        self.deal_owners: dict[str, object] = {}  # deal id -> rep id, for access checks
        self.account_owners: dict[str, object] = {}  # account id -> owner rep id (or None)
        self._typical: dict[str, tuple[int, pd.DataFrame]] = {}  # per model, per store load
        self.store_problem: str | None = "not loaded yet"
        # what the stored data cannot give at all (`not_in_the_data`), each with why
        self.not_in_data: dict[str, str] = {}
        self._no_actions: tuple[tuple[str, int], str | None] | None = None  # per champion, store
        self._win_checked: tuple[int, str | None] | None = None  # per store load
        self.store_generation = 0  # counts loads: cached results of an older store are dropped
        self.ready = False
        self._reload = threading.Lock()
        self._quarters: dict[tuple, QuarterInputs] = {}
        self._plain_forecasts: dict[tuple, QuarterForecast] = {}  # no scenario, seed 0
        self._quarters_lock = threading.Lock()
        self._scores: dict[tuple, dict[str, Any]] = {}  # per champion version and store
        self._scores_lock = threading.Lock()
        self._database_checked: tuple[float, str | None] = (0.0, None)
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        self._reload_seen = 0  # the last reload request (service.in_step) this process did
        self.store_version: str | None = None  # the store version loaded

    # --- start-up, polling, reload and shutdown -------------------------------------------

    def start(self) -> None:
        ensure_tables(self.engine)
        self._reload_seen = latest_reload(self.engine)  # asked before this start: done by it
        self.logs.start()
        self.load_store()
        self.load_models()
        self.ready = True

    def start_polling(self) -> None:
        """Keep this process in step in a background thread (see `service.in_step`): every
        `sync_seconds` a reload asked of any process and a new store import; every
        `model_poll_seconds` the champion aliases."""
        settings = self.settings
        every = [s for s in (settings.sync_seconds, settings.model_poll_seconds) if s > 0]
        if not every or self._poller is not None:
            return
        self._stopping.clear()
        self._poller = threading.Thread(
            target=self._poll, args=(min(every),), name="in-step-poller", daemon=True
        )
        self._poller.start()

    def warm_scenarios(self) -> None:
        """Start the scenario process and have it load the store and champions now, in the
        background: the first scenario would otherwise wait for that (seconds)."""
        from forecast.revenue import Scenario

        def warm() -> None:
            try:
                quarter = str(self.store().as_of.to_period("Q"))
                self.scenario_forecasts(quarter, Scenario(name="warm-up"))
            except Exception as err:  # nothing to draw with yet: the first scenario starts it
                log.info("the scenario process was not warmed: %s", err)

        threading.Thread(target=warm, name="scenario-warm-up", daemon=True).start()

    def _poll(self, tick: float) -> None:
        models_every = self.settings.model_poll_seconds
        models_due = time.monotonic() + models_every
        while not self._stopping.wait(tick):
            try:
                if self.settings.sync_seconds > 0:
                    self._keep_in_step()
                if models_every > 0 and time.monotonic() >= models_due:
                    models_due = time.monotonic() + models_every
                    self._say_swapped(self.load_models())
            except sa.exc.SQLAlchemyError as err:  # the database away: /readyz says so
                log.debug("checking for reload requests failed: %s", err)
            except Exception:  # the registry may be briefly unreachable: the serving ones stay
                log.exception("checking the champion aliases failed")

    def _keep_in_step(self) -> None:
        from forecast.data.store import current_version

        latest = latest_reload(self.engine)
        if latest > self._reload_seen:
            self._reload_seen = latest
            log.info("reload %d asked for: reloading the store and the champions", latest)
            self.load_store()
            self._say_swapped(self.load_models(retry_refused=True))
        elif current_version(self.settings.store_path) != self.store_version:
            log.info("a new store version is current: reloading it")
            self.load_store()

    def _say_swapped(self, changed: list[str]) -> None:
        for name in changed:
            log.info("now serving %s version %s", name, self.models[name].version)

    def reload(self, caller: str) -> list[str]:
        """Reload the store and the champions here, and ask every other process to (within
        `sync_seconds`); returns the names whose version changed here."""
        self._reload_seen = request_reload(self.engine, caller)
        self.load_store()
        return self.load_models(retry_refused=True)

    def database_problem(self, *, now: bool = False) -> str | None:
        """Why the service database (keys, sessions, logs) cannot be read, or None; asked of
        the database at most every `DATABASE_CHECK_SECONDS` unless `now`."""
        problem = self._database_checked[1]
        if now or self.database_check_due():
            try:
                with self.engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                problem = None
            except sa.exc.SQLAlchemyError as err:
                cause = str(getattr(err, "orig", None) or err).splitlines()[0][:200]
                problem = f"{DATABASE_AWAY}: {cause}"
            self._database_checked = (time.monotonic(), problem)
        return problem

    def database_check_due(self) -> bool:
        return time.monotonic() - self._database_checked[0] >= DATABASE_CHECK_SECONDS

    def unavailable(self, err: Exception) -> tuple[str, dict[str, str]]:
        """The 503's detail and headers for an error that keeps a request from being answered
        now: no champion, store or org tree (the message says how to get one), or the service
        database unreachable (never its SQL: the caller is told to retry)."""
        if not isinstance(err, sa.exc.SQLAlchemyError):
            return str(err), {}
        if self._database_checked[1] is None:  # said once per outage, not per request
            log.warning("a request could not read the service database: %s", err)
        self._database_checked = (0.0, DATABASE_AWAY)  # /readyz asks it again at once
        return f"{DATABASE_AWAY}: try again shortly", {"Retry-After": str(RETRY_AFTER_SECONDS)}

    def stop(self) -> None:
        """Stop reporting ready, stop polling and write every queued log row."""
        self.ready = False
        self._stopping.set()
        if self._poller is not None:
            self._poller.join(timeout=60)  # a load in progress finishes; nothing is swapped after
            self._poller = None
        self.scenarios.stop()
        self.logs.close()

    def load_store(self) -> None:
        from forecast.data.doctor import not_in_the_data
        from forecast.data.store import StoreError, current_version, read_store

        try:
            version = current_version(self.settings.store_path)
            tables = read_store(self.settings.store_path)
            deals, accounts = tables.deals, tables.accounts
            not_in_data = not_in_the_data(tables)
            self.deal_owners = dict(zip(deals["deal_id"], deals["rep_id"], strict=True))
            # a customer of an order export may be known by its orders only: owned by no rep
            customers = dict.fromkeys(tables.orders["account_id"].dropna().unique())
            owners = zip(accounts["account_id"], accounts["owner_rep_id"], strict=True)
            self.account_owners = customers | dict(owners)
            self.not_in_data = not_in_data
            self.tables, self.stored_crm = tables, StoredCrm.of(tables)
            self.store_problem = None
            self.store_version = version
            self.store_generation += 1
            self.metrics.store_loads.inc()
        except StoreError as err:
            self.tables, self.stored_crm, self.store_problem = None, None, str(err)
            self.not_in_data = {}

    def load_models(self, *, retry_refused: bool = False) -> list[str]:
        """Load each champion whose version changed; returns the names that changed.

        Args:
            retry_refused: try again a version refused before (an admin's reload); the poller
                leaves it alone until the alias moves on.
        """
        from forecast.training.registry import champion_version

        with self._reload:
            changed = []
            for name in SERVED:
                if self._stopping.is_set():
                    break
                version = champion_version(name)
                current = self.models.get(name)
                if version is None:
                    if current is None:
                        self.problems[name] = self._untrainable(name) or missing_message(name)
                    continue
                if current is not None and current.version == version:
                    self.refused.pop(name, None)  # the alias came back to what serves
                    continue
                if not retry_refused and self._refused_versions.get(name) == version:
                    continue
                try:
                    serving = self.load_version(name, version)
                except Exception as err:  # a corrupt or unloadable version is refused
                    self._refuse(name, version, err, serving=current)
                    continue
                self.problems.pop(name, None)
                self.refused.pop(name, None)
                self._refused_versions.pop(name, None)
                if self._stopping.is_set():
                    break  # shutting down: keep what serves
                self.models[name] = serving  # the swap: one assignment
                self.metrics.count_swap(name)
                changed.append(name)
            return changed

    def _refuse(self, name: str, version: str, err: Exception, serving: Serving | None) -> None:
        detail = f"{name} version {version} refused: {type(err).__name__}: {err}"[:500]
        if serving is None:
            log.exception("could not load %s version %s", name, version)
            self.problems[name] = detail
        else:
            log.exception(
                "refused %s version %s; version %s keeps serving", name, version, serving.version
            )
            self.refused[name] = f"{detail}; version {serving.version} keeps serving"
        self._refused_versions[name] = version
        self.metrics.count_refusal(name)

    def load_version(self, name: str, version: str) -> Serving:
        """Load (never train) one registered version, checked as a champion is."""
        import mlflow
        from mlflow.models import Model

        from forecast.explain.scorers import check_scorer, check_signature, scorer_for
        from forecast.explain.scoring import stored_sample
        from forecast.features.deal_schema import DEAL_FEATURES, model_features
        from forecast.training.churn_task import definition_of
        from forecast.training.registry import client, served_below_bar

        client()
        with tempfile.TemporaryDirectory() as scratch:
            # by version, not alias: the alias may move while this loads
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=scratch
            )
            model = mlflow.sklearn.load_model(local)
            logged = Model.load(local)
            example = logged.load_input_example(local)
        if name == DEAL_MODEL:
            definition, churn = None, None
            known = DEAL_FEATURES
        else:  # subscription or inactivity churn, from the features the model expects
            definition = definition_of(model)
            churn = ChurnServed(definition, _logged_horizon(name, version))
            known = definition.features
        # a model fitted on another pipeline's features is refused here, not at the first score
        features = model_features(model, known)
        check_signature(logged.signature and logged.signature.inputs.input_names(), features)
        scorer = scorer_for(model, features)
        # the fast path serves only what the logged pipeline itself answers
        if not isinstance(example, pd.DataFrame):
            raise ValueError("the logged model has no input example to check the fast path on")
        check_scorer(scorer, model, example, what="the logged input example")
        if self.tables is not None:
            context = self.stored_crm.context if self.stored_crm else None
            sample = stored_sample(self.tables, definition=definition, context=context)
            check_scorer(scorer, model, sample, what=f"{len(sample)} stored rows")
        typical = self._yardsticks(name, definition)
        below_bar = tuple(served_below_bar(name, version))
        return Serving(name, version, scorer, typical, datetime.now(UTC), churn, below_bar)

    def _yardsticks(self, name: str, definition: Definition | None = None) -> pd.DataFrame | None:
        """What won deals (deal-win) or accounts that stayed (account-churn, under the churn
        `definition`) show, computed once per store load and definition."""
        from forecast.explain.account_scoring import retained_account_yardsticks
        from forecast.explain.scoring import won_deal_yardsticks

        tables, generation = self.tables, self.store_generation
        if tables is None:
            return None
        key = name if definition is None else f"{name}/{definition.name}"
        kept = self._typical.get(key)
        if kept is None or kept[0] != generation:
            if name == DEAL_MODEL:
                made = won_deal_yardsticks(tables, as_of=tables.as_of)
            else:
                made = retained_account_yardsticks(
                    tables, as_of=tables.as_of, definition=definition
                )
            kept = self._typical[key] = (generation, made)
        return kept[1]

    # --- what requests ask for ------------------------------------------------------------

    def champion(self, name: str) -> Serving:
        serving = self.models.get(name)
        if serving is None:
            if untrainable := self._untrainable(name):
                raise NotInTheDataError(untrainable)
            raise ModelMissingError(self.problems.get(name) or missing_message(name))
        return serving

    def no_deal_actions(self, serving: Serving) -> str | None:
        """Why the deal-win champion recommends no action to any deal of the store (None: some
        action applies): the store gives none of what the catalogue's actions act on. Once
        per champion and store load."""
        from forecast.explain.scoring import no_deal_actions

        stored, key = self.stored_crm, (serving.version, self.store_generation)
        if stored is None:
            return None
        if self._no_actions is None or self._no_actions[0] != key:
            self._no_actions = (key, no_deal_actions(serving.scorer, stored.context.unavailable))
        return self._no_actions[1]

    def check_forecastable(self) -> None:
        """Raises NotInTheDataError when the stored data can give no bookings forecast (no
        deals, or none with an amount); StoreUnavailableError without a store."""
        from forecast.data.doctor import no_forecast

        self.store()
        if refusal := no_forecast(self.not_in_data):
            raise NotInTheDataError(refusal)

    def readiness_problems(self) -> list[str]:
        """What keeps the service from being ready: a champion missing or refused, except of a
        model the stored data cannot train (`unsupported`)."""
        unsupported, problems = self.unsupported(), dict(self.problems)  # the poller writes
        return sorted(p for name, p in problems.items() if name not in unsupported)

    def _untrainable(self, name: str) -> str | None:
        """Why the stored data cannot train `name`, while none of it serves; None: it can."""
        why = self.unsupported().get(name)
        if why is not None:
            return f"{name} cannot be trained on the stored data: {why}"
        if name == DEAL_MODEL and name not in self.models and (refused := self._win_refusal()):
            return f"{name} has no champion, and {refused}"
        return None

    def _win_refusal(self) -> str | None:
        """Why training's own checks refuse a deal-win model on the store (too few closed
        deals, the leak guard): asked only while none serves, once per store load (the guard
        takes a second or two on a large store)."""
        from forecast.data.doctor import no_win_model

        tables, generation = self.tables, self.store_generation
        if tables is None:
            return None
        checked = self._win_checked
        if checked is None or checked[0] != generation:
            checked = self._win_checked = (generation, no_win_model(tables))
        return checked[1]

    def unsupported(self) -> dict[str, str]:
        """The served models the stored data cannot train, with why, while none serves."""
        return {
            name: why
            for name, need in NEEDS.items()
            if name not in self.models and (why := self.not_in_data.get(need))
        }

    def store(self) -> CrmTables:
        if self.tables is None:
            raise StoreUnavailableError(self._no_store())
        return self.tables

    def _no_store(self) -> str:
        return f"no CRM data: {self.store_problem} (import or generate with `forecast data`)"

    def records_store(self) -> StoredCrm:
        """The stored CRM a CRM's deal records are scored against."""
        stored = self.stored_crm
        if stored is None:
            raise StoreUnavailableError(self._no_store())
        return stored

    def reps(self) -> pd.DataFrame:
        tables = self.tables
        if tables is None:
            raise OrgTreeUnavailableError("the org tree (reps) cannot be read: access is refused")
        if tables.reps.empty:  # an order export: customers, no sales team
            raise OrgTreeUnavailableError(
                "the stored CRM has no reps (the export names no sales team): nothing is "
                "arranged by rep, team or region; an admin key sees the whole store"
            )
        return tables.reps

    def quarter_forecast(
        self,
        quarter: str,
        scenario: Scenario | None = None,
        *,
        seed: int = 0,
        as_of: pd.Timestamp | None = None,
    ) -> QuarterForecast:
        """A quarter's bookings at the store's as-of (or an earlier `as_of`: what was known
        then, as a digest's "since last week" asks), by the serving deal-win champion.

        The prepared inputs (features, timing, renewals: the slow part) are kept per quarter,
        champion version and store, so a scenario only re-draws. The same question gives the
        same answer (one seed).

        Raises:
            ModelMissingError, StoreUnavailableError: nothing to forecast with.
            ValueError: a malformed quarter; KeyError, ValueError: a scenario naming an unknown
                deal or stage.
        """
        from forecast.explain.account_scoring import at_risk_by_owner
        from forecast.revenue import prepare_quarter, simulate_quarter, with_revenue_at_risk
        from forecast.revenue.bookings import parse_quarter
        from forecast.revenue.churn import live_renewals

        self.check_forecastable()
        serving, tables = self.champion(DEAL_MODEL), self.store()
        churn = self.models.get(CHURN_MODEL)
        period = str(parse_quarter(quarter))
        moment = tables.as_of if as_of is None else pd.Timestamp(as_of)
        key = (period, serving.version, churn and churn.version, self.store_generation, moment)
        plain = scenario is None and seed == 0  # what every forecast page asks: drawn once
        if plain and (drawn := self._plain_forecasts.get(key)) is not None:
            return drawn
        with self._quarters_lock:  # one preparation per key, even under concurrent requests
            inputs = self._quarters.get(key)
            if inputs is None:
                renewals = None
                if churn is not None and churn.churn is not None:
                    renewals = live_renewals(
                        churn.probability,
                        tables,
                        quarter=period,
                        as_of=moment,
                        source=f"{churn.name} v{churn.version}",
                        definition=churn.churn.definition,
                    )
                inputs = prepare_quarter(
                    tables,
                    quarter=period,
                    as_of=moment,
                    win_scorer=serving.probability,
                    renewal_probability=renewals,
                )
                inputs = _leaning(tables, inputs)
                # keep a few quarters of the current version and store, nothing older
                kept = {k: v for k, v in self._quarters.items() if k[1:4] == key[1:4]}
                kept = dict(list(kept.items())[-(self.config.forecast_quarters_kept - 1) :])
                self._quarters = {**kept, key: inputs}
        if scenario is not None:
            inputs = scenario.apply(inputs, serving.probability)
        forecast = simulate_quarter(inputs, draws=self.config.forecast_draws, seed=seed)
        if churn is not None and as_of is None:  # else no revenue-at-risk figures
            scores = list(self.account_scores(churn).values())
            forecast = with_revenue_at_risk(forecast, at_risk_by_owner(scores), tables.reps)
        if plain:
            with self._quarters_lock:  # kept while its prepared inputs are
                drawn_kept = {k: f for k, f in self._plain_forecasts.items() if k in self._quarters}
                self._plain_forecasts = {**drawn_kept, key: forecast}
        return forecast

    def scenario_forecasts(
        self, quarter: str, scenario: Scenario, level: str = COMPANY, node: str = COMPANY
    ) -> tuple[QuarterForecast, QuarterForecast]:
        """The quarter's base and scenario forecasts, drawn by the scenario process (see
        `service.scenarios`) with the champions and store this process serves; every node's
        figures, the draws of `node` only.

        Raises:
            ModelMissingError, StoreUnavailableError: nothing to forecast with.
            KeyError, ValueError: a scenario naming an unknown deal, rep or stage.
            ScenarioTimeoutError: past the budget (`scenario_budget_seconds`).
        """
        deal_win, churn = self.champion(DEAL_MODEL), self.models.get(CHURN_MODEL)
        self.store()
        churn_version = churn.version if churn is not None else None
        serving = ServingVersions(deal_win.version, churn_version, self.store_version)
        return self.scenarios.forecasts(quarter, scenario, serving, (level, node))

    def follow(self, serving: ServingVersions) -> None:
        """Serve the store and champion versions `serving` names (the scenario process draws
        with what its serving process serves)."""
        if self.store_version != serving.store or self.tables is None:
            self.load_store()
        for name, version in ((DEAL_MODEL, serving.deal_win), (CHURN_MODEL, serving.churn)):
            current = self.models.get(name)
            if version is None:
                self.models.pop(name, None)
            elif current is None or current.version != version:
                self.models[name] = self.load_version(name, version)

    def detail(self, name: str) -> str | None:
        """Why a model is not serving, which newer version was refused, or that the one serving
        was promoted by hand over the gate."""
        serving = self.models.get(name)
        return (
            self._untrainable(name)
            or self.problems.get(name)
            or self.refused.get(name)
            or (serving.forced if serving else None)
        )

    def deal_scores(self, serving: Serving) -> dict[str, DealScore]:
        """Every open deal's current score by `serving` (the deal-win champion the request
        holds), keyed by deal id."""
        from forecast.explain.scoring import score_deals

        stored = self.records_store()  # the tables with their context, from one load

        def scored() -> dict[str, DealScore]:
            made = score_deals(
                stored.tables, serving.scorer, typical=serving.typical, context=stored.context
            )
            return {s.deal_id: s for s in made}

        return self._stored(serving, scored)

    def account_scores(self, serving: Serving) -> dict[str, AccountScore]:
        """Every account's current churn risk by `serving` (the churn champion the request
        holds: the accounts its definition scores), keyed by account id."""
        from forecast.explain.account_scoring import score_accounts

        stored = self.records_store()

        def scored() -> dict[str, AccountScore]:
            made = score_accounts(stored.tables, serving.scorer, typical=serving.typical)
            return {s.account_id: s for s in made}

        return self._stored(serving, scored)

    def _stored(self, serving: Serving, score: Callable[[], dict[str, T]]) -> dict[str, T]:
        """`score()`, made once per champion version and store load, then read by the API and
        the dashboard alike (scoring one stored deal costs nearly as much as all)."""
        key = (serving.name, serving.version, self.store_generation)
        with self._scores_lock:  # one scoring per key, even under concurrent reads
            scores = self._scores.get(key)
            if scores is None:
                scores = score()
                kept = {k: v for k, v in self._scores.items() if k[0] != serving.name}
                self._scores = {**kept, key: scores}
        return scores

    def versions(self) -> dict[str, str | None]:
        names = set(self.problems) | set(self.models)
        return {n: (self.models[n].version if n in self.models else None) for n in names}


def _logged_horizon(name: str, version: str) -> int | None:
    """The churn horizon (days) the version's training run logged; None when it logged none."""
    from forecast.training.registry import client

    tracking = client()
    run_id = tracking.get_model_version(name, version).run_id
    logged = tracking.get_run(run_id).data.params.get("horizon_days") if run_id else None
    return int(logged) if logged and logged.isdigit() else None


def _leaning(tables: CrmTables, inputs):
    """The quarter's inputs leaning on the time series the latest revenue backtest found more
    accurate, node by node (as `forecast revenue` does); as they are when there is no backtest
    or the tracking store cannot be read (logged: the forecast still stands)."""
    from mlflow.exceptions import MlflowException

    from forecast.revenue.backtest_log import lean_on_latest_backtest

    try:
        return lean_on_latest_backtest(tables, inputs)[0]
    except (MlflowException, OSError) as err:
        log.warning("no series leaning: the revenue backtest could not be read (%s)", err)
        return inputs
