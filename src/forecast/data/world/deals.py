"""Deals and their paths: creation through the seasons, stage by stage to an outcome, activities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.data.contract import OPEN_STAGES
from forecast.data.world.columns import categorical_draw, sigmoid
from forecast.data.world.org import assign_accounts, assign_reps
from forecast.data.world.parameters import (
    ACTIVITY_RATE,
    ENGAGEMENT_TOUCHES,
    ENGAGEMENT_WEIGHT,
    FIT_SD,
    INDUSTRIES,
    MONTH_SEASON,
    PRODUCT_MIX,
    PRODUCTS,
    QUALITY_NOISE,
    SEGMENT_EFFECT,
    SEGMENT_PACE,
    SEGMENT_SIZE,
    SIZE_EFFECT,
    STAGE_ACTIVITY_MIX,
    STAGE_DAYS,
    STAGE_LOGITS,
)


def _seasonal_days(
    rng: np.random.Generator, origin: pd.Timestamp, n: int, horizon: int
) -> np.ndarray:
    """Creation days with month seasonality, quieter weekends and 8 % yearly growth."""
    days = np.arange(horizon)
    dates = origin + pd.to_timedelta(days, unit="D")
    weights = MONTH_SEASON[(dates.month - 1).to_numpy()] * np.where(dates.dayofweek >= 5, 0.25, 1)
    weights = weights * 1.08 ** (days / 365.25)
    chosen = rng.choice(horizon, size=n, p=weights / weights.sum())
    return np.sort(chosen + rng.uniform(0.3, 0.75, n))


def make_deals(
    rng: np.random.Generator,
    cal: Calendar,
    org: dict,
    accounts: dict,
    *,
    n_deals: int,
    horizon: int,
) -> dict:
    created = _seasonal_days(rng, cal.origin, n_deals, horizon)
    rep = assign_reps(rng, org, created)
    region = org["region"][rep]
    account = assign_accounts(rng, accounts, region)
    segment = accounts["segment"][account]
    product = categorical_draw(rng, PRODUCT_MIX[segment])
    list_price = np.array([p[3] for p in PRODUCTS])[product]
    amount = np.round(
        list_price * SEGMENT_SIZE[segment] * np.exp(rng.normal(0, 0.35, n_deals)), -2
    ).clip(min=500)

    deal = {"created": created, "rep": rep, "account": account, "segment": segment}
    deal |= {"product": product, "amount": amount, "list_price": list_price}
    quality, engagement = _quality(rng, org, accounts, deal)
    path = _stage_path(rng, cal, quality, deal, weak=org["weak_stage"][rep])
    p_advance, last_stage, entered, closed, won = path
    quarter_end_near = cal.days_to_quarter_end(closed) < 21
    discount = np.where(
        last_stage >= 3, rng.beta(2, 14, n_deals) * (1 + 0.6 * quarter_end_near), np.nan
    ).clip(max=0.4)
    return {
        "n": n_deals,
        "created": created,
        "rep": rep,
        "account": account,
        "segment": segment,
        "product": product,
        "amount0": amount,
        "engagement": engagement,
        "quality": quality,
        "p_advance": p_advance,
        "last_stage": last_stage,
        "entered": entered,
        "closed": closed,
        "won": won,
        "discount": discount,
        "scope_change": np.exp(rng.normal(0, 0.12, n_deals)),
    }


def _quality(
    rng: np.random.Generator, org: dict, accounts: dict, deal: dict
) -> tuple[np.ndarray, np.ndarray]:
    """Each deal's latent quality (rep skill with ramp-up, segment, product-industry fit,
    loyalty, engagement, size, noise) and its buyer's engagement."""
    rep, account, segment = deal["rep"], deal["account"], deal["segment"]
    n_deals = len(rep)
    tenure = deal["created"] - org["hired"][rep]
    ramp = -0.9 * np.exp(-tenure.clip(min=0) / 120)
    fit = rng.normal(0, FIT_SD, (len(INDUSTRIES), len(PRODUCTS)))
    engagement = rng.normal(0, 1, n_deals)
    usual = deal["list_price"] * SEGMENT_SIZE[segment]
    size_effect = SIZE_EFFECT * np.log(deal["amount"] / usual)
    quality = (
        org["skill"][rep]
        + ramp
        + SEGMENT_EFFECT[segment]
        + fit[accounts["industry"][account], deal["product"]]
        + accounts["loyalty"][account]
        + ENGAGEMENT_WEIGHT * engagement
        + size_effect
        + rng.normal(0, QUALITY_NOISE, n_deals)
    )
    return quality, engagement


