"""What-if scenarios: remove, add, slip or re-stage deals and draw the quarter again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from forecast.data.contract import CLOSED_STAGES, OPEN_STAGES
from forecast.revenue.inputs import QuarterInputs
from forecast.revenue.params import DAY, Window, WinScorer
from forecast.revenue.timing import expected_close_of, score_with, with_timing


@dataclass(frozen=True)
class AddedDeal:
    """A deal the CRM does not hold yet (e.g. one a manager knows is coming).

    Without `win_probability` it is scored like an open deal of the same stage and rep: the
    median of such deals' features, with this deal's amount, stage and expected close.
    """

    deal_id: str
    rep_id: str
    amount: float
    stage: str
    expected_close: pd.Timestamp
    win_probability: float | None = None


@dataclass(frozen=True)
class Scenario:
    """Changes to the open deals at as_of; the distribution is then drawn again.

    Attributes:
        name: shown with the results.
        remove: deal ids taken out of the forecast (lost, or not to be counted).
        add: deals added to the pipeline.
        slip_days: deal id -> days its expected close moves (positive: later). A later date
            counts as a push of the close date for the win model (which never raises a win
            probability) and means the deal closes no earlier than its new date: past the
            quarter's end it cannot close inside the quarter, and a quarter it moves into
            counts on it at least as much as before (`_slipped_timing`).
        stage: deal id -> new stage; `closed_won` books it now, `closed_lost` removes it.
    """

    name: str = "scenario"
    remove: tuple[str, ...] = ()
    add: tuple[AddedDeal, ...] = ()
    slip_days: Mapping[str, int] = field(default_factory=dict)
    stage: Mapping[str, str] = field(default_factory=dict)

    def apply(self, inputs: QuarterInputs, win_scorer: WinScorer | None) -> QuarterInputs:
        """New inputs with the changes made; unchanged deals keep their place (and randomness)."""
        deals = inputs.open_deals.copy()
        self._check(deals)
        window = inputs.window
        before = deals[["p_close_inside", "p_inside", "expected_close"]].copy()
        changed, slipped, shifts = self._edit(deals)
        quarter_end = window.as_of.to_period("Q").end_time
        expected = expected_close_of(deals)
        deals["expected_close_in_quarter"] = (expected <= quarter_end).astype(float)
        if changed.any():
            if win_scorer is None:
                raise ValueError("re-scoring changed deals needs the win_scorer")
            deals.loc[changed, "p_win"] = score_with(win_scorer, deals.loc[changed])
        deals.loc[slipped, "days_to_expected_close"] += shifts[slipped]
        if self.add:
            unknown = sorted({d.rep_id for d in self.add} - set(inputs.tree.leaves["rep_id"]))
            if unknown:
                raise KeyError(f"scenario {self.name!r}: added deals' reps not in reps: {unknown}")
            deals = pd.concat([deals, self._added(deals, window, win_scorer)], ignore_index=True)
        deals = with_timing(deals, window, inputs.timing, inputs.params)
        if slipped.any():  # added deals come after the open ones, and never slipped
            extra = len(deals) - len(slipped)
            before = before.reset_index(drop=True).reindex(range(len(deals)))
            deals = _slipped_timing(
                deals.reset_index(drop=True),
                before,
                np.concatenate([slipped, np.zeros(extra, dtype=bool)]),
                window,
            )
        out = deals["deal_id"].to_numpy(object)
        gone = np.isin(
            out, [*self.remove, *[d for d, s in self.stage.items() if s in CLOSED_STAGES]]
        )
        deals.loc[gone, ["p_win", "p_inside"]] = 0.0
        deals["removed"] = gone
        won = self._won_now(deals, inputs)
        return replace(inputs, open_deals=deals, won=won, scenario=self.name)

    def _check(self, deals: pd.DataFrame) -> None:
        """Every deal named is open at as_of; every stage named exists."""
        mentioned = set(self.remove) | set(self.slip_days) | set(self.stage)
        missing = sorted(mentioned - set(deals["deal_id"]))
        if missing:
            raise KeyError(f"scenario {self.name!r}: deals not open at as_of: {missing}")
        for stage in self.stage.values():
            if stage not in (*OPEN_STAGES, *CLOSED_STAGES):
                raise ValueError(f"scenario {self.name!r}: unknown stage {stage!r}")

    def _edit(self, deals: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Slips and open stages written into `deals`: which rows the win model must score
        again, which moved later (see `_slipped_timing`) and by how many days."""
        changed = np.zeros(len(deals), dtype=bool)
        ids = deals["deal_id"].to_numpy(object)
        slipped = np.zeros(len(deals), dtype=bool)
        shifts = np.zeros(len(deals))
        for deal_id, days in self.slip_days.items():
            row = ids == deal_id
            shifts[row] = days
            if days > 0:
                # the win model hears of the push; the date itself moves only the timing, so
                # a later date can never make the deal likelier to be won
                deals.loc[row, "close_pushes"] += 1
                slipped |= row
            else:
                deals.loc[row, "days_to_expected_close"] += days
            changed |= row
        for deal_id, stage in self.stage.items():
            if stage in OPEN_STAGES:
                row = ids == deal_id
                deals.loc[row, "stage"] = stage
                deals.loc[row, "days_in_stage"] = 0.0
                changed |= row
        return changed, slipped, shifts

    def _won_now(self, deals: pd.DataFrame, inputs: QuarterInputs) -> pd.DataFrame:
        """The quarter's won deals, with those the scenario closes as won now (at their amount
        as it stands) when as_of is inside the quarter."""
        won_now = [deal_id for deal_id, stage in self.stage.items() if stage == "closed_won"]
        window = inputs.window
        if not won_now or not (window.start < window.end and window.q_start <= window.as_of):
            return inputs.won
        rows = deals[deals["deal_id"].isin(won_now)]
        booked = pd.DataFrame(
            {
                "deal_id": rows["deal_id"].to_numpy(),
                "rep_id": rows["rep_id"].to_numpy(),
                "closed_at": window.as_of,
                "amount": rows["amount"].to_numpy(float),
            }
        )
        return pd.concat([inputs.won, booked], ignore_index=True)

    def _added(
        self, deals: pd.DataFrame, window: Window, win_scorer: WinScorer | None
    ) -> pd.DataFrame:
        rows = []
        known = set(deals["deal_id"])
        typical: dict[tuple[str, str], dict] = {}  # one template per stage and rep, not per deal
        for deal in self.add:
            if deal.stage not in OPEN_STAGES:
                raise ValueError(f"added deal {deal.deal_id}: stage must be open, not {deal.stage}")
            if deal.deal_id in known:
                raise ValueError(f"added deal {deal.deal_id} is already in the pipeline")
            key = (deal.stage, deal.rep_id)
            if key not in typical:
                same = deals[(deals["stage"] == deal.stage) & (deals["rep_id"] == deal.rep_id)]
                if same.empty:
                    same = deals[deals["stage"] == deal.stage]
                if same.empty:
                    same = deals
                typical[key] = _typical_row(same)
            template = dict(typical[key])
            template.update(
                {
                    "deal_id": deal.deal_id,
                    "rep_id": deal.rep_id,
                    "as_of": window.as_of,
                    "stage": deal.stage,
                    "amount": float(deal.amount),
                    "amount_change_ratio": 1.0,
                    "amount_changes": 0.0,
                    "close_pushes": 0.0,
                    "days_in_stage": 0.0,
                    "days_to_expected_close": (pd.Timestamp(deal.expected_close) - window.as_of)
                    / DAY,
                }
            )
            rows.append(template)
        added = pd.DataFrame(rows)
        given = np.array([d.win_probability for d in self.add], dtype=object)
        scored = np.full(len(added), np.nan)
        need = np.array([p is None for p in given])
        if need.any():
            if win_scorer is None:
                raise ValueError("scoring added deals needs the win_scorer (or win_probability)")
            scored[need] = score_with(win_scorer, added[need].reset_index(drop=True))
        scored[~need] = given[~need].astype(float)
        added["p_win"] = np.clip(scored, 0, 1)
        return added


