"""The churn task: its name and parameters, the two definitions (a subscription that stops, a
customer who stops buying), the windows and slices, and the snapshot frame it trains on."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from forecast.data.tables import CrmTables, Featurize, no_features
from forecast.features.accounts import (
    ACCOUNT_FEATURES,
    HORIZON_DAYS,
    account_features,
    account_snapshots,
    billed_until,
    churn_snapshot_dates,
    churn_training_frame,
)
from forecast.features.deal_schema import Feature
from forecast.features.on_dask import account_features_with
from forecast.features.orders import (
    INACTIVITY_FEATURES,
    customer_snapshots,
    horizon_of_gaps,
    inactivity_features,
    inactivity_training_frame,
    purchase_gaps,
)
from forecast.model import (
    TreeParams,
)
from forecast.training.churn_baselines import RateTable, RecencyTable
from forecast.training.drift import HALF_LIVES, ROLLING_FOLDS
from forecast.training.task import CANDIDATES, NotEnoughDataError, Task, fingerprint

if TYPE_CHECKING:
    from pathlib import Path

    from distributed import Client

    from forecast.cluster import Progress

EXPERIMENT = "account-churn"

MODEL_NAME = "account-churn"

MIN_PER_CLASS = 40  # accounts that churned, and accounts retained, needed before training

KEYS = ("account_id", "as_of")

LABEL = "churned"

TASK = Task("churn", MODEL_NAME, EXPERIMENT, label=LABEL, group="account_id", purge_group=False)

GATE_BASELINES = ("base_rate", "rate_table")

DEFINITIONS = ("subscription", "inactivity")


@dataclass(frozen=True)
class ChurnParams:
    """Everything that decides the churn model, logged as the run's parameters."""

    seed: int = 0
    definition: str = "auto"  # subscription, inactivity, or auto: from what the data holds
    horizon_days: int | None = None  # None: 90 days, or for inactivity from purchase gaps
    test_months: int | None = None  # None: 3, or 1 when the history is short (`slice_months`)
    calibration_months: int | None = None  # None: as test_months
    snapshot_day: int = 15
    tree: TreeParams = field(default_factory=TreeParams)
    logistic_c: float = 0.1
    candidates: tuple[str, ...] = CANDIDATES
    half_lives: tuple[int | None, ...] = HALF_LIVES  # recency weightings tried (days)
    rolling_folds: int = ROLLING_FOLDS  # held-out windows the choice is made on
    allow_columns: tuple[str, ...] = ()  # columns the leak guard would refuse, checked by a person
    given: tuple[str, ...] = ()  # which of definition and horizon_days a person set (kept nightly)

    def flat(self) -> dict[str, object]:
        out = {k: v for k, v in asdict(self).items() if k != "tree"}
        out["candidates"] = ",".join(self.candidates)
        out["half_lives"] = ",".join("none" if h is None else str(h) for h in self.half_lives)
        out["allow_columns"] = ",".join(self.allow_columns)
        out["given"] = ",".join(self.given)
        return out | {f"tree_{k}": v for k, v in asdict(self.tree).items()}


@dataclass(frozen=True)
class ChurnHooks:
    """Test hooks; real runs use none. `fit_rows` rewrites train and calibration rows only."""

    fit_rows: Callable[[pd.DataFrame], pd.DataFrame] | None = None


@dataclass(frozen=True)
class ChurnSlices:
    train: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame
    embargo_rows: int
    spans: Mapping[str, str]
    history: pd.DataFrame  # every labelled snapshot before the test slice (the rolling windows)