def _stage_path(
    rng: np.random.Generator, cal: Calendar, quality: np.ndarray, deal: dict, *, weak: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Stage by stage: the chance of advancing, how far each deal gets, when it entered each
    stage, when it closed, and whether it was won."""
    created, segment = deal["created"], deal["segment"]
    n_deals = len(created)
    stage_offset = np.where(np.arange(len(OPEN_STAGES))[None, :] == weak[:, None], -1.1, 0.0)
    p_advance = sigmoid(STAGE_LOGITS[None, :] + quality[:, None] + stage_offset)
    advanced = rng.random(p_advance.shape) < p_advance
    # how far each deal gets: index of the first stage it does not leave forward (4 = won)
    last_stage = np.where(advanced.all(axis=1), len(OPEN_STAGES), np.argmin(advanced, axis=1))
    mean_days = (
        STAGE_DAYS[None, :] * SEGMENT_PACE[segment][:, None] * np.exp(-0.4 * quality)[:, None]
    )
    dwell = rng.gamma(2.0, mean_days / 2.0)
    entered = created[:, None] + np.concatenate(
        [np.zeros((n_deals, 1)), dwell.cumsum(axis=1)], axis=1
    )
    exit_index = np.minimum(last_stage, len(OPEN_STAGES) - 1)
    closed = entered[np.arange(n_deals), exit_index + 1]
    won = last_stage == len(OPEN_STAGES)
    closed = _pull_into_quarter(rng, cal, closed, entered[:, len(OPEN_STAGES) - 1], won)
    return p_advance, last_stage, entered, closed, won


@dataclass(frozen=True)
class Calendar:
    """Calendar months and quarters as day offsets from the world's origin."""

    origin: pd.Timestamp
    month_starts: np.ndarray
    quarter_starts: np.ndarray

    @classmethod
    def build(cls, origin: pd.Timestamp, horizon: int) -> Calendar:
        first = origin.to_period("M").to_timestamp()
        months = pd.date_range(first, origin + pd.Timedelta(days=horizon + 800), freq="MS")
        offsets = ((months - origin) / pd.Timedelta(days=1)).to_numpy()
        quarters = offsets[(months.month - 1) % 3 == 0]
        return cls(origin=origin, month_starts=offsets, quarter_starts=quarters)

    def month_of(self, days: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.month_starts, days, side="right") - 1

    def days_into_quarter(self, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Days since the quarter started, and that quarter's start, for each day offset."""
        q = np.searchsorted(self.quarter_starts, days, side="right") - 1
        start = self.quarter_starts[q.clip(min=0)]
        return days - start, start

    def days_to_quarter_end(self, days: np.ndarray) -> np.ndarray:
        q = np.searchsorted(self.quarter_starts, days, side="right")
        return self.quarter_starts[q.clip(max=len(self.quarter_starts) - 1)] - days


def _pull_into_quarter(
    rng: np.random.Generator,
    cal: Calendar,
    closed: np.ndarray,
    negotiation_start: np.ndarray,
    won: np.ndarray,
) -> np.ndarray:
    """Quarter-end push: a win due early next quarter is often signed before the quarter ends."""
    days_into, quarter_start = cal.days_into_quarter(closed)
    pull = won & (days_into < 21) & (rng.random(len(closed)) < 0.55)
    pulled = quarter_start - rng.uniform(0.2, 5, len(closed))
    pull &= pulled > negotiation_start + 0.5
    return np.where(pull, pulled, closed)


def make_history(rng: np.random.Generator, deals: dict, *, horizon: int) -> dict:
    """Every recorded change: creation, stage changes, amount changes, pushes, the close."""
    n = deals["n"]
    entered, last_stage, closed = deals["entered"], deals["last_stage"], deals["closed"]
    open_until = np.minimum(closed, horizon)
    deal_idx = np.arange(n)
    pace = SEGMENT_PACE[deals["segment"]]
    expected0 = np.ceil(deals["created"] + STAGE_DAYS.sum() * pace * rng.uniform(0.7, 1.2, n))

    parts: list[dict[str, np.ndarray]] = []
    amount1 = np.round(deals["amount0"] * deals["scope_change"], -2).clip(min=500)
    amount2 = np.round(amount1 * (1 - np.nan_to_num(deals["discount"])), -2).clip(min=500)
    stage_amount = [deals["amount0"], deals["amount0"], amount1, amount2]
    for stage in range(len(OPEN_STAGES)):
        reached = (last_stage >= stage) & (entered[:, stage] <= horizon)
        if stage > 0:
            reached &= entered[:, stage] < closed
        idx = deal_idx[reached]
        parts.append(
            {
                "deal": idx,
                "t": entered[idx, stage],
                "stage": np.full(len(idx), stage),
                "amount": stage_amount[stage][idx],
                "expected": expected0[idx] if stage == 0 else np.full(len(idx), np.nan),
                "next_step": np.where(
                    rng.random(len(idx)) < sigmoid(0.8 + 0.9 * deals["engagement"][idx]),
                    stage,
                    -1,
                ),
            }
        )
    expected = _pushes(rng, expected0, open_until, parts)
    done = deal_idx[closed <= horizon]
    won = deals["won"][done]
    parts.append(
        {
            "deal": done,
            "t": closed[done],
            "stage": np.where(won, 4, 5),
            "amount": np.full(len(done), np.nan),
            "expected": np.full(len(done), np.nan),
            "next_step": np.full(len(done), -1),
        }
    )
    frame = _history_frame(parts)
    return {k: frame[k].to_numpy() for k in frame.columns} | {"expected_final": expected}


def _pushes(
    rng: np.random.Generator, expected0: np.ndarray, open_until: np.ndarray, parts: list[dict]
) -> np.ndarray:
    """Whenever a deal is still open when its expected close passes, the date moves out: each
    push is added to `parts`; returns the final expected closes."""
    expected = expected0.copy()
    pending = np.arange(len(expected))[expected < open_until]
    while len(pending):
        when = expected[pending] + rng.uniform(0.2, 6, len(pending))
        recorded = when < open_until[pending]
        idx = pending[recorded]
        expected[idx] = np.ceil(when[recorded] + rng.uniform(14, 45, len(idx)))
        parts.append(
            {
                "deal": idx,
                "t": when[recorded],
                "stage": np.full(len(idx), -1),
                "amount": np.full(len(idx), np.nan),
                "expected": expected[idx],
                "next_step": np.full(len(idx), -2),
            }
        )
        pending = idx[expected[idx] < open_until[idx]]
    return expected


def _history_frame(parts: list[dict]) -> pd.DataFrame:
    """The events in time order per deal, each carrying the deal's stage, amount, expected
    close and next step as of then (a push changes only the date)."""
    events = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((events["t"], events["deal"]))
    frame = pd.DataFrame({k: v[order] for k, v in events.items()})
    frame["stage"] = frame["stage"].where(frame["stage"] >= 0)
    frame["next_step"] = frame["next_step"].where(frame["next_step"] != -2)
    grouped = frame.groupby("deal", sort=False)
    for col in ("stage", "amount", "expected", "next_step"):
        frame[col] = grouped[col].ffill()
    frame["stage"] = frame["stage"].astype(np.int64)
    frame["next_step"] = frame["next_step"].astype(np.int64)
    return frame


def make_deal_activities(rng: np.random.Generator, deals: dict, org: dict, *, horizon: int) -> dict:
    """Touches while a deal is open, more for engaged deals and diligent reps."""
    entered, closed = deals["entered"], deals["closed"]
    intensity = np.exp(ENGAGEMENT_TOUCHES * deals["engagement"]) * org["diligence"][deals["rep"]]
    parts_deal, parts_t, parts_kind = [], [], []
    for stage in range(len(OPEN_STAGES)):
        start = entered[:, stage]
        stop = np.minimum.reduce([entered[:, stage + 1], closed, np.full(len(closed), horizon)])
        span = np.where(deals["last_stage"] >= stage, stop - start, 0).clip(min=0)
        counts = rng.poisson(ACTIVITY_RATE[stage] * intensity * span)
        idx = np.repeat(np.arange(deals["n"]), counts)
        parts_deal.append(idx)
        parts_t.append(start[idx] + rng.random(len(idx)) * span[idx])
        parts_kind.append(
            categorical_draw(rng, np.broadcast_to(STAGE_ACTIVITY_MIX[stage], (len(idx), 6)))
        )
    return {
        "deal": np.concatenate(parts_deal),
        "t": np.concatenate(parts_t),
        "kind": np.concatenate(parts_kind),
    }