def _slipped_timing(
    deals: pd.DataFrame, before: pd.DataFrame, slipped: np.ndarray, window: Window
) -> pd.DataFrame:
    """A slip is the manager's word that the deal closes no earlier than its new date.

    So a deal slipped past the window's end cannot close inside it (0); one still inside keeps
    at most its chance of closing inside from before (a later date never raises it); one moved
    into the window from before it keeps at least its chance from before (the window gains).
    A deal already overdue belongs to the window open now (it can close any day from the
    as-of): slipped, it stays in it, and its chance there never rises.
    """
    out = deals.copy()
    new_close = out["expected_close"]
    old_close = before["expected_close"]
    open_now = window.as_of >= window.q_start  # the current quarter: overdue deals are its own
    was_inside = ((old_close < window.end) & ((old_close >= window.start) | open_now)).to_numpy()
    past_end = slipped & (new_close >= window.end).to_numpy()
    kept = slipped & ~past_end & was_inside
    moved_in = slipped & ~past_end & ~was_inside & (new_close >= window.start).to_numpy()
    p_close = out["p_close_inside"].to_numpy(float).copy()
    old = before["p_close_inside"].to_numpy(float)
    p_close[past_end] = 0.0
    p_close[kept] = np.minimum(p_close[kept], old[kept])
    p_win = out["p_win"].to_numpy(float)
    # what the window counted on from the deal before, now that it arrives later (the push
    # may have lowered its win probability a little)
    floor = before["p_inside"].to_numpy(float) / np.where(p_win > 0, p_win, 1.0)
    p_close[moved_in] = np.clip(np.maximum(p_close[moved_in], floor[moved_in]), 0.0, 1.0)
    out["p_close_inside"] = p_close
    out["p_inside"] = out["p_win"] * out["p_close_inside"]
    return out


def _typical_row(frame: pd.DataFrame) -> dict:
    """Median of numeric columns, most frequent value of the others."""
    row: dict[str, object] = {}
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            row[column] = float(values.median()) if values.notna().any() else np.nan
        else:
            mode = values.dropna().mode()
            row[column] = mode.iloc[0] if len(mode) else None
    return row