@dataclass(frozen=True)
class ChurnFacts:
    """The few numbers of the whole export that decide the churn definition, its horizon, its
    first snapshot and which labels are knowable: made from the tables in one process, or from
    each part of a store in parts and joined (`joined`), the same numbers."""

    first_recurring: pd.Timestamp  # the first recurring bill's month (NaT: none)
    billed_until: pd.Timestamp  # see `billed_until` (NaT: none)
    first_order: pd.Timestamp  # the first order line of a known customer (NaT: none)
    customer_orders: bool  # any order of a known customer
    gap_counts: np.ndarray  # purchases following one on another day, by the days between

    @classmethod
    def of(cls, tables: CrmTables) -> ChurnFacts:
        sources = cls.sources(tables)
        customers = tables.orders["account_id"].notna()
        return replace(
            sources,
            billed_until=billed_until(tables),
            first_order=tables.orders.loc[customers, "at"].min(),
            gap_counts=np.bincount(purchase_gaps(tables))
            if sources.customer_orders
            else np.zeros(0, int),
        )

    @classmethod
    def sources(cls, tables: CrmTables) -> ChurnFacts:
        """Only what decides which definition the export supports (`resolve`, with a horizon
        given): whether it holds recurring revenue, or orders of known customers. Cheap."""
        recurring = tables.revenue.loc[tables.revenue["kind"] == "recurring", "period"]
        return cls(
            first_recurring=recurring.min(),
            billed_until=pd.NaT,
            first_order=pd.NaT,
            customer_orders=bool(tables.orders["account_id"].notna().any()),
            gap_counts=np.zeros(0, int),
        )

    @classmethod
    def joined(cls, parts: Sequence[ChurnFacts]) -> ChurnFacts:
        longest = max((len(p.gap_counts) for p in parts), default=0)
        counts = np.zeros(longest, dtype=np.int64)
        for p in parts:
            counts[: len(p.gap_counts)] += p.gap_counts
        return cls(
            first_recurring=_earliest(p.first_recurring for p in parts),
            billed_until=_latest(p.billed_until for p in parts),
            first_order=_earliest(p.first_order for p in parts),
            customer_orders=any(p.customer_orders for p in parts),
            gap_counts=counts,
        )

    @property
    def gaps(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.gap_counts)), self.gap_counts)


def _earliest(stamps: Iterable[pd.Timestamp]) -> pd.Timestamp:
    return pd.Series(list(stamps), dtype="datetime64[ns]").min()


def _latest(stamps: Iterable[pd.Timestamp]) -> pd.Timestamp:
    return pd.Series(list(stamps), dtype="datetime64[ns]").max()


def churn_facts(
    tables: CrmTables, client: Client | None = None, parts: Path | None = None
) -> ChurnFacts:
    """`ChurnFacts` of the stored export: of `tables`, or of the store in parts at `parts`,
    each part's made by a worker of `client` that reads it."""
    if parts is None or client is None:
        return ChurnFacts.of(tables)
    from forecast.features.on_dask import on_parts

    return ChurnFacts.joined(on_parts(client, parts, ("revenue", "orders"), ChurnFacts.of))


