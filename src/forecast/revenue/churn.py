"""Churn in revenue terms: revenue at risk by account and node, and churn probabilities for the
revenue forecast's renewals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from forecast.data.tables import CrmTables
from forecast.features.accounts import (
    ACCOUNT_FEATURES,
    HORIZON_DAYS,
    account_features,
    churn_snapshot_dates,
    churn_training_frame,
)
from forecast.features.asof import tables_as_of
from forecast.model import (
    TreeParams,
    calibrate,
    make_lightgbm,
    model_input,
)
from forecast.training.churn import churn_probability
from forecast.training.churn_task import LABEL, SUBSCRIPTION, Definition, definition_of

if TYPE_CHECKING:
    from distributed import Client

    from forecast.cluster import Progress

# an account feature frame and its year's revenue -> columns for each row (reasons, actions)
AccountReasons = Callable[[pd.DataFrame, np.ndarray], dict[str, list]]

AT_RISK_LEVELS = {"rep": "owner_rep_id", "team": "team", "region": "region"}


def owner_columns(
    account_ids: Sequence[object] | np.ndarray, tables: CrmTables
) -> dict[str, np.ndarray]:
    """Each account's owner rep, the owner's team, and its region: the owner's, or for an
    account no rep owns (a retailer's customer) the account's own (the country a mapping
    gives it), so revenue at risk still adds up by region where there is no sales team."""
    accounts = tables.accounts.set_index("account_id")
    reps = tables.reps.set_index("rep_id")[["team", "region"]]
    ids = np.asarray(account_ids, dtype=object)
    owner = accounts["owner_rep_id"].reindex(ids).to_numpy()
    own_region = accounts["region"].reindex(ids).to_numpy()
    rep_region = reps["region"].reindex(owner).to_numpy()
    unowned = pd.isna(owner)
    return {
        "owner_rep_id": owner,
        "team": reps["team"].reindex(owner).to_numpy(),
        "region": np.where(unowned, own_region, rep_region),
    }


LIVE_QUARTERS_AHEAD = 1  # the live forecast's renewals use the churn model this far ahead


def revenue_at_risk(
    tables: CrmTables,
    model: BaseEstimator,
    *,
    as_of: pd.Timestamp | str,
    client: Client | None = None,
    progress: Progress | None = None,
    reasons: AccountReasons | None = None,
) -> pd.DataFrame:
    """Churn probability x a year's revenue for each account the model can score at `as_of`;
    the accounts' features by the cluster of a Dask `client` when given (the same numbers);
    with `reasons`, the columns it gives each account (its drivers and retention action).

    Under subscription churn: accounts billed recurring revenue in the last month ended by
    `as_of`; ARR is 12 x that month's recurring bill (`mrr`). Under inactivity churn: customers
    with a purchase in the year before `as_of`; `arr` is their spend over that year net of
    returns (the spend a churned customer takes away), `mrr` empty. Largest at risk first.

    Returns:
        account_id, as_of, owner_rep_id, team, region (`owner_columns`), segment, mrr, arr,
        churn_probability, revenue_at_risk.
    """
    stamp = pd.Timestamp(as_of)
    definition = definition_of(model)
    frame = definition.features_at(tables, stamp, client, progress)
    subscription = definition is SUBSCRIPTION
    out = pd.DataFrame(
        {
            "account_id": frame["account_id"].to_numpy(),
            "as_of": stamp,
            **owner_columns(frame["account_id"].to_numpy(), tables),
            "segment": definition.segments(frame).to_numpy(),
            "mrr": frame["mrr"].to_numpy(dtype=float) if subscription else np.nan,
        }
    )
    out["arr"] = definition.yearly_revenue(frame)
    out["churn_probability"] = churn_probability(model, frame) if len(frame) else []
    out["revenue_at_risk"] = out["churn_probability"] * out["arr"]
    if reasons is not None:
        out = out.assign(**reasons(frame, out["arr"].to_numpy()))
    return _largest_first(out)


def revenue_at_risk_of_parts(
    client: Client,
    folder: Path,
    shared: CrmTables,
    model: BaseEstimator,
    *,
    as_of: pd.Timestamp | str,
    progress: Progress | None = None,
    reasons: AccountReasons | None = None,
) -> pd.DataFrame:
    """`revenue_at_risk` of the store in parts at `folder` (its version folder), each part's
    accounts by a worker that reads the part itself: an account's features read only its own
    rows, which its part holds. `shared`: the reps and products, which every part refers to
    (`read_version(folder, ("reps", "products"))`). The same rows as one process's."""
    from forecast.features.on_dask import ACCOUNT_TABLES, on_parts

    refers = {"reps": shared.reps, "products": shared.products}
    task = (_at_risk_of_part, model, pd.Timestamp(as_of), refers, reasons)
    made = on_parts(client, folder, ACCOUNT_TABLES, *task, progress=progress)
    return _largest_first(pd.concat(made, ignore_index=True))


def _at_risk_of_part(
    own: CrmTables,
    model: BaseEstimator,
    as_of: pd.Timestamp,
    refers: dict[str, pd.DataFrame],
    reasons: AccountReasons | None,
) -> pd.DataFrame:
    return revenue_at_risk(own.replace(**refers), model, as_of=as_of, reasons=reasons)


def _largest_first(at_risk: pd.DataFrame) -> pd.DataFrame:
    """Largest revenue at risk first; ties by account id (the same order however made)."""
    return at_risk.sort_values(
        ["revenue_at_risk", "account_id"], ascending=[False, True], kind="stable", ignore_index=True
    )


def revenue_at_risk_by(at_risk: pd.DataFrame, level: str) -> pd.DataFrame:
    """`revenue_at_risk` rows summed by `rep`, `team` or `region` (`owner_columns`), largest
    first."""
    if level not in AT_RISK_LEVELS:
        raise ValueError(f"level must be one of {sorted(AT_RISK_LEVELS)}, not {level!r}")
    column = AT_RISK_LEVELS[level]
    keys = at_risk[column].fillna("(none)")
    grouped = at_risk.groupby(keys).agg(
        accounts=("account_id", "size"),
        arr=("arr", "sum"),
        revenue_at_risk=("revenue_at_risk", "sum"),
        expected_churned_accounts=("churn_probability", "sum"),
    )
    grouped["share_at_risk"] = grouped["revenue_at_risk"] / grouped["arr"].where(grouped["arr"] > 0)
    grouped = grouped.rename_axis(level).reset_index()
    return grouped.sort_values("revenue_at_risk", ascending=False, ignore_index=True)


ChurnScorer = Callable[[pd.DataFrame], np.ndarray]

"""Account feature rows -> P(churn within the horizon) per row (a model, or a served scorer)."""


@dataclass(frozen=True)
class ChurnRenewals:
    """A `renewal_probability` for `forecast.revenue`: P(the account renews) per decision row.

    Called with pending renewal decisions (columns account_id, segment, month: the decision's
    month, at whose end it falls, and as_of), it scores each account with `churn` at that row's
    as_of, from what `tables` recorded by then. `churn` gives P(churn from the first month not
    yet seen to as_of + `horizon_days`); it is turned into one decision's probability:

    - monthly (SMB) renewals: that span holds one decision per month start in it (four from a
      mid-month as_of with 90 days), assumed alike, so P(renew one) = (1 - p) ** (1 / count);
    - term renewals: the account is scored as if its contract ended at the decision (days to
      contract end = days to the decision, which is negative for the decision at the start of
      as_of's month, still unseen; capped inside the horizon), and P(renew) = 1 - p. Decisions
      beyond the horizon are an extrapolation: health as seen today.

    `source` names the model in the forecast's account of itself.
    """

    churn: ChurnScorer
    tables: CrmTables
    source: str = "churn model"
    horizon_days: int = HORIZON_DAYS

    def __call__(self, steps: pd.DataFrame) -> np.ndarray:
        if steps.empty:
            return np.zeros(0)
        rows = steps.reset_index(drop=True)
        pairs = rows[["account_id", "as_of"]].drop_duplicates(ignore_index=True)
        frame = account_features(self.tables, pairs)
        keyed = frame.set_index(["account_id", "as_of"])
        at = keyed.reindex(pd.MultiIndex.from_frame(rows[["account_id", "as_of"]]))
        as_of = pd.to_datetime(rows["as_of"])
        decision_at = pd.to_datetime(rows["month"]) + pd.offsets.MonthBegin(1)
        days = (decision_at - as_of).dt.days.clip(upper=self.horizon_days - 1)
        monthly = (rows["segment"] == "smb").to_numpy()
        at = at.reset_index()
        at["days_to_contract_end"] = np.where(
            monthly, at["days_to_contract_end"], days.to_numpy(dtype=float)
        )
        p = np.asarray(self.churn(at), dtype=float)
        per_span = _month_starts(as_of, self.horizon_days)
        return np.where(monthly, (1 - p) ** (1 / per_span), 1 - p)


def renewal_probability_from(model: BaseEstimator, tables: CrmTables) -> ChurnRenewals:
    """`ChurnRenewals` from a fitted churn model (see `churn_probability`)."""
    return ChurnRenewals(lambda frame: churn_probability(model, frame), tables)


def live_renewals(
    churn: ChurnScorer,
    tables: CrmTables,
    *,
    quarter: str,
    as_of: pd.Timestamp,
    source: str,
    definition: Definition = SUBSCRIPTION,
) -> ChurnRenewals | None:
    """The renewals of the live forecast from the churn champion (of `definition`), for the
    quarter of as_of and the next (as the backtest's `simulation_churn`); None further out,
    where the segment rates stand: health seen today says little about a renewal a year away.
    None for an inactivity model too: it knows nothing of subscriptions and their renewals."""
    if definition is not SUBSCRIPTION:
        return None
    ahead = pd.Period(quarter, "Q").ordinal - pd.Timestamp(as_of).to_period("Q").ordinal
    return ChurnRenewals(churn, tables, source) if 0 <= ahead <= LIVE_QUARTERS_AHEAD else None


def _month_starts(as_of: pd.Series, horizon_days: int) -> np.ndarray:
    """Month starts from the start of each as_of's month to as_of + horizon_days: the monthly
    renewal decisions a churn label's span holds."""
    first = as_of.dt.year * 12 + as_of.dt.month - 1
    end = as_of + pd.Timedelta(days=horizon_days)
    last = end.dt.year * 12 + end.dt.month - 1
    return (last - first + 1).to_numpy(dtype=float)


def fit_churn_renewal(
    tables: CrmTables,
    cutoff: pd.Timestamp,
    *,
    seed: int = 0,
    tree: TreeParams | None = None,
) -> Callable[[pd.DataFrame], np.ndarray]:
    """A `renewal_probability` from a churn model trained on what was known at `cutoff` only.

    The CRM is cut at the cutoff (`tables_as_of`), so churn labels that were not yet knowable
    then are left out; the last three monthly snapshot dates with labels calibrate, the rest
    train. For backtests of the revenue forecast: each quarter gets the model its start allowed.
    """
    known = tables_as_of(tables, cutoff)
    frame = churn_training_frame(
        known, churn_snapshot_dates(known.deals["created_at"].min(), cutoff)
    )
    dates = np.sort(frame["as_of"].unique())
    if len(dates) < 6 or frame[LABEL].nunique() < 2:
        raise ValueError(f"not enough churn history before {cutoff:%Y-%m-%d} to train a model")
    later = frame["as_of"] >= dates[-3]
    model = make_lightgbm(
        ACCOUNT_FEATURES, params=tree or TreeParams(n_estimators=200, n_jobs=1), seed=seed
    )
    model.fit(
        model_input(frame[~later], ACCOUNT_FEATURES), frame.loc[~later, LABEL].to_numpy(dtype=int)
    )
    calibrated = calibrate(
        model,
        model_input(frame[later], ACCOUNT_FEATURES),
        frame.loc[later, LABEL].to_numpy(dtype=int),
        frame.loc[later, "account_id"].to_numpy(),
    ).model
    return renewal_probability_from(calibrated, tables)
