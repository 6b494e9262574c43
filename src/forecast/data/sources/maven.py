"""Adapter for the public Maven Analytics "CRM + Sales + Opportunities" data (maven-crm).

The data is synthetic: 8,800 opportunities of a fictitious hardware seller, engaged from
2016-10-20 and closed from 2017-03-01 to 2017-12-31, with 35 agents under 6 managers in 3
regional offices, 7 products and 85 accounts. Each quirk listed in its SOURCE.md is handled here on
purpose, and every value the data does not have is a documented placeholder:

reps (from sales_teams.csv)
    Agents are `rep` with their manager as `manager_id`; the 6 managers become reps with role
    `manager` under one placeholder `director` per regional office (`head-central`,
    `head-east`, `head-west`, the tops of the tree). A team is named after its manager and
    holds the manager and their agents; a director's team is `<region> leadership`. The region is
    the regional office. Hire dates are unknown: everyone gets `DATA_START`, the first day of the
    month of the earliest engage date (2016-10-01), so every rep exists before their first deal.
    The 5 agents without deals are kept.
products (products.csv)
    `product` is the id and name, `series` the family, `sales_price` the list price; all
    hardware, so billing is `one_time`. Pipeline names are matched ignoring case, spaces and
    punctuation, which resolves `GTXPro` (1,480 deals) to `GTX Pro`.
accounts (accounts.csv)
    The sector typo `technolgy` becomes `technology` and the office typo `Philipines`
    `Philippines`. `region` is the headquarters country (`office_location`): the data's sales
    regions belong to agents, and 71 of the 85 accounts are served from all three offices, so
    an agent region would be arbitrary (and would read later deals). `segment` comes from the
    head count: smb below 1,000 employees, mid_market below 5,000, enterprise from 5,000 (18 /
    40 / 27 accounts). `created_at` is unknown: `DATA_START` for all, before any deal.
deals (sales_pipeline.csv)
    Stages: Prospecting -> prospecting, Engaging -> qualification (engaged means the seller
    is working it; the data has no finer open stages), Won -> closed_won, Lost -> closed_lost;
    outcome follows. `created_at` is `engage_date`; the 500 Prospecting rows have none, so they
    get the as-of (they are first seen in this export): none is dropped, and they never appear
    open in earlier snapshots. `closed_at` is `close_date`. `amount` is `close_value` for won
    deals; lost deals all carry 0, so they and open deals get the product's list price. The
    1,425 open deals without an account keep `account_id` empty. No expected close date exists.
deal_history
    Maven has no stage history, only each deal's final state. The history written here is the
    minimal honest one: a creation row at `created_at` (stage qualification, or prospecting
    for Prospecting rows; amount = list price, the only amount known before the close) and, for
    closed deals, a closing row at `close_date` with the final stage and amount. Point-in-time
    features therefore see only facts known at engage time until the close. Every row is
    marked `origin = derived`, as an import derives a deals-only export's history: features,
    the funnel and coaching that need a recorded history are off.
as_of
    The end of the data, 2017-12-31 (the latest engage or close date).

Values stay text, as read, with the line numbers of the files they come from.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from forecast.data.derive import DERIVED
from forecast.data.sources import RawTable
from forecast.data.sources.mapping import read_with_columns

log = logging.getLogger(__name__)

STAGE_MAP = {
    "Prospecting": "prospecting",
    "Engaging": "qualification",
    "Won": "closed_won",
    "Lost": "closed_lost",
}
OUTCOME_MAP = {"Prospecting": "open", "Engaging": "open", "Won": "won", "Lost": "lost"}
SECTOR_FIXES = {"technolgy": "technology"}
COUNTRY_FIXES = {"Philipines": "Philippines"}
# Head-count thresholds of the size segments: smb below the first, enterprise from the second.
SEGMENT_EMPLOYEES = (1_000, 5_000)
BILLING = "one_time"
# The columns read from each file (all of them, as published).
COLUMNS: dict[str, tuple[str, ...]] = {
    "sales_teams.csv": ("sales_agent", "manager", "regional_office"),
    "products.csv": ("product", "series", "sales_price"),
    "accounts.csv": ("account", "sector", "employees", "office_location"),
    "sales_pipeline.csv": (
        "opportunity_id",
        "sales_agent",
        "product",
        "account",
        "deal_stage",
        "engage_date",
        "close_date",
        "close_value",
    ),
}


def read_maven_crm(folder: Path) -> tuple[dict[str, RawTable], pd.Timestamp]:
    """Map the maven-crm CSVs in `folder` onto the canonical tables.

    Args:
        folder: the folder holding sales_pipeline.csv, accounts.csv, products.csv and
            sales_teams.csv (unmodified, as described in its SOURCE.md).

    Returns:
        reps, products, accounts, deals and deal_history as text with source line numbers, and
        the as-of (2017-12-31, the end of the data). Every choice is listed in the module
        docstring.
    """
    folder = Path(folder)
    teams = _read(folder, "sales_teams.csv", "reps")
    products = _read(folder, "products.csv", "products")
    accounts = _read(folder, "accounts.csv", "accounts")
    pipeline = _read(folder, "sales_pipeline.csv", "deals")

    engaged, closed = _text(pipeline, "engage_date"), _text(pipeline, "close_date")
    dates = pd.to_datetime(pd.concat([engaged, closed]), errors="coerce", format="%Y-%m-%d")
    as_of = dates.max().normalize()
    start = dates.min().to_period("M").start_time

    deals, list_price = _deals(pipeline, products, as_of)
    raw = {
        "reps": _reps(teams, start),
        "products": _products(products),
        "accounts": _accounts(accounts, start),
        "deals": deals,
        "deal_history": _history(deals, list_price),
    }
    return raw, as_of


def _read(folder: Path, file: str, table: str) -> RawTable:
    return read_with_columns(folder / file, table, COLUMNS[file], what="the maven-crm dataset")


def _text(raw: RawTable, column: str) -> pd.Series:
    """A source column as stripped text, empty cells as ""."""
    return raw.frame[column].astype("string").fillna("").str.strip().astype(object)


def _first_lines(raw: RawTable, keys: pd.Series) -> np.ndarray:
    """Source line of the first row of each distinct key, in order of first appearance."""
    lines = raw.lines if raw.lines is not None else np.arange(1, len(keys) + 1)
    first = ~keys.duplicated()
    return np.asarray(lines)[first.to_numpy()]


def _reps(teams: RawTable, start: pd.Timestamp) -> RawTable:
    agent, manager = _text(teams, "sales_agent"), _text(teams, "manager")
    region = _text(teams, "regional_office")
    hired = start.strftime("%Y-%m-%d")

    agents = pd.DataFrame(
        {
            "rep_id": agent,
            "name": agent,
            "manager_id": manager,
            "role": "rep",
            "team": manager,
            "region": region,
            "hired_at": hired,
        }
    )
    pairs = pd.DataFrame({"manager": manager, "region": region})
    first_manager = ~pairs["manager"].duplicated()
    managers = pairs[first_manager].reset_index(drop=True)
    managers = pd.DataFrame(
        {
            "rep_id": managers["manager"],
            "name": managers["manager"],
            "manager_id": managers["region"].map(_head_id),
            "role": "manager",
            "team": managers["manager"],
            "region": managers["region"],
            "hired_at": hired,
        }
    )
    regions = region[~region.duplicated()].reset_index(drop=True)
    heads = pd.DataFrame(
        {
            "rep_id": regions.map(_head_id),
            "name": "Head of " + regions + " (placeholder)",
            "manager_id": "",
            "role": "director",
            "team": regions + " leadership",
            "region": regions,
            "hired_at": hired,
        }
    )
    lines = np.concatenate(
        [
            np.asarray(teams.lines if teams.lines is not None else np.arange(2, len(agent) + 2)),
            _first_lines(teams, manager),
            _first_lines(teams, region),
        ]
    )
    frame = pd.concat([agents, managers, heads], ignore_index=True)
    return RawTable("reps", frame, teams.source, lines)


def _head_id(region: str) -> str:
    return "head-" + re.sub(r"\W+", "-", region.strip().lower())


def _products(products: RawTable) -> RawTable:
    name = _text(products, "product")
    frame = pd.DataFrame(
        {
            "product_id": name,
            "name": name,
            "family": _text(products, "series"),
            "list_price": _text(products, "sales_price"),
            "billing": BILLING,
        }
    )
    return RawTable("products", frame, products.source, products.lines)


def _product_key(name: pd.Series) -> pd.Series:
    """`GTXPro` and `GTX Pro` meet: case, spaces and punctuation do not tell products apart."""
    return name.str.lower().str.replace(r"[\W_]+", "", regex=True)


def _segment(employees: pd.Series) -> pd.Series:
    """smb / mid_market / enterprise by head count; unreadable counts stay empty for validate."""
    count = pd.to_numeric(employees, errors="coerce")
    small, large = SEGMENT_EMPLOYEES
    segment = np.select(
        [count < small, count < large, count >= large], ["smb", "mid_market", "enterprise"], ""
    )
    return pd.Series(segment, index=employees.index, dtype=object)


def _accounts(accounts: RawTable, start: pd.Timestamp) -> RawTable:
    name, employees = _text(accounts, "account"), _text(accounts, "employees")
    frame = pd.DataFrame(
        {
            "account_id": name,
            "name": name,
            "industry": _text(accounts, "sector").replace(SECTOR_FIXES),
            "region": _text(accounts, "office_location").replace(COUNTRY_FIXES),
            "segment": _segment(employees),
            "employees": employees,
            "created_at": start.strftime("%Y-%m-%d"),
        }
    )
    return RawTable("accounts", frame, accounts.source, accounts.lines)


def _deals(
    pipeline: RawTable, products: RawTable, as_of: pd.Timestamp
) -> tuple[RawTable, np.ndarray]:
    """The deals, and each deal's list price (its amount before any close)."""
    state = _text(pipeline, "deal_stage")
    catalogue = pd.DataFrame(
        {"product_id": _text(products, "product"), "price": _text(products, "sales_price")}
    )
    catalogue["key"] = _product_key(catalogue["product_id"])
    named = _text(pipeline, "product")
    matched = pd.DataFrame({"key": _product_key(named)}).merge(catalogue, on="key", how="left")
    # Unknown product names stay as written, so validate reports them with their line.
    product_id = matched["product_id"].fillna(named).to_numpy()
    list_price = matched["price"].fillna("").to_numpy()
    unmatched = int(matched["product_id"].isna().sum())
    if unmatched:
        log.warning("maven-crm: %d deals name a product missing from products.csv", unmatched)

    engaged = _text(pipeline, "engage_date")
    prospect_without_date = (engaged == "") & (state == "Prospecting")
    log.info(
        "maven-crm: %d Prospecting deals have no engage_date; created_at set to the as-of %s",
        int(prospect_without_date.sum()),
        as_of.date(),
    )
    won = (state == "Won").to_numpy()
    frame = pd.DataFrame(
        {
            "deal_id": _text(pipeline, "opportunity_id"),
            "account_id": _text(pipeline, "account"),
            "rep_id": _text(pipeline, "sales_agent"),
            "product_id": product_id,
            "created_at": engaged.where(~prospect_without_date, as_of.strftime("%Y-%m-%d")),
            "amount": np.where(won, _text(pipeline, "close_value"), list_price),
            "expected_close": "",
            "stage": state.map(STAGE_MAP).fillna(state),
            "closed_at": _text(pipeline, "close_date"),
            "outcome": state.map(OUTCOME_MAP).fillna(state),
        }
    )
    spelled = {str(n): str(p) for n, p in zip(named, product_id, strict=True) if n != p}
    translated = {"stage": STAGE_MAP, "product_id": spelled}
    return RawTable("deals", frame, pipeline.source, pipeline.lines, translated=translated), (
        list_price
    )