@dataclass(frozen=True)
class Definition:
    """What one churn definition decides: its unit's snapshots and features, its rule
    baseline, its segments on the card and the words the card uses."""

    name: str
    features: tuple[Feature, ...]
    rule: type[RateTable] | type[RecencyTable]
    rule_text: str
    event: str  # what churn is, after "the probability that"
    population: str  # who is snapshotted, after "snapshots of"
    first_moment: Callable[[ChurnFacts], pd.Timestamp]  # the earliest snapshot's month
    snapshots: Callable[[CrmTables, Sequence[pd.Timestamp]], pd.DataFrame]
    featurize: Featurize
    training_frame: Callable[..., pd.DataFrame]  # (tables, dates, *, horizon_days, features)
    # what `training_frame`'s labels need of the whole export beside a unit's own rows
    label_options: Callable[[ChurnFacts], dict]
    # a year's revenue of each feature row: what a churned account (customer) takes away
    yearly_revenue: Callable[[pd.DataFrame], np.ndarray]
    revenue_words: str  # what `yearly_revenue` is, for pages and cards

    def frame(
        self,
        tables: CrmTables,
        params: ChurnParams,
        facts: ChurnFacts,
        client: Client | None = None,
        progress: Progress | None = None,
        parts: Path | None = None,
        features: Featurize | None = None,
    ) -> pd.DataFrame:
        """Labelled monthly snapshots from the first billed month (or order) to the export;
        the features by the cluster of `client` when given (the same numbers; `progress`
        hears its parts finish). `parts`: the version folder of a store in parts, whose
        workers each make their part's accounts' rows (`tables` then need hold only the reps
        and products); the rows in one process's order. `features`: how to featurize the
        snapshots instead (`no_features` for the labels alone)."""
        first = self.first_moment(facts)
        dates = churn_snapshot_dates(first, tables.as_of, day=params.snapshot_day)
        return self.labelled(
            tables, dates, horizon_of(params), facts, client=client, progress=progress,
            parts=parts, features=features,
        )  # fmt: skip

    def labelled(
        self,
        tables: CrmTables,
        dates: Sequence[pd.Timestamp],
        horizon_days: int,
        facts: ChurnFacts,
        *,
        client: Client | None = None,
        progress: Progress | None = None,
        parts: Path | None = None,
        features: Featurize | None = None,
    ) -> pd.DataFrame:
        """The labelled snapshots at `dates` (see `frame`)."""
        options = {"horizon_days": horizon_days, **self.label_options(facts)}
        if parts is not None and client is not None:
            return self._frame_of_parts(client, parts, tables, dates, options, progress)
        featurize = features or account_features_with(client, self.featurize, progress)
        return self.training_frame(tables, dates, features=featurize, **options)

    def _frame_of_parts(
        self,
        client: Client,
        parts: Path,
        tables: CrmTables,
        dates: Sequence[pd.Timestamp],
        options: dict,
        progress: Progress | None,
    ) -> pd.DataFrame:
        from forecast.features.on_dask import ACCOUNT_TABLES, on_parts

        refers = {"reps": tables.reps, "products": tables.products}
        task = (_frame_of_part, self.name, list(dates), options, refers)
        made = on_parts(client, parts, ACCOUNT_TABLES, *task, progress=progress)
        # one process's rows come by snapshot date, then account id
        whole = pd.concat(made, ignore_index=True)
        return whole.sort_values(["as_of", "account_id"], kind="stable", ignore_index=True)

    def features_at(
        self,
        tables: CrmTables,
        as_of: pd.Timestamp,
        client: Client | None = None,
        progress: Progress | None = None,
    ) -> pd.DataFrame:
        """Every scorable account's (customer's) features at `as_of`; by the cluster of
        `client` when given (the same numbers; `progress` hears its parts finish)."""
        featurize = account_features_with(client, self.featurize, progress)
        return featurize(tables, self.snapshots(tables, [as_of]))

    @staticmethod
    def segments(frame: pd.DataFrame) -> pd.Series:
        """The groups the card breaks the test metrics down by."""
        if "purchases" not in frame or frame["segment"].notna().any():
            return frame["segment"]  # subscription churn, or customers with a segment
        bought = frame["purchases"].to_numpy()
        labels = np.where(bought <= 1, "1 purchase", np.where(bought <= 4, "2-4", "5+"))
        return pd.Series(labels, index=frame.index)


SUBSCRIPTION = Definition(
    "subscription",
    ACCOUNT_FEATURES,
    RateTable,
    "churn rate by days to contract end (<= 0, 1-30, 31-90, 91-180, > 180, unknown) x last "
    "usage below the train slice's lower quartile",
    "an account's recurring revenue stops",
    "every account billed recurring revenue in the last ended month",
    first_moment=lambda facts: facts.first_recurring,
    snapshots=account_snapshots,
    featurize=account_features,
    training_frame=churn_training_frame,
    label_options=lambda facts: {"seen_until": facts.billed_until},
    yearly_revenue=lambda frame: 12 * frame["mrr"].to_numpy(dtype=float),
    revenue_words="ARR (12 x the last monthly bill)",
)

INACTIVITY = Definition(
    "inactivity",
    INACTIVITY_FEATURES,
    RecencyTable,
    "churn rate by days since the last purchase (<= 30, 31-60, 61-90, 91-180, > 180) x one "
    "purchase only",
    "a customer makes no purchase",
    "every customer with a purchase in the year before",
    first_moment=lambda facts: facts.first_order,
    snapshots=customer_snapshots,
    featurize=inactivity_features,
    training_frame=inactivity_training_frame,
    label_options=lambda facts: {},  # the export's end: every part's as-of
    # spend net of returns over the year before: a negative net is no revenue to lose
    yearly_revenue=lambda frame: frame["spend_365d"].clip(lower=0).to_numpy(dtype=float),
    revenue_words="spend over the last year, net of returns",
)

