"""Subscriptions: monthly bills, account health, signals and renewal decisions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.data.world.columns import id_column, sigmoid
from forecast.data.world.deals import Calendar
from forecast.data.world.parameters import PRODUCTS


def account_creation(rng: np.random.Generator, accounts: dict, deals: dict) -> np.ndarray:
    """Accounts enter the CRM with (or before) their first deal."""
    first = np.full(accounts["n"], np.inf)
    np.minimum.at(first, deals["account"], deals["created"])
    return np.minimum(accounts["created_hint"], first - rng.uniform(0, 10, accounts["n"]))


def simulate_subscriptions(
    rng: np.random.Generator,
    cal: Calendar,
    accounts: dict,
    deals: dict,
    org: dict,
    *,
    horizon: int,
) -> dict:
    """Recurring revenue month by month: new and expanded subscriptions, health, renewals, churn.

    Only months that have ended by the as-of are recorded (a month's revenue is known once it
    has ended); signals and touches stop at the as-of.
    """
    n_months = int(cal.month_of(np.array([horizon]))[0])  # months fully ended by the as-of
    subscription = np.array([p[4] == "subscription" for p in PRODUCTS])
    sub_products = np.flatnonzero(subscription)
    sub_column = np.full(len(PRODUCTS), -1)
    sub_column[sub_products] = np.arange(len(sub_products))
    month_of = cal.month_of(deals["closed"])
    wins = deals["won"] & subscription[deals["product"]] & (deals["closed"] <= horizon)
    win_idx = np.flatnonzero(wins)
    win_month = month_of[win_idx]

    n_acc = accounts["n"]
    mrr = np.zeros((n_acc, len(sub_products)))
    active = np.zeros(n_acc, dtype=bool)
    renew_month = np.zeros(n_acc, dtype=np.int64)
    health = np.zeros(n_acc)
    drift = np.zeros(n_acc)
    smb = accounts["segment"] == 0
    rows: dict[str, list[np.ndarray]] = {
        k: [] for k in ("account", "product", "month", "amount", "contract_end")
    }
    sig: dict[str, list[np.ndarray]] = {k: [] for k in ("account", "t", "kind", "value")}
    touch: dict[str, list[np.ndarray]] = {k: [] for k in ("account", "t")}
    truth: dict[str, list[np.ndarray]] = {
        k: [] for k in ("account", "month", "health", "decision_prob")
    }
    renewals: dict[str, list[np.ndarray]] = {k: [] for k in ("account", "month", "value")}
    survey_phase = rng.integers(0, 3, n_acc)
    amount_final = deals["amount0"] * deals["scope_change"] * (1 - np.nan_to_num(deals["discount"]))
    # simulate on to the end of the next quarter: quotas need the renewals falling due there;
    # nothing after the as-of is recorded in the tables
    next_quarter = int(np.searchsorted(cal.quarter_starts, horizon, side="right")) + 1
    last_month = int(cal.month_of(np.array([cal.quarter_starts[next_quarter] - 1]))[0])
    for m in range(last_month + 1):
        new = win_idx[win_month == m]
        acc_new = deals["account"][new]
        starting = np.unique(acc_new[~active[acc_new]])
        health[starting] = rng.normal(0.4, 0.8, len(starting)) + accounts["loyalty"][starting]
        drift[starting] = rng.normal(0.0, 0.7, len(starting))
        renew_month[starting] = np.where(smb[starting], m, m + 12)
        active[starting] = True
        np.add.at(mrr, (acc_new, sub_column[deals["product"][new]]), amount_final[new] / 12)

        live = np.flatnonzero(active)
        health[live] += drift[live] / 12 + rng.normal(0, 0.12, len(live))
        h = health[live]
        month_start = cal.month_starts[m]
        month_days = cal.month_starts[m + 1] - month_start
        # revenue for the month, one row per subscribed product
        acc_rows, prod_rows = np.nonzero(mrr[live] > 0)
        rows["account"].append(live[acc_rows])
        rows["product"].append(sub_products[prod_rows])
        rows["month"].append(np.full(len(acc_rows), m))
        rows["amount"].append(np.round(mrr[live][acc_rows, prod_rows], 2))
        rows["contract_end"].append(np.maximum(renew_month[live][acc_rows], m) + 1)
        # evidence of health
        tickets = rng.poisson(0.5 * np.exp(-0.6 * h))
        t_idx = np.repeat(np.arange(len(live)), tickets)
        _append_signal(
            sig,
            live[t_idx],
            (month_start, month_days),
            rng,
            "support_ticket",
            np.clip(np.round(2 - 0.5 * h[t_idx] + rng.normal(0, 0.6, len(t_idx))), 1, 3),
        )
        surveyed = (m + survey_phase[live]) % 3 == 0
        s_idx = np.flatnonzero(surveyed)
        _append_signal(
            sig,
            live[s_idx],
            (month_start, month_days),
            rng,
            "satisfaction",
            np.clip(np.round(7 + 1.4 * h[s_idx] + rng.normal(0, 1, len(s_idx))), 0, 10),
        )
        _append_signal(
            sig,
            live,
            (month_start, month_days),
            rng,
            "usage",
            np.round(sigmoid(0.8 + 0.9 * h + rng.normal(0, 0.25, len(live))), 3),
        )
        late = np.flatnonzero(rng.random(len(live)) < sigmoid(-2.6 - 0.9 * h))
        _append_signal(
            sig,
            live[late],
            (month_start, month_days),
            rng,
            "payment_delay",
            np.round(rng.gamma(2, 8 + 6 * np.clip(-h[late], 0, None))),
        )
        touches = rng.poisson(0.9 * np.exp(0.45 * h) * org["diligence"].mean())
        k_idx = np.repeat(live, touches)
        touch["account"].append(k_idx)
        touch["t"].append(month_start + rng.random(len(k_idx)) * month_days)
        # renewal decisions at the month's end: SMB monthly, others at the term's end
        deciding = (renew_month[live] == m) | smb[live]
        prob = np.where(
            deciding,
            np.where(smb[live], sigmoid(-3.4 - 1.3 * h), sigmoid(-1.4 - 1.3 * h)),
            np.nan,
        )
        truth["account"].append(live)
        truth["month"].append(np.full(len(live), m))
        truth["health"].append(np.round(h, 4))
        truth["decision_prob"].append(prob)
        # what a renewal is worth as a booking: a year of the bill, or a month for SMB
        renewals["account"].append(live[deciding])
        renewals["month"].append(np.full(int(deciding.sum()), m))
        renewals["value"].append(
            mrr[live[deciding]].sum(axis=1) * np.where(smb[live[deciding]], 1, 12)
        )
        churn = live[deciding & (rng.random(len(live)) < np.nan_to_num(prob))]
        renewed = live[deciding & ~np.isin(live, churn) & ~smb[live]]
        renew_month[renewed] = m + 12
        active[churn] = False
        mrr[churn] = 0.0
    cat = {k: np.concatenate(v) if v else np.array([]) for k, v in rows.items()}
    return {
        "revenue": cat,
        "signals": {k: np.concatenate(v) for k, v in sig.items()},
        "touches": {k: np.concatenate(v) for k, v in touch.items()},
        "renewals": {k: np.concatenate(v) for k, v in renewals.items()},
        "truth": pd.DataFrame(
            {
                "account_id": id_column(
                    "A", accounts["number"][np.concatenate(truth["account"])], 6
                ),
                "month": np.concatenate(truth["month"]),
                "health": np.concatenate(truth["health"]),
                "decision_prob": np.concatenate(truth["decision_prob"]),
            }
        ),
        "n_months": n_months,
    }


def _append_signal(
    sig: dict,
    accounts: np.ndarray,
    when: tuple[float, float],
    rng: np.random.Generator,
    kind: str,
    values: np.ndarray,
) -> None:
    month_start, month_days = when
    sig["account"].append(accounts)
    sig["t"].append(month_start + rng.random(len(accounts)) * month_days)
    sig["kind"].append(np.full(len(accounts), kind, dtype=object))
    sig["value"].append(values.astype(float))