def _history(deals: RawTable, list_price: np.ndarray) -> RawTable:
    """A creation row per deal and a closing row per closed deal (no real history exists)."""
    d = deals.frame
    lines = np.asarray(deals.lines if deals.lines is not None else np.arange(1, len(d) + 1))
    created = pd.DataFrame(
        {
            "deal_id": d["deal_id"],
            "changed_at": d["created_at"],
            "stage": np.where(d["stage"] == "prospecting", "prospecting", "qualification"),
            "amount": list_price,
            "expected_close": "",
            "_line": lines,
            "_order": 0,
        }
    )
    is_closed = (d["closed_at"] != "").to_numpy()
    closing = pd.DataFrame(
        {
            "deal_id": d["deal_id"],
            "changed_at": d["closed_at"],
            "stage": d["stage"],
            "amount": d["amount"],
            "expected_close": "",
            "_line": lines,
            "_order": 1,
        }
    )[is_closed]
    both = pd.concat([created, closing], ignore_index=True).assign(origin=DERIVED)
    both = both.sort_values(["_line", "_order"], kind="stable", ignore_index=True)
    return RawTable(
        "deal_history",
        both.drop(columns=["_line", "_order"]),
        deals.source,
        both["_line"].to_numpy(),
        translated={"stage": STAGE_MAP},
    )