DEFINITION_OF = {d.name: d for d in (SUBSCRIPTION, INACTIVITY)}


def _frame_of_part(
    own: CrmTables, name: str, dates: list, options: dict, refers: dict
) -> pd.DataFrame:
    """On a worker: a part's labelled snapshots (its accounts' own rows are all in it)."""
    return DEFINITION_OF[name].training_frame(own.replace(**refers), dates, **options)


def horizon_of(params: ChurnParams) -> int:
    return HORIZON_DAYS if params.horizon_days is None else params.horizon_days


def resolve(params: ChurnParams, data: CrmTables | ChurnFacts) -> ChurnParams:
    """`params` with the definition and the horizon decided from what the export holds (its
    tables, or their `ChurnFacts`).

    `auto` is subscription when the export has recurring revenue, else inactivity when it has
    orders from known customers.

    Raises:
        NotEnoughDataError: neither is in the export, or the named one is not.
        ValueError: an unknown definition.
    """
    if params.definition not in (*DEFINITIONS, "auto"):
        raise ValueError(
            f"churn definition must be auto, {' or '.join(DEFINITIONS)}, not {params.definition!r}"
        )
    facts = data if isinstance(data, ChurnFacts) else ChurnFacts.of(data)
    has = {
        "subscription": pd.notna(facts.first_recurring),
        "inactivity": facts.customer_orders,
    }
    name = params.definition
    if name == "auto":
        name = next((d for d in DEFINITIONS if has[d]), "")
    if not name:
        raise NotEnoughDataError(
            "churn cannot be defined: the export has no recurring revenue rows (subscription "
            "churn) and no orders with customers (inactivity churn); import a revenue or an "
            "orders table"
        )
    if not has[name]:
        wanted = "recurring revenue rows" if name == "subscription" else "orders with customers"
        table = "a revenue table" if name == "subscription" else "an orders table"
        raise NotEnoughDataError(
            f"{name} churn needs {wanted} and the export has none: import {table}, or leave "
            "--definition to auto (`forecast retrain` keeps the definition given to `forecast "
            "train churn`: train churn again with --definition auto)"
        )
    horizon = params.horizon_days
    if horizon is None:
        horizon = HORIZON_DAYS if name == "subscription" else _gap_horizon(facts)
    return replace(params, definition=name, horizon_days=horizon)


def _gap_horizon(facts: ChurnFacts) -> int:
    try:
        return horizon_of_gaps(facts.gaps)
    except ValueError as err:
        raise NotEnoughDataError(f"inactivity churn: {err}") from None


def definition_of(model: BaseEstimator) -> Definition:
    """The definition a churn model was trained under, from the features it expects."""
    return definition_for(str(n) for n in getattr(model, "feature_names_in_", []))


def definition_for(feature_names: Iterable[str]) -> Definition:
    """The definition whose features these are (subscription unless inactivity's are there)."""
    # the customer attributes (segment, industry, region) are in both: they decide nothing
    inactivity = {f.name for f in INACTIVITY_FEATURES} - {f.name for f in ACCOUNT_FEATURES}
    return INACTIVITY if inactivity.intersection(feature_names) else SUBSCRIPTION


def check_trainable(tables: CrmTables, params: ChurnParams | None = None) -> ChurnParams:
    """What `prepare` refuses before a feature is computed, checked on the labels alone (quick
    enough for `forecast data doctor`): a definition the export supports, enough churned and
    retained accounts, both outcomes in every out-of-time slice. Returns `params` resolved.

    Raises:
        NotEnoughDataError: saying which, as `forecast train churn` would.
    """
    facts = ChurnFacts.of(tables)
    params = resolve(params or ChurnParams(), facts)
    definition = DEFINITION_OF[params.definition]
    frame = definition.frame(tables, params, facts, features=no_features)
    check_classes(frame, horizon_of(params))
    split(frame, params)
    return params


