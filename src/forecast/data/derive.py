"""What a deals-only export lacks, derived from what it has.

The most common CRM export holds one row per deal in its current or final state and no stage
history. The point-in-time features need a history, so one is written from the deals, marked
`origin = derived`, with only what the deals row can honestly say about the past:

- a creation row at `created_at`: still open, with the deal's amount and expected close (the
  only ones the export has; the leak guard checks whether they were filled in at the close);
  its stage is the deal's current stage while it is open and the first stage once it closed
  (the stage a closed deal was in before its close is not recorded anywhere);
- for a closed deal, the closing row at `closed_at`.

A deal closed at the very moment it was created gets only its closing row: it was never open.
Features that only a recorded history can give (stage, days in stage, pushes, amount changes,
next step) are switched off for such data (`forecast.features.deal_schema.unavailable_features`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast.data.contract import OPEN_STAGES
from forecast.data.schema import DEAL_HISTORY
from forecast.data.tables import CrmTables, conform

DERIVED = "derived"


def derive_history(deals: pd.DataFrame) -> pd.DataFrame:
    """A canonical `deal_history` frame for `deals` (canonical), every row `origin = derived`."""
    open_now = deals["outcome"].eq("open").to_numpy(dtype=bool, na_value=False)
    closed_at = deals["closed_at"]
    created_at = deals["created_at"]
    was_open = open_now | (closed_at > created_at).to_numpy(dtype=bool, na_value=False)
    creation = pd.DataFrame(
        {
            "deal_id": deals["deal_id"],
            "changed_at": created_at,
            "stage": np.where(open_now, deals["stage"].astype(object), OPEN_STAGES[0]),
            "amount": deals["amount"],
            "expected_close": deals["expected_close"],
        }
    )[was_open]
    closing = pd.DataFrame(
        {
            "deal_id": deals["deal_id"],
            "changed_at": closed_at,
            "stage": deals["stage"],
            "amount": deals["amount"],
            "expected_close": deals["expected_close"],
        }
    )[~open_now]
    # an export whose deals were never open has no creation rows (pandas warns at an empty part)
    parts = [part for part in (creation, closing) if len(part)] or [closing]
    history = pd.concat(parts, ignore_index=True).assign(origin=DERIVED)
    history = history.sort_values(["deal_id", "changed_at"], kind="stable", ignore_index=True)
    return conform(history, DEAL_HISTORY)


def history_is_derived(history: pd.DataFrame) -> bool:
    """True when the stored history was derived on import (no row recorded by the CRM)."""
    return bool(len(history)) and bool(history["origin"].eq(DERIVED).fillna(False).all())


def deals_only(tables: CrmTables) -> CrmTables:
    """What a CRM's one-table export keeps of `tables` (a generated world, to test against):
    the deals without expected close dates, a derived history, and no activities, bills,
    signals or attributes."""
    frames = dict(tables.items())
    frames["deals"] = tables.deals.assign(expected_close=pd.NaT)
    frames["deal_history"] = derive_history(frames["deals"])
    for name in ("activities", "revenue", "signals", "deal_attributes"):
        frames[name] = frames[name].iloc[0:0]
    return CrmTables.from_frames(frames, as_of=tables.as_of)
