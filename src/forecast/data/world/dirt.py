"""Untidy but valid data, as real exports are."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables
from forecast.data.world.columns import id_column


def add_dirt(rng: np.random.Generator, tables: CrmTables, share: float) -> CrmTables:
    """Untidy but valid: blank optional fields, double-logged touches, late stage updates."""
    accounts = tables.accounts.copy()
    accounts.loc[rng.random(len(accounts)) < share, "employees"] = pd.NA
    accounts.loc[rng.random(len(accounts)) < share, "name"] = pd.NA
    deals = tables.deals.copy()
    deals.loc[rng.random(len(deals)) < share, "discount"] = np.nan
    acts = tables.activities
    doubled = acts[rng.random(len(acts)) < share].copy()
    doubled["activity_id"] = id_column("Y", np.arange(1, len(doubled) + 1), 8).to_numpy()
    acts = pd.concat([acts, doubled], ignore_index=True)
    hist = tables.deal_history.copy()
    nxt = hist.groupby("deal_id", sort=False)["changed_at"].shift(-1)
    is_first = ~hist["deal_id"].duplicated()
    gap = (nxt - hist["changed_at"]).fillna(pd.Timedelta(0))
    late = (~is_first) & nxt.notna() & (rng.random(len(hist)) < share)
    delay = (gap * rng.uniform(0.1, 0.5, len(hist))).dt.floor("s")
    hist.loc[late, "changed_at"] = hist.loc[late, "changed_at"] + delay[late]
    hist.loc[rng.random(len(hist)) < share, "next_step"] = pd.NA
    hist = hist.drop_duplicates(["deal_id", "changed_at"], keep="last")
    return CrmTables.from_frames(
        {
            **dict(tables.items()),
            "accounts": accounts,
            "deals": deals,
            "activities": acts,
            "deal_history": hist,
        },
        as_of=tables.as_of,
    )
