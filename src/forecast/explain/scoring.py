"""Scoring deals and accounts as of a moment: probability, grade or revenue at risk, and why.

The same path serves the CLI, the service, the dashboard and batch jobs: features at `as_of`
(point in time), the calibrated champion through its fast scorer, explanations from
`forecast.explain.reasons`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables
from forecast.explain.catalogue import display_names, load_catalogue
from forecast.explain.reasons import explain, typical_of_won
from forecast.explain.scorers import Scorer, scorer_for
from forecast.explain.wording import Explanation, why_no_actions
from forecast.features.deal_context import DealContext
from forecast.features.deal_schema import (
    DEAL_FEATURES,
    FROM_RECORD_OF,
    model_features,
    unavailable_features,
)
from forecast.features.deals import (
    deal_features,
    deal_snapshots,
    feature_columns,
    snapshot_dates,
    training_frame,
)
from forecast.features.on_dask import deal_frames_of_parts
from forecast.features.records import StoredCrm, moment, record_tables
from forecast.settings import get_settings

if TYPE_CHECKING:
    from distributed import Client

    from forecast.training.churn_task import Definition


TREND_DAYS = 7  # the previous weekly snapshot

YARDSTICK_DAYS = 365  # won deals of the last year set the "typical" in reasons


@dataclass(frozen=True)
class DealScore:
    deal_id: str
    as_of: pd.Timestamp
    probability: float
    grade: str
    previous_probability: float | None  # a week earlier, if the deal was open then
    trend_points: float | None
    explanation: Explanation


GRADE_ORDER = np.array(["D", "C", "B", "A"])


def grade(probability: np.ndarray | float, cutoffs: Sequence[float] | None = None) -> np.ndarray:
    """A to D from the win probability; cut-offs (A, B, C lower bounds) from settings."""
    a, b, c = cutoffs or get_settings().grade_cutoffs
    p = np.atleast_1d(np.asarray(probability, dtype=float))
    # how many lower bounds each probability reaches: D, C, B, A (NaN reaches none)
    return GRADE_ORDER[np.searchsorted([c, b, a], np.where(np.isnan(p), -np.inf, p), side="right")]


def open_deal_ids(tables: CrmTables, as_of: pd.Timestamp) -> pd.Series:
    """Deals open at `as_of`, judged from their history."""
    return deal_snapshots(tables, [as_of])["deal_id"]


def score_deals(
    tables: CrmTables,
    scorer: Scorer,
    *,
    as_of: pd.Timestamp | None = None,
    deal_ids: Sequence[str] | None = None,
    typical: pd.DataFrame | None = None,
    context: DealContext | None = None,
) -> list[DealScore]:
    """Score deals open at `as_of` (default: the export's as-of), with their trend and reasons.

    Raises:
        KeyError: a requested deal is unknown, or not open at `as_of`.
    """
    as_of = pd.Timestamp(as_of) if as_of is not None else tables.as_of
    open_now = open_deal_ids(tables, as_of)
    wanted = open_now if deal_ids is None else pd.Series(list(deal_ids), dtype="string")
    if wanted.empty:  # nothing open (every deal closed, or an as-of before the first)
        return []
    missing = sorted(set(wanted) - set(open_now))
    if missing:
        unknown = sorted(set(missing) - set(tables.deals["deal_id"]))
        if unknown:
            raise KeyError(f"no deal {', '.join(unknown[:5])} in the stored CRM")
        raise KeyError(f"not open at {as_of:%Y-%m-%d %H:%M}: {', '.join(missing[:5])}")
    # the records that span deals, built once for now and a week ago (the store's, if given)
    context = context or DealContext.of(tables)
    snapshots = pd.DataFrame({"deal_id": wanted.to_numpy(), "as_of": as_of})
    now = deal_features(tables, snapshots, context=context)
    explained = explain(scorer, now, typical=typical, display=display_names(tables))
    week_ago = as_of - pd.Timedelta(days=TREND_DAYS)
    previous = _previous(tables, scorer, wanted, week_ago, context)
    probabilities = np.array([e.probability for e in explained])
    grades = grade(probabilities)
    scores = []
    for i, deal_id in enumerate(now["deal_id"]):
        before = previous.get(deal_id)
        scores.append(
            DealScore(
                deal_id=str(deal_id),
                as_of=as_of,
                probability=float(probabilities[i]),
                grade=str(grades[i]),
                previous_probability=before,
                trend_points=None
                if before is None
                else round(100 * (probabilities[i] - before), 2),
                explanation=explained[i],
            )
        )
    return scores


@dataclass(frozen=True)
class RecordScore:
    """A CRM record's score at `as_of`, and which of its ids the store had never seen."""

    deal_id: str
    as_of: pd.Timestamp
    probability: float
    grade: str
    new_to_store: tuple[str, ...]
    explanation: Explanation


def score_records(
    records: Sequence[Mapping[str, Any]],
    stored: StoredCrm,
    scorer: Scorer,
    *,
    as_of: object,
    typical: pd.DataFrame | None = None,
) -> list[RecordScore]:
    """Score open deals sent as a CRM holds them (see `forecast.features.records`) at `as_of`,
    against the stored CRM: the features are those training computes, so a stored deal sent as
    stored scores as `score_deals` scores it.

    Raises:
        forecast.features.records.RecordError: a record that cannot be scored, naming the field.
    """
    as_of = moment(as_of)
    facts = record_tables(records, stored, as_of)
    moments = np.full(
        len(facts.deal_id), pd.Timestamp(as_of).to_datetime64(), dtype="datetime64[ns]"
    )
    columns = feature_columns(facts, facts.deal_id, moments, context=stored.context)
    # the model's input as the object matrix `explain` reads as is (for a record or a few, a
    # frame costs more to build than the features); a feature not made here is missing
    values = np.empty((len(moments), len(scorer.names)), dtype=object)
    for j, name in enumerate(scorer.names):
        values[:, j] = columns.get(name, np.nan)
    new = [stored.new_ids(facts, i) for i in range(len(records))]
    # what the store knows of an id it has never seen is a prior: no reason is drawn from it
    position = {name: j for j, name in enumerate(scorer.names)}
    unknown = np.zeros(values.shape, dtype=bool)
    for i, fields in enumerate(new):
        for field in fields:
            unknown[i, [position[n] for n in FROM_RECORD_OF.get(field, ()) if n in position]] = True
    explained = explain(
        scorer,
        values,
        typical=typical,
        amount=columns["amount"],
        display=stored.display,
        unknown=unknown,
    )
    probabilities = np.array([e.probability for e in explained])
    grades = grade(probabilities)
    return [
        RecordScore(
            deal_id=str(record["deal_id"]),
            as_of=as_of,
            probability=float(probabilities[i]),
            grade=str(grades[i]),
            new_to_store=tuple(new[i]),
            explanation=explained[i],
        )
        for i, record in enumerate(records)
    ]


def _previous(
    tables: CrmTables,
    scorer: Scorer,
    deal_ids: pd.Series,
    as_of: pd.Timestamp,
    context: DealContext,
) -> dict[str, float]:
    """Probabilities a week earlier for the deals that were open then."""
    earlier = set(open_deal_ids(tables, as_of))
    ids = [d for d in deal_ids if d in earlier]
    if not ids:
        return {}
    frame = deal_features(tables, pd.DataFrame({"deal_id": ids, "as_of": as_of}), context=context)
    return dict(zip(ids, scorer.probability(scorer.coded(frame)).tolist(), strict=True))


@dataclass(frozen=True)
class DealExplainer:
    """The serving champion, ready to explain: its scorer and the yardsticks of won deals."""

    scorer: Scorer
    typical: pd.DataFrame
    model_name: str
    model_version: str
    features_off: Collection[str] = ()  # what the stored data cannot give (empty columns)
    below_bar: tuple[str, ...] = ()  # what it fails of the gate's bar, promoted with --force

    @property
    def model_label(self) -> str:
        return f"{self.model_name} v{self.model_version} (champion)"

    @property
    def forced(self) -> str | None:
        """Said beside its scores when the champion was promoted over the gate's bar."""
        from forecast.training.registry import forced_sentence

        return forced_sentence(self.model_name, self.model_version, self.below_bar)

    @property
    def no_actions(self) -> str | None:
        return no_deal_actions(self.scorer, self.features_off)


def no_deal_actions(scorer: Scorer, features_off: Collection[str]) -> str | None:
    """Why a deal-win model can recommend no action to any deal: the stored data gives none of
    the features the catalogue's actions act on (`features_off`, as
    `forecast.features.deal_schema.unavailable_features` says: an export without activities,
    next steps, stage history or expected close dates); None when some action applies."""
    read = [name for name in scorer.names if name not in features_off]
    return why_no_actions(read, load_catalogue(), "deal")


def won_deal_yardsticks(
    tables: CrmTables,
    *,
    as_of: pd.Timestamp,
    client: Client | None = None,
    parts: Path | None = None,
    context: DealContext | None = None,
) -> pd.DataFrame:
    """What won deals showed at each stage over the year before `as_of` (closed by then).
    With a Dask `client` and `parts` (a store in parts, its version folder), the snapshots are
    made by the workers reading their parts (`tables` then hold `CONTEXT_TABLES`; `context`:
    `own_context` when already made)."""
    dates = snapshot_dates(as_of - pd.Timedelta(days=YARDSTICK_DAYS), as_of)
    if client is not None and parts is not None:
        known = partial(_won_known_by, as_of=as_of)
        _, frames = deal_frames_of_parts(client, parts, tables, dates, known, context=context)
        won = pd.concat(frames, ignore_index=True)  # medians: the rows' order does not matter
    else:
        won = _won_known_by(training_frame(tables, dates), tables, as_of)
    return typical_of_won(won, DEAL_FEATURES)


def _won_known_by(frame: pd.DataFrame, tables: CrmTables, as_of: pd.Timestamp) -> pd.DataFrame:
    """The snapshots of deals won and closed by `as_of`."""
    closed_at = tables.deals.set_index("deal_id")["closed_at"]
    known = closed_at.reindex(frame["deal_id"].to_numpy()).to_numpy() <= as_of.to_datetime64()
    return frame[known & (frame["won"] == 1).to_numpy()]


def load_deal_explainer(
    tables: CrmTables,
    *,
    as_of: pd.Timestamp,
    client: Client | None = None,
    parts: Path | None = None,
    context: DealContext | None = None,
) -> DealExplainer:
    """The deal-win champion from the registry, with yardsticks from the stored CRM (by the
    workers of `client` reading a store in `parts`, when given: `won_deal_yardsticks`).

    Raises:
        forecast.training.registry.RegistryError: no champion yet.
    """
    from forecast.data.doctor import no_win_model
    from forecast.training.registry import (
        RegistryError,
        champion_version,
        load_champion,
        no_champion,
        served_below_bar,
    )
    from forecast.training.win_task import MODEL_NAME

    version = champion_version(MODEL_NAME)
    if version is None:
        if why := no_win_model(tables):
            raise RegistryError(f"{MODEL_NAME} has no champion, and {why}")
        raise RegistryError(no_champion(MODEL_NAME, "forecast train win"))
    model = load_champion(MODEL_NAME, version)  # the version named, even if promoted since
    typical = won_deal_yardsticks(tables, as_of=as_of, client=client, parts=parts, context=context)
    return DealExplainer(
        scorer=scorer_for(model, model_features(model, DEAL_FEATURES)),
        typical=typical,
        model_name=MODEL_NAME,
        model_version=version,
        below_bar=tuple(served_below_bar(MODEL_NAME, version)),
        # a store in parts is not in this process: what it lacks is not checked here
        features_off=(
            context.unavailable
            if context is not None
            else (() if parts is not None else tuple(unavailable_features(tables)))
        ),
    )


SAMPLE_ROWS = 64  # stored rows a served model is checked on


def stored_sample(
    tables: CrmTables,
    *,
    definition: Definition | None = None,
    context: DealContext | None = None,
    rows: int = SAMPLE_ROWS,
) -> pd.DataFrame:
    """Feature rows at the store's as-of of up to `rows` open deals (or, given a churn
    `definition`, of the accounts it scores), spread evenly over the book: what a served model
    is checked on before it serves."""
    as_of = tables.as_of

    def spread(n: int) -> np.ndarray:  # up to `rows` positions evenly over n
        return np.unique(np.linspace(0, n - 1, min(rows, n)).astype(int))

    if definition is None:
        ids = open_deal_ids(tables, as_of)
        snapshots = pd.DataFrame({"deal_id": ids.iloc[spread(len(ids))].to_numpy(), "as_of": as_of})
        return deal_features(tables, snapshots, context=context)
    scored = definition.snapshots(tables, [as_of]).reset_index(drop=True)
    return definition.featurize(tables, scored.iloc[spread(len(scored))].reset_index(drop=True))
