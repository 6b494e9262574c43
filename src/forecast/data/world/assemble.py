"""The generated arrays as the contract's tables: reps, accounts, deals, history, activities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.data.contract import ACTIVITY_KINDS, SEGMENTS, STAGES
from forecast.data.tables import STRING, CrmTables
from forecast.data.world.columns import (
    date_column,
    id_column,
    pick_labels,
    string_column,
    timestamp_column,
)
from forecast.data.world.deals import Calendar
from forecast.data.world.money import revenue_table, signals_table, targets_table
from forecast.data.world.org import person_names
from forecast.data.world.parameters import INDUSTRIES, NEXT_STEPS, PRODUCTS, REGIONS

# account names: a word and a suffix
ACCOUNT_WORDS = (
    "Acme",
    "Apex",
    "Blue",
    "Bright",
    "Cedar",
    "Delta",
    "Ember",
    "Fjord",
    "Granite",
    "Harbor",
    "Iris",
    "Juniper",
    "Kite",
    "Lumen",
    "Maple",
    "Nova",
    "Orbit",
    "Pine",
    "Quartz",
    "River",
    "Summit",
    "Tidal",
    "Vertex",
    "Willow",
)
PRODUCT_COLUMNS = ("product_id", "name", "family", "list_price", "billing")  # of `PRODUCTS`


@dataclass(frozen=True)
class Numbering:
    """Where a world's ids start: a part of a larger world numbers its deals after the parts
    before it and puts its own number (`part`) in its activity and signal ids (accounts are
    numbered by `make_accounts`' caller), so ids are unique across the parts."""

    first_deal: int = 1
    part: str = ""


WHOLE = Numbering()  # a world made in one piece


def assemble(
    rng: np.random.Generator,
    cal: Calendar,
    as_of: pd.Timestamp,
    *,
    org: dict,
    accounts: dict,
    deals: dict,
    history: dict,
    activities: dict,
    subs: dict,
    numbering: Numbering = WHOLE,
) -> CrmTables:
    """Turn the simulated arrays into canonical tables, recording nothing after the as-of."""
    origin = cal.origin
    horizon = (as_of - origin) / pd.Timedelta(days=1)
    reps, rep_ids = _reps_table(rng, org, origin)
    account_ids = id_column("A", accounts["number"], 6)
    deal_ids = id_column("D", np.arange(numbering.first_deal, numbering.first_deal + deals["n"]), 7)
    product_ids = np.array([p[0] for p in PRODUCTS], dtype=object)

    hist = _history_table(history, deal_ids, origin)
    last = hist.groupby("deal_id", sort=False).tail(1).set_index("deal_id")
    deal_table = _deals_table(
        deals, last, ids=(deal_ids, account_ids, rep_ids, product_ids), cal=cal, horizon=horizon
    )
    account_frame = _accounts_table(
        rng, accounts, deals, origin=origin, account_ids=account_ids, rep_ids=rep_ids, org=org
    )
    acts = _activities_table(
        origin, horizon, deals=deals, activities=activities, subs=subs, accounts=accounts,
        org=org, deal_ids=deal_ids, account_ids=account_ids, rep_ids=rep_ids,
        account_frame=account_frame, activity_prefix=f"X{numbering.part}",
    )  # fmt: skip
    revenue = revenue_table(cal, deals, subs, account_ids, product_ids, horizon)
    signals = signals_table(origin, horizon, subs, account_ids, f"S{numbering.part}")
    targets = targets_table(
        cal, org, deals, reps=reps, rep_ids=rep_ids, horizon=horizon, subs=subs,
        account_frame=account_frame,
    )  # fmt: skip
    frames = {
        "reps": reps,
        "targets": targets,
        "accounts": account_frame,
        "products": pd.DataFrame(
            dict(zip(PRODUCT_COLUMNS, zip(*PRODUCTS, strict=True), strict=True))
        ),
        "deals": deal_table,
        "deal_history": hist,
        "activities": acts,
        "revenue": revenue,
        "signals": signals,
    }
    return CrmTables.from_frames(frames, as_of=as_of)


def _history_table(history: dict, deal_ids: pd.Series, origin: pd.Timestamp) -> pd.DataFrame:
    """The deals' stage, amount, expected-close and next-step changes, one row per change."""
    hist = pd.DataFrame(
        {
            "deal_id": deal_ids.take(history["deal"]).reset_index(drop=True),
            "changed_at": timestamp_column(origin, history["t"]),
            "stage": pick_labels(STAGES, history["stage"]),
            "amount": history["amount"],
            "expected_close": date_column(origin, history["expected"]),
            "next_step": pick_labels(
                (*NEXT_STEPS, ""), np.where(history["next_step"] < 0, 5, history["next_step"])
            ),
        }
    )
    hist["next_step"] = hist["next_step"].replace("", pd.NA)
    return hist.drop_duplicates(["deal_id", "changed_at"], keep="last").reset_index(drop=True)


def _deals_table(
    deals: dict, last: pd.DataFrame, *, ids: tuple, cal: Calendar, horizon: float
) -> pd.DataFrame:
    """One row per deal as the export sees it: its latest history row, closed only when the
    close is known by the as-of; `ids` are the deal, account, rep and product ids."""
    deal_ids, account_ids, rep_ids, product_ids = ids
    origin = cal.origin
    closed_known = deals["closed"] <= horizon
    stage_now = last["stage"].reindex(deal_ids).to_numpy()
    outcome = np.where(~closed_known, "open", np.where(deals["won"], "won", "lost"))
    negotiated = (deals["last_stage"] >= 3) & (deals["entered"][:, 3] <= horizon)
    return pd.DataFrame(
        {
            "deal_id": deal_ids,
            "account_id": account_ids.take(deals["account"]).reset_index(drop=True),
            "rep_id": rep_ids.take(deals["rep"]).reset_index(drop=True),
            "product_id": string_column(product_ids[deals["product"]]),
            "created_at": timestamp_column(origin, deals["created"]),
            "amount": last["amount"].reindex(deal_ids).to_numpy(),
            "expected_close": last["expected_close"].reindex(deal_ids).to_numpy(),
            "stage": string_column(stage_now),
            "closed_at": timestamp_column(origin, deals["closed"]).where(closed_known),
            "outcome": string_column(outcome),
            "discount": np.where(negotiated, np.round(deals["discount"], 3), np.nan),
        }
    )


def _reps_table(
    rng: np.random.Generator, org: dict, origin: pd.Timestamp
) -> tuple[pd.DataFrame, pd.Series]:
    """Executive -> regional directors -> team managers -> reps."""
    short = {"North America": "NA", "EMEA": "EMEA", "APAC": "APAC", "LATAM": "LATAM"}
    team_region = org["team_region"]
    team_names = np.array(
        [
            f"{short[REGIONS[r]]} {1 + int((team_region[:t] == r).sum())}"
            for t, r in enumerate(team_region)
        ],
        dtype=object,
    )
    regions = np.unique(team_region)
    rep_ids = id_column("R", org["rep_number"], 4)
    manager_ids = id_column("M", np.arange(1, len(team_region) + 1), 3).to_numpy()
    director_ids = {r: f"D{r + 1:02d}" for r in regions}
    rows = {
        "rep_id": ["E01"] + [director_ids[r] for r in regions] + list(manager_ids) + list(rep_ids),
        "manager_id": [None]
        + ["E01"] * len(regions)
        + [director_ids[r] for r in team_region]
        + list(manager_ids[org["team"]]),
        "role": ["executive"]
        + ["director"] * len(regions)
        + ["manager"] * len(team_region)
        + ["rep"] * org["n_reps"],
        "team": ["Executive"]
        + [f"{REGIONS[r]} leadership" for r in regions]
        + list(team_names)
        + list(team_names[org["team"]]),
        "region": ["Global"]
        + [REGIONS[r] for r in regions]
        + [REGIONS[r] for r in team_region]
        + [REGIONS[r] for r in org["region"]],
    }
    n_leaders = 1 + len(regions) + len(team_region)
    hired = np.concatenate([-rng.uniform(400, 3000, n_leaders), org["hired"]])
    frame = pd.DataFrame(rows)
    frame["name"] = person_names(rng, len(frame))
    frame["hired_at"] = date_column(origin, hired)
    return frame, rep_ids


def _accounts_table(
    rng: np.random.Generator,
    accounts: dict,
    deals: dict,
    *,
    origin: pd.Timestamp,
    account_ids: pd.Series,
    rep_ids: pd.Series,
    org: dict,
) -> pd.DataFrame:
    first_deal = np.full(accounts["n"], -1)
    order = np.argsort(deals["created"], kind="stable")[::-1]
    first_deal[deals["account"][order]] = order  # the earliest deal written last wins
    owner = np.where(first_deal >= 0, deals["rep"][first_deal.clip(min=0)], -1)
    words = np.array(ACCOUNT_WORDS, dtype=object)
    suffix = np.array(["Corp", "Group", "Labs", "Systems", "Holdings", "Works"], dtype=object)
    names = (
        words[rng.integers(0, len(words), accounts["n"])]
        + " "
        + suffix[rng.integers(0, len(suffix), accounts["n"])]
    )
    return pd.DataFrame(
        {
            "account_id": account_ids,
            "name": names,
            "industry": string_column(np.array(INDUSTRIES, dtype=object)[accounts["industry"]]),
            "region": string_column(np.array(REGIONS, dtype=object)[accounts["region"]]),
            "segment": string_column(np.array(SEGMENTS, dtype=object)[accounts["segment"]]),
            "employees": accounts["employees"],
            "owner_rep_id": rep_ids.take(owner.clip(min=0))
            .reset_index(drop=True)
            .where(owner >= 0),
            "created_at": timestamp_column(origin, accounts["created"]),
        }
    )


def _activities_table(
    origin,
    horizon,
    *,
    deals,
    activities,
    subs,
    accounts,
    org,
    deal_ids,
    account_ids,
    rep_ids,
    account_frame,
    activity_prefix: str,
) -> pd.DataFrame:
    deal_idx = activities["deal"]
    touches = subs["touches"]
    keep = touches["t"] <= horizon
    touch_acc = touches["account"][keep]
    owner = account_frame["owner_rep_id"].to_numpy()
    has_owner = ~pd.isna(owner[touch_acc])
    touch_acc = touch_acc[has_owner]
    t = np.concatenate([activities["t"], touches["t"][keep][has_owner]])
    order = np.argsort(t, kind="stable")
    n_deal = len(deal_idx)
    deal_col = pd.concat(
        [deal_ids.take(deal_idx), pd.Series(pd.NA, index=range(len(touch_acc)), dtype=STRING)],
        ignore_index=True,
    )
    account_col = pd.concat(
        [account_ids.take(deals["account"][deal_idx]), account_ids.take(touch_acc)],
        ignore_index=True,
    )
    rep_col = pd.concat(
        [rep_ids.take(deals["rep"][deal_idx]), pd.Series(owner[touch_acc], dtype=STRING)],
        ignore_index=True,
    )
    kind_codes = np.concatenate(
        [activities["kind"], np.full(len(touch_acc), ACTIVITY_KINDS.index("call"))]
    )
    kind_codes[n_deal:][np.arange(len(touch_acc)) % 3 == 1] = ACTIVITY_KINDS.index("email")
    kind_codes[n_deal:][np.arange(len(touch_acc)) % 5 == 2] = ACTIVITY_KINDS.index("meeting")
    frame = pd.DataFrame(
        {
            "deal_id": deal_col.take(order).reset_index(drop=True),
            "account_id": account_col.take(order).reset_index(drop=True),
            "rep_id": rep_col.take(order).reset_index(drop=True),
            "kind": pick_labels(ACTIVITY_KINDS, kind_codes[order]),
            "at": timestamp_column(origin, t[order]),
        }
    )
    frame.insert(0, "activity_id", id_column(activity_prefix, np.arange(1, len(frame) + 1), 8))
    return frame
