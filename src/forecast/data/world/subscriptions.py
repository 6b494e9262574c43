"""Subscriptions: monthly bills, account health, signals and renewal decisions."""

from __future__ import annotations

from dataclasses import dataclass

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
    book = _Book.empty(accounts, len(sub_products), rng)
    amount_final = deals["amount0"] * deals["scope_change"] * (1 - np.nan_to_num(deals["discount"]))
    # simulate on to the end of the next quarter: quotas need the renewals falling due there;
    # nothing after the as-of is recorded in the tables
    next_quarter = int(np.searchsorted(cal.quarter_starts, horizon, side="right")) + 1
    last_month = int(cal.month_of(np.array([cal.quarter_starts[next_quarter] - 1]))[0])
    diligence = org["diligence"].mean()
    for m in range(last_month + 1):
        new = win_idx[win_month == m]
        book.open(rng, m, deals["account"][new], accounts["loyalty"])
        np.add.at(
            book.mrr, (deals["account"][new], sub_column[deals["product"][new]]),
            amount_final[new] / 12,
        )  # fmt: skip
        live = np.flatnonzero(book.active)
        book.health[live] += book.drift[live] / 12 + rng.normal(0, 0.12, len(live))
        h = book.health[live]
        month = (cal.month_starts[m], cal.month_starts[m + 1] - cal.month_starts[m])
        book.bill(live, m, sub_products)
        book.evidence(rng, live, h, month, m)
        touches = rng.poisson(0.9 * np.exp(0.45 * h) * diligence)
        k_idx = np.repeat(live, touches)
        book.touch["account"].append(k_idx)
        book.touch["t"].append(month[0] + rng.random(len(k_idx)) * month[1])
        book.decide(rng, live, h, m)
    return book.result(accounts, n_months)


@dataclass
class _Book:
    """The accounts' subscriptions as they run month by month, and the rows they leave."""

    mrr: np.ndarray  # account x subscription product: the monthly bill
    active: np.ndarray
    renew_month: np.ndarray
    health: np.ndarray
    drift: np.ndarray
    smb: np.ndarray
    survey_phase: np.ndarray
    rows: dict[str, list[np.ndarray]]
    sig: dict[str, list[np.ndarray]]
    touch: dict[str, list[np.ndarray]]
    truth: dict[str, list[np.ndarray]]
    renewals: dict[str, list[np.ndarray]]

    @classmethod
    def empty(cls, accounts: dict, n_products: int, rng: np.random.Generator) -> _Book:
        n_acc = accounts["n"]

        def lists(*keys: str) -> dict[str, list[np.ndarray]]:
            return {k: [] for k in keys}

        return cls(
            mrr=np.zeros((n_acc, n_products)),
            active=np.zeros(n_acc, dtype=bool),
            renew_month=np.zeros(n_acc, dtype=np.int64),
            health=np.zeros(n_acc),
            drift=np.zeros(n_acc),
            smb=accounts["segment"] == 0,
            rows=lists("account", "product", "month", "amount", "contract_end"),
            sig=lists("account", "t", "kind", "value"),
            touch=lists("account", "t"),
            truth=lists("account", "month", "health", "decision_prob"),
            renewals=lists("account", "month", "value"),
            survey_phase=rng.integers(0, 3, n_acc),
        )

    def open(
        self, rng: np.random.Generator, m: int, acc_new: np.ndarray, loyalty: np.ndarray
    ) -> None:
        """Accounts whose first subscription starts in month `m`: health, drift, renewal."""
        starting = np.unique(acc_new[~self.active[acc_new]])
        self.health[starting] = rng.normal(0.4, 0.8, len(starting)) + loyalty[starting]
        self.drift[starting] = rng.normal(0.0, 0.7, len(starting))
        self.renew_month[starting] = np.where(self.smb[starting], m, m + 12)
        self.active[starting] = True

    def bill(self, live: np.ndarray, m: int, sub_products: np.ndarray) -> None:
        """Revenue for the month, one row per subscribed product."""
        acc_rows, prod_rows = np.nonzero(self.mrr[live] > 0)
        self.rows["account"].append(live[acc_rows])
        self.rows["product"].append(sub_products[prod_rows])
        self.rows["month"].append(np.full(len(acc_rows), m))
        self.rows["amount"].append(np.round(self.mrr[live][acc_rows, prod_rows], 2))
        self.rows["contract_end"].append(np.maximum(self.renew_month[live][acc_rows], m) + 1)

    def evidence(
        self,
        rng: np.random.Generator,
        live: np.ndarray,
        h: np.ndarray,
        month: tuple[float, float],
        m: int,
    ) -> None:
        """Evidence of health: tickets, surveys, usage, late payments."""
        sig = self.sig
        tickets = rng.poisson(0.5 * np.exp(-0.6 * h))
        t_idx = np.repeat(np.arange(len(live)), tickets)
        _append_signal(
            sig, live[t_idx], month, rng, "support_ticket",
            np.clip(np.round(2 - 0.5 * h[t_idx] + rng.normal(0, 0.6, len(t_idx))), 1, 3),
        )  # fmt: skip
        s_idx = np.flatnonzero((m + self.survey_phase[live]) % 3 == 0)
        _append_signal(
            sig, live[s_idx], month, rng, "satisfaction",
            np.clip(np.round(7 + 1.4 * h[s_idx] + rng.normal(0, 1, len(s_idx))), 0, 10),
        )  # fmt: skip
        _append_signal(
            sig, live, month, rng, "usage",
            np.round(sigmoid(0.8 + 0.9 * h + rng.normal(0, 0.25, len(live))), 3),
        )  # fmt: skip
        late = np.flatnonzero(rng.random(len(live)) < sigmoid(-2.6 - 0.9 * h))
        _append_signal(
            sig, live[late], month, rng, "payment_delay",
            np.round(rng.gamma(2, 8 + 6 * np.clip(-h[late], 0, None))),
        )  # fmt: skip

    def decide(self, rng: np.random.Generator, live: np.ndarray, h: np.ndarray, m: int) -> None:
        """Renewal decisions at the month's end: SMB monthly, others at the term's end."""
        smb = self.smb
        deciding = (self.renew_month[live] == m) | smb[live]
        prob = np.where(
            deciding,
            np.where(smb[live], sigmoid(-3.4 - 1.3 * h), sigmoid(-1.4 - 1.3 * h)),
            np.nan,
        )
        self.truth["account"].append(live)
        self.truth["month"].append(np.full(len(live), m))
        self.truth["health"].append(np.round(h, 4))
        self.truth["decision_prob"].append(prob)
        # what a renewal is worth as a booking: a year of the bill, or a month for SMB
        self.renewals["account"].append(live[deciding])
        self.renewals["month"].append(np.full(int(deciding.sum()), m))
        self.renewals["value"].append(
            self.mrr[live[deciding]].sum(axis=1) * np.where(smb[live[deciding]], 1, 12)
        )
        churn = live[deciding & (rng.random(len(live)) < np.nan_to_num(prob))]
        renewed = live[deciding & ~np.isin(live, churn) & ~smb[live]]
        self.renew_month[renewed] = m + 12
        self.active[churn] = False
        self.mrr[churn] = 0.0

    def result(self, accounts: dict, n_months: int) -> dict:
        truth = self.truth
        return {
            "revenue": {k: np.concatenate(v) if v else np.array([]) for k, v in self.rows.items()},
            "signals": {k: np.concatenate(v) for k, v in self.sig.items()},
            "touches": {k: np.concatenate(v) for k, v in self.touch.items()},
            "renewals": {k: np.concatenate(v) for k, v in self.renewals.items()},
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
