"""A generated transactional business for the inactivity-churn tests: customers who buy by the
order and, after any purchase, may drop out for good (a buy-till-you-die process, as BG/NBD
assumes), with returns on their own dates and lines without a customer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables

START = pd.Timestamp("2024-01-01")


def make_orders(
    n_customers: int = 1500, *, seed: int = 0, days: int = 730
) -> tuple[CrmTables, pd.Series]:
    """The orders-only CRM and each customer's dropout time (NaT: still alive at the end).

    Purchase rates are gamma distributed (a mean of one order in 40 days), dropout after each
    purchase beta distributed (mean 0.15); one order in ten is partly returned 1-40 days later
    under its own `C` order id; 3 % of lines have no customer.
    """
    rng = np.random.default_rng(seed)
    end = START + pd.Timedelta(days=days)
    rows, dead_at = [], {}
    for k in range(n_customers):
        customer = f"C{k:05d}"
        rate = rng.gamma(2.0, 1 / 80)
        dropout = rng.beta(1.5, 8.5)
        t = rng.uniform(0, days * 0.8)
        dead_at[customer] = pd.NaT
        n = 0
        while t < days:
            n += 1
            order = f"{customer}-{n:04d}"
            at = START + pd.Timedelta(days=t)
            value = rng.lognormal(np.log(150), 0.7)
            for share in rng.dirichlet(np.ones(rng.integers(1, 4))):
                rows.append((order, customer, at, f"P{rng.integers(40):02d}", share * value))
            if rng.random() < 0.1:
                back = at + pd.Timedelta(days=float(rng.uniform(1, 40)))
                if back < end:
                    rows.append((f"C{order}", customer, back, "P00", -0.3 * value))
            if rng.random() < dropout:
                dead_at[customer] = at
                break
            t += rng.exponential(1 / rate)
    lines = pd.DataFrame(rows, columns=["order_id", "account_id", "at", "product_id", "amount"])
    anonymous = rng.random(len(lines)) < 0.03
    lines.loc[anonymous, "account_id"] = None
    lines = lines.sort_values("at", ignore_index=True)
    tables = CrmTables.from_frames({"orders": lines}, as_of=end)
    return tables, pd.Series(dead_at, name="dead_at")
