"""Accounts scored for churn with their reasons, and revenue at risk summed by owner and node."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from forecast.data.tables import CrmTables
from forecast.explain.catalogue import load_catalogue
from forecast.explain.reasons import explain, typical_of_retained
from forecast.explain.scorers import Scorer
from forecast.explain.scoring import YARDSTICK_DAYS
from forecast.explain.wording import Explanation
from forecast.features.accounts import HORIZON_DAYS, account_snapshots, churn_snapshot_dates

if TYPE_CHECKING:  # the training module: loaded when used
    from pathlib import Path

    from distributed import Client

    from forecast.training.churn_task import Definition


def retained_account_yardsticks(
    tables: CrmTables,
    *,
    as_of: pd.Timestamp,
    definition: Definition | None = None,
    client: Client | None = None,
    parts: Path | None = None,
) -> pd.DataFrame | None:
    """What accounts that renewed (stayed, under `definition`: default subscription) showed
    over the year before their outcome was known by `as_of` (a snapshot's outcome is known a
    churn horizon after it); None when no feature of the definition has a settled direction
    (there is nothing to hold an account to). With a Dask `client` and `parts` (a store in
    parts, its version folder), the snapshots are made by the workers reading their parts
    (`tables` then need hold only the reps and products)."""
    # the training module: loaded when used
    from forecast.training.churn_task import SUBSCRIPTION, churn_facts

    definition = definition or SUBSCRIPTION
    entries = load_catalogue().account
    if not any(entries[f.name].helps for f in definition.features if f.name in entries):
        return None
    known_by = as_of - pd.Timedelta(days=HORIZON_DAYS)
    dates = churn_snapshot_dates(known_by - pd.Timedelta(days=YARDSTICK_DAYS), known_by)
    facts = churn_facts(tables, client, parts)
    frame = definition.labelled(
        tables, list(dates), HORIZON_DAYS, facts, client=client, parts=parts
    )
    return typical_of_retained(frame, definition.features)  # medians: any order of rows


@dataclass(frozen=True)
class AccountScore:
    """An account's churn risk at `as_of`: drivers (reasons) and retention actions."""

    account_id: str
    as_of: pd.Timestamp
    owner_rep_id: str | None
    segment: str | None
    arr: float  # a year's revenue: 12 x the last monthly bill, or (inactivity) a year's spend
    churn_probability: float
    revenue_at_risk: float
    explanation: Explanation


def billed_account_ids(tables: CrmTables, as_of: pd.Timestamp) -> pd.Series:
    """Accounts billed recurring revenue in the last month ended by `as_of`."""
    return account_snapshots(tables, [as_of])["account_id"]


def score_accounts(
    tables: CrmTables,
    scorer: Scorer,
    *,
    as_of: pd.Timestamp | None = None,
    account_ids: Sequence[str] | None = None,
    typical: pd.DataFrame | None = None,
) -> list[AccountScore]:
    """Churn risk at `as_of` (default: the export's) of the accounts the scorer's churn
    definition scores, largest revenue at risk first: under subscription churn the accounts
    billed recurring revenue in the last ended month, under inactivity churn the customers with
    a purchase in the year before.

    Raises:
        KeyError: a requested account is unknown, or not among those scored at `as_of`.
    """
    from forecast.training.churn_task import definition_for  # the training module: loaded when used

    definition = definition_for(scorer.names)
    as_of = pd.Timestamp(as_of) if as_of is not None else tables.as_of
    scorable = definition.snapshots(tables, [as_of])["account_id"]
    wanted = scorable if account_ids is None else pd.Series(list(account_ids), dtype="string")
    missing = sorted(set(wanted) - set(scorable))
    if missing:
        raise KeyError(
            f"not scored at {as_of:%Y-%m-%d %H:%M} (the model scores "
            f"{definition.population}): {', '.join(missing[:5])}"
        )
    frame = definition.featurize(
        tables, pd.DataFrame({"account_id": wanted.to_numpy(), "as_of": as_of})
    )
    arr = definition.yearly_revenue(frame)
    explained = explain(scorer, frame, amount=arr, model="account", typical=typical)
    known = tables.accounts.set_index("account_id").reindex(frame["account_id"].to_numpy())
    # the segment as `forecast score accounts` writes it (a customer with none: its purchase band)
    owner, segment = known["owner_rep_id"].to_numpy(), definition.segments(frame).to_numpy()
    scores = [
        AccountScore(
            account_id=str(account_id),
            as_of=as_of,
            owner_rep_id=owner[i] if isinstance(owner[i], str) else None,
            segment=segment[i] if isinstance(segment[i], str) else None,
            arr=float(arr[i]),
            churn_probability=e.probability,
            revenue_at_risk=float(e.probability * arr[i]),
            explanation=e,
        )
        for i, (account_id, e) in enumerate(zip(frame["account_id"], explained, strict=True))
    ]
    return sorted(scores, key=lambda s: -s.revenue_at_risk)


def at_risk_by_owner(scores: Sequence[AccountScore]) -> dict[str, float]:
    """Revenue at risk summed by the accounts' owner rep (unowned accounts left out)."""
    totals: dict[str, float] = {}
    for s in scores:
        if s.owner_rep_id is not None:
            totals[s.owner_rep_id] = totals.get(s.owner_rep_id, 0.0) + s.revenue_at_risk
    return totals


def revenue_at_risk_totals(
    scores: Sequence[AccountScore], tables: CrmTables, level: str
) -> list[dict[str, Any]]:
    """Revenue at risk of these scored accounts summed by their owner's `rep`, `team` or
    `region` (`forecast.revenue.churn.revenue_at_risk_by`), largest first: one dict per `name`,
    with accounts, arr, revenue_at_risk, share_at_risk and expected_churned_accounts."""
    from forecast.revenue.churn import owner_columns, revenue_at_risk_by  # loaded when used

    ids = [s.account_id for s in scores]
    frame = pd.DataFrame(
        {
            "account_id": ids,
            **owner_columns(ids, tables),
            "arr": [s.arr for s in scores],
            "churn_probability": [s.churn_probability for s in scores],
            "revenue_at_risk": [s.revenue_at_risk for s in scores],
        }
    )
    totals = revenue_at_risk_by(frame, level).rename(columns={level: "name"})
    return totals.astype(object).where(totals.notna(), None).to_dict(orient="records")
