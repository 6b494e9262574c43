"""The sales organisation and its customers: regions, teams, reps (skill, ramp-up), accounts."""

from __future__ import annotations

import numpy as np

from forecast.data.contract import OPEN_STAGES, SEGMENTS
from forecast.data.world.parameters import (
    FIRST_NAMES,
    INDUSTRIES,
    LAST_NAMES,
    LOYALTY_SD,
    REGION_WEIGHTS,
    REGIONS,
    SEGMENT_WEIGHTS,
    SKILL_SD,
)


def make_org(
    rng: np.random.Generator, *, n_deals: int, horizon: int, weak_stage_share: float
) -> dict:
    """Regions -> teams -> reps, sized so each rep works about 130 deals a year."""
    years = horizon / 365.25
    n_reps = max(6, round(n_deals / (years * 130)))
    region = rng.choice(len(REGIONS), size=n_reps, p=REGION_WEIGHTS)
    region[: min(n_reps, len(REGIONS))] = np.arange(min(n_reps, len(REGIONS)))
    order = np.argsort(region, kind="stable")
    region = region[order]
    # teams of about seven reps inside each region
    team = np.empty(n_reps, dtype=np.int64)
    team_region: list[int] = []
    for r in range(len(REGIONS)):
        members = np.flatnonzero(region == r)
        if len(members) == 0:
            continue
        n_teams = max(1, round(len(members) / 7))
        first = len(team_region)
        team[members] = first + np.arange(len(members)) % n_teams
        team_region += [r] * n_teams
    # most reps were hired before the start; about 15 % a year join during it
    veteran = rng.random(n_reps) < 1 / (1 + 0.15 * years)
    hired = np.where(
        veteran,
        -rng.uniform(60, 6 * 365, n_reps),
        rng.uniform(0, horizon - 60, n_reps),
    )
    skill = rng.normal(0.0, SKILL_SD, n_reps)
    diligence = np.exp(0.35 * skill + rng.normal(0, 0.2, n_reps))
    weak_stage = np.where(
        rng.random(n_reps) < weak_stage_share, rng.integers(1, len(OPEN_STAGES), n_reps), -1
    )
    return {
        "n_reps": n_reps,
        "rep_number": np.arange(1, n_reps + 1),
        "region": region,
        "team": team,
        "team_region": np.array(team_region),
        "hired": hired,
        "skill": skill,
        "diligence": diligence,
        "weak_stage": weak_stage,
    }


def make_accounts(rng: np.random.Generator, *, n_deals: int, horizon: int) -> dict:
    n = max(20, n_deals // 4)
    segment = rng.choice(len(SEGMENTS), size=n, p=SEGMENT_WEIGHTS)
    employees = np.round(
        np.exp(rng.normal(np.log([40, 600, 8000])[segment], 0.6)).clip(2, 400_000)
    ).astype(np.int64)
    return {
        "n": n,
        "number": np.arange(1, n + 1),
        "region": rng.choice(len(REGIONS), size=n, p=REGION_WEIGHTS),
        "industry": rng.integers(0, len(INDUSTRIES), n),
        "segment": segment,
        "employees": employees,
        "loyalty": rng.normal(0.0, LOYALTY_SD, n),
        "popularity": rng.pareto(2.5, n) + 1.0,
        "created_hint": rng.uniform(-3 * 365, horizon - 30, n),
    }


def assign_reps(rng: np.random.Generator, org: dict, created: np.ndarray) -> np.ndarray:
    """Each deal to a rep already hired, new reps taking fewer deals while they ramp up."""
    by_hire = np.argsort(org["hired"], kind="stable")
    hired_sorted = org["hired"][by_hire]
    active = np.searchsorted(hired_sorted, created, side="right").clip(min=1)
    rep = np.empty(len(created), dtype=np.int64)
    todo = np.arange(len(created))
    for _ in range(50):
        pick = by_hire[(rng.random(len(todo)) * active[todo]).astype(np.int64)]
        tenure = created[todo] - org["hired"][pick]
        keep = rng.random(len(todo)) < 1 - 0.7 * np.exp(-tenure.clip(min=0) / 90)
        rep[todo[keep]] = pick[keep]
        todo = todo[~keep]
        if len(todo) == 0:
            break
    rep[todo] = by_hire[0]
    return rep


def assign_accounts(rng: np.random.Generator, accounts: dict, region: np.ndarray) -> np.ndarray:
    """An account in the rep's region, popular accounts buying more often."""
    account = np.empty(len(region), dtype=np.int64)
    for r in range(len(REGIONS)):
        deals_here = np.flatnonzero(region == r)
        pool = np.flatnonzero(accounts["region"] == r)
        if len(pool) == 0:
            pool = np.arange(accounts["n"])
            accounts["region"][pool[:1]] = r
            pool = pool[:1]
        weights = accounts["popularity"][pool]
        account[deals_here] = rng.choice(pool, size=len(deals_here), p=weights / weights.sum())
    return account


def person_names(rng: np.random.Generator, n: int) -> np.ndarray:
    first = np.array(FIRST_NAMES, dtype=object)[rng.integers(0, len(FIRST_NAMES), n)]
    last = np.array(LAST_NAMES, dtype=object)[rng.integers(0, len(LAST_NAMES), n)]
    return first + " " + last