def check_classes(frame: pd.DataFrame, horizon_days: int = HORIZON_DAYS) -> None:
    """Refuse to train with fewer than MIN_PER_CLASS churned and retained accounts each."""
    churned = frame.loc[frame[LABEL] == 1, "account_id"].nunique()
    retained = frame.loc[frame[LABEL] == 0, "account_id"].nunique()
    if churned < MIN_PER_CLASS or retained < MIN_PER_CLASS:
        raise NotEnoughDataError(
            f"not enough labelled accounts to train a churn model: {churned} accounts churned "
            f"and {retained} were retained within {horizon_days} days of a snapshot; at least "
            f"{MIN_PER_CLASS} of each are needed (import more revenue or order history)"
        )


def split(frame: pd.DataFrame, params: ChurnParams) -> ChurnSlices:
    """Out-of-time slices by snapshot date, with the train slice's label windows embargoed."""
    dates = np.sort(frame["as_of"].unique())
    test_months, calibration_months = slice_months(len(dates), params)
    n_late = test_months + calibration_months
    if len(dates) <= n_late:
        raise NotEnoughDataError(
            f"{len(dates)} labelled snapshot months; more than {n_late} are needed (test "
            f"{test_months}, calibration {calibration_months}, then training)"
        )
    test_start = dates[-test_months]
    cal_start = dates[-n_late]
    as_of = frame["as_of"]
    early = frame[as_of < cal_start]
    closed = early["as_of"] + pd.Timedelta(days=horizon_of(params)) < cal_start
    parts = {
        "train": early[closed],
        "calibration": frame[(as_of >= cal_start) & (as_of < test_start)],
        "test": frame[as_of >= test_start],
    }
    day = "%Y-%m-%d"
    spans = {
        name: f"{part['as_of'].min():{day}} .. {part['as_of'].max():{day}}" if len(part) else "-"
        for name, part in parts.items()
    }
    for name, part in parts.items():
        if part[LABEL].nunique() < 2:
            raise NotEnoughDataError(
                f"the {name} slice ({spans[name]}) has {len(part)} labelled snapshots and not "
                "both outcomes: more history is needed"
            )
    parts = {name: part.reset_index(drop=True) for name, part in parts.items()}
    history = frame[as_of < test_start].reset_index(drop=True)
    return ChurnSlices(**parts, embargo_rows=int((~closed).sum()), spans=spans, history=history)


def slice_months(labelled_months: int, params: ChurnParams) -> tuple[int, int]:
    """Snapshot months for the test and calibration slices: as set, else 3 each when the
    history leaves at least 3 months to train on before them and the label window's embargo,
    else 1 each (a year of orders has about 9 labelled months with a 90-day horizon)."""
    embargo = int(np.ceil(horizon_of(params) / 30))
    default = 3 if labelled_months >= 3 + 3 + embargo + 3 else 1
    test = params.test_months or default
    return test, params.calibration_months or test


@dataclass(frozen=True)
class Prepared:
    slices: ChurnSlices
    features: tuple[Feature, ...]
    fingerprint: str
    export_as_of: pd.Timestamp
    definition: Definition = SUBSCRIPTION


def prepare(
    tables: CrmTables,
    params: ChurnParams,
    hooks: ChurnHooks,
    client: Client | None = None,
    progress: Progress | None = None,
    parts: Path | None = None,
    facts: ChurnFacts | None = None,
) -> Prepared:
    """Snapshots, features (on the cluster of `client` when given; read by its workers from
    the store in `parts` when given), labels, the class check and the out-of-time split.
    `facts`: `churn_facts` of the export when already made."""
    facts = facts or churn_facts(tables, client, parts)
    params = resolve(params, facts)
    definition = DEFINITION_OF[params.definition]
    frame = definition.frame(tables, params, facts, client, progress, parts)
    check_classes(frame, horizon_of(params))
    s = split(frame, params)
    if hooks.fit_rows is not None:
        s = replace(
            s,
            train=hooks.fit_rows(s.train),
            calibration=hooks.fit_rows(s.calibration),
            history=hooks.fit_rows(s.history),
        )
    features = definition.features
    columns = [*KEYS, *(f.name for f in features), LABEL]
    stamp = fingerprint(pd.concat([s.train, s.calibration, s.test]), columns)
    return Prepared(s, features, stamp, tables.as_of, definition)
