"""What a CRM's data supports: which models can be trained, what is off and why, what looks wrong.

`forecast data doctor` prints this for the store or for an export before it is imported, so a
person learns in one screen what to add to the export (or to the mapping) before training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from forecast.data.derive import history_is_derived
from forecast.data.tables import CrmTables
from forecast.features.deal_schema import unavailable_features
from forecast.training.leakage import screen_columns


@dataclass(frozen=True)
class Diagnosis:
    """The doctor's findings; `blockers` non-empty means `forecast train win` would refuse,
    `blocked` that nothing the export is made for can be trained (`forecast data doctor` exits
    1)."""

    as_of: str
    rows: dict[str, int]
    deals_span: tuple[str | None, str | None]
    history: str  # recorded | derived | none
    closed: dict[str, int]
    cycle_days: dict[str, float | None]  # quantiles of created -> closed (None: no closes)
    win_rate_by_quarter: dict[str, float]
    features_off: dict[str, str]
    suspicious_columns: list[str]
    trainable: dict[str, str]  # model -> "yes" or why not
    blockers: list[str]

    @property
    def blocked(self) -> bool:
        """Whether a model the export is made for cannot be trained: deal win with closed
        deals to learn from blocked, or no model at all (an orders-only export's win blockers
        block nothing)."""
        no_deals = self.closed["won"] + self.closed["lost"] == 0
        no_churn = self.trainable["churn"].startswith("no")
        return (bool(self.blockers) and not no_deals) or (no_deals and no_churn)

    def to_dict(self) -> dict:
        return asdict(self) | {"blocked": self.blocked}


def diagnose(tables: CrmTables) -> Diagnosis:
    """Everything `forecast data doctor` reports about `tables`."""
    deals = tables.deals
    closed = deals[deals["outcome"].isin(("won", "lost"))]
    counts = {o: int((deals["outcome"] == o).sum()) for o in ("won", "lost", "open")}
    cycle = (closed["closed_at"] - closed["created_at"]).dt.total_seconds() / 86400
    quarters = closed["closed_at"].dt.to_period("Q").astype(str)
    by_quarter = (closed["outcome"] == "won").groupby(quarters.to_numpy()).mean()
    suspects = [str(s) for s in screen_columns(tables)]
    blockers = win_blockers(tables, suspects)
    churn = _churn_support(tables)
    absent = not_in_the_data(tables)
    history = (
        "none"
        if not len(tables.deal_history)
        else "derived"
        if history_is_derived(tables.deal_history)
        else "recorded"
    )
    start, end = deals["created_at"].min(), deals["created_at"].max()
    return Diagnosis(
        as_of=f"{tables.as_of:%Y-%m-%d}",
        rows={name: len(frame) for name, frame in tables.items()},
        deals_span=(_day(start), _day(end)),
        history=history,
        closed=counts,
        cycle_days={
            f"p{int(q * 100)}": round(float(cycle.quantile(q)), 1) if len(cycle) else None
            for q in (0.1, 0.5, 0.9)
        },
        win_rate_by_quarter={k: round(float(v), 3) for k, v in by_quarter.items()},
        features_off=unavailable_features(tables),
        suspicious_columns=suspects,
        trainable={
            "win": "yes" if not blockers else "no: " + "; ".join(blockers),
            "churn": churn,
            "revenue forecast": _revenue_verdict(absent, blockers),
        },
        blockers=blockers,
    )


def win_blockers(tables: CrmTables, suspects: list[str] | None = None) -> list[str]:
    """What keeps `forecast train win` from training on `tables`, by training's own checks
    before any fit: too few closed deals, too few of them open at a snapshot, and the leak
    guard's `suspects` (`screen_columns`, read here when not given)."""
    from forecast.training.task import NotEnoughDataError
    from forecast.training.win_task import MIN_CLOSED_PER_CLASS, check_trainable

    if suspects is None:
        suspects = [str(s) for s in screen_columns(tables)]
    guard = [f"leak guard: {s}" for s in suspects]
    deals = tables.deals
    won, lost = (int((deals["outcome"] == o).sum()) for o in ("won", "lost"))
    if won < MIN_CLOSED_PER_CLASS or lost < MIN_CLOSED_PER_CLASS:
        return [
            f"{won} won and {lost} lost deals: at least {MIN_CLOSED_PER_CLASS} of each are "
            "needed (export more closed deals)",
            *guard,
        ]
    try:
        check_trainable(tables)
    except NotEnoughDataError as err:
        return [str(err), *guard]
    return guard


def no_win_model(tables: CrmTables) -> str | None:
    """Why no deal-win model can be trained on `tables` (said instead of "train one"), or
    None when one can."""
    if blockers := win_blockers(tables):
        return (
            "no deal-win model can be trained on the stored data: " + "; ".join(blockers)
            + " (`forecast data doctor` lists what the export lacks)"
        )  # fmt: skip
    return None


def _revenue_verdict(absent: dict[str, str], win_blockers: list[str]) -> str:
    """The bookings forecast adds up amounts and scores the open deals with the deal-win
    model: without either it cannot run."""
    if "revenue" in absent:
        return f"no: {absent['revenue']}"
    if win_blockers:
        return "no: it scores the open deals with the deal-win model, which cannot be trained here"
    return "yes"


def not_in_the_data(tables: CrmTables) -> dict[str, str]:
    """What the export cannot give at all, each with why: `win` (no closed deals to learn
    from), `churn` (no recurring revenue and no orders with customers), `revenue` (no deal with
    an amount to add up). Cheap: the service asks it on every store load. An empty answer does
    not promise training succeeds (`diagnose` says more)."""
    out: dict[str, str] = {}
    deals = tables.deals
    if why := _no_churn_data(tables):
        out["churn"] = why
    if not deals["outcome"].isin(("won", "lost")).any():
        out["win"] = "the export has no closed deals to learn from" + (
            " (churn can be defined from what it holds)" if "churn" not in out else ""
        )
    if not len(deals):
        out["revenue"] = "the export has no deals: a bookings forecast adds up deals' amounts"
    elif not deals["amount"].notna().any():
        out["revenue"] = (
            "no stored deal carries an amount (the mapping leaves `deals.amount` out, or the "
            "column is empty): a bookings forecast adds up deals' amounts; map the amount "
            "column and import again"
        )
    return out


def no_forecast(absent: dict[str, str]) -> str | None:
    """Why no bookings forecast can be made, from `not_in_the_data`'s answer; None: it can."""
    why = absent.get("revenue")
    return None if why is None else f"no bookings forecast from the stored data: {why}"


def _no_churn_data(tables: CrmTables) -> str | None:
    """Why no churn can be defined from `tables` (`resolve`'s words), or None; only what the
    definition needs is read (a second on the default world's facts, none here)."""
    from forecast.training.churn_task import ChurnFacts, ChurnParams, resolve
    from forecast.training.task import NotEnoughDataError

    try:  # a horizon given: no purchase gaps are read
        resolve(ChurnParams(horizon_days=1), ChurnFacts.sources(tables))
    except NotEnoughDataError as err:
        return str(err)
    return None


def _churn_support(tables: CrmTables) -> str:
    """Which churn the export supports, or why `forecast train churn` would refuse
    (`check_trainable`: the same checks, on the labels alone)."""
    from forecast.training.churn_task import check_trainable
    from forecast.training.task import NotEnoughDataError

    try:
        params = check_trainable(tables)
    except NotEnoughDataError as err:
        return f"no: {err}"
    source = "recurring revenue" if params.definition == "subscription" else "orders"
    return f"yes: {params.definition} churn ({source}; {params.horizon_days}-day horizon)"


def _day(value: pd.Timestamp) -> str | None:
    return None if pd.isna(value) else f"{value:%Y-%m-%d}"
