"""What the CRM knew around a deal as of each snapshot: the rep's, team's and account's records,
product-in-industry fit, earlier quotes; built once, read per snapshot by binary search.

Everything here works on arrays: a snapshot is a deal's row in `DealFacts` (`deal`) and a moment
(`as_of`, datetime64[ns]); what does not change over a deal's life is worked out per deal
(`Own`) and read per snapshot by position."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecast.data.contract import OPEN_STAGES
from forecast.data.tables import CrmTables
from forecast.features.asof import Running, running_of, running_sums
from forecast.features.deal_codes import Ids, by_code, fit_key, take
from forecast.features.deal_facts import DealFacts, State, close_events
from forecast.features.deal_schema import Feature, attribute_features, unavailable_features

# the kinds of record (`_Records`): a rep's, a team's, a product's in an industry, a product's,
# then a rep's and a team's from each open stage on (closes of deals that reached it)
REP, TEAM, FIT, PRODUCT = range(4)

REP_FROM_STAGE = 4

TEAM_FROM_STAGE = REP_FROM_STAGE + len(OPEN_STAGES)


@dataclass(frozen=True)
class _Records:
    """Wins and closes per key of each kind of record (a rep, a team, a product...) as running
    sums over time, in one table: a snapshot's records of every kind are one lookup."""

    running: Running  # keyed by the kind's first code + the key's code
    first: np.ndarray  # per kind, its first code

    @classmethod
    def of(cls, closes: pd.DataFrame, kinds: Sequence[tuple[np.ndarray, int]]) -> _Records:
        """`kinds`: per kind, each close's key code (-1: nobody's record) and the count of
        codes (one more is kept free: a key the closes do not have, as a new rep)."""
        first = np.cumsum([0] + [size + 1 for _, size in kinds[:-1]])
        keys = np.concatenate(
            [np.where(codes >= 0, first[k] + codes, -1) for k, (codes, _) in enumerate(kinds)]
        )
        at = np.tile(closes["at"].to_numpy("datetime64[ns]"), len(kinds))
        won = np.tile(closes["won"].to_numpy(dtype=float), len(kinds))
        kept = keys >= 0
        values = {"won": won[kept], "n": np.ones(int(kept.sum()))}
        return cls(running_of(keys[kept], at[kept], values), first)

    def trailing(
        self, kinds: np.ndarray, codes: np.ndarray, as_of: np.ndarray, days: np.ndarray
    ) -> np.ndarray:
        """Wins and closes of each (kind, code) in (as_of - days, as_of], per lookup: shape
        (lookups, 2: won, closed); NaN for code or kind -1 (a blank rep or product is
        nobody's record, not one shared record)."""
        known = (codes >= 0) & (kinds >= 0)
        keys = np.where(known, self.first[kinds] + codes, -1)
        then = as_of - (days * (86400 * 10**9)).astype("timedelta64[ns]")
        _, sums = self.running.at_each(
            np.concatenate([keys, keys]), np.concatenate([as_of, then]), (0,)
        )
        now, before = sums[0, : len(keys)], sums[0, len(keys) :]
        return np.where(known[:, None], now - before, np.nan)


@dataclass(frozen=True)
class DealContext:
    """The records that span deals, ready for as-of lookups: wins and closes by account, rep,
    team, rep from each stage, product and product-in-industry; first quotes by product and
    segment; revenue by account; firmographics, hire dates and product families; and which
    features the stored CRM cannot give. Built once per store (`DealContext.of`).

    Ids are coded by position in the indexes (`codes_of`); the per-code arrays have one more
    value at the end, a missing id's."""

    account_index: Ids
    account_created: np.ndarray  # per account code
    firmographics: dict[str, np.ndarray]  # industry, region, segment per account code
    account_closes: Running  # won and lost per account code
    account_revenue: Running  # revenue per account code, a month known once ended
    rep_index: Ids
    rep_team: np.ndarray  # team code per rep code (a rep not in the index: the blank team's)
    hired: np.ndarray  # per rep code
    records: _Records  # wins and closes by rep, team, fit, product, rep and team from a stage
    fit_index: Ids
    product_index: Ids
    product_family: np.ndarray  # per product code
    quote_index: Ids
    quotes: Running  # log first quotes per (product, segment) code
    quoted: Ids  # deals whose first quote the quotes hold
    unavailable: dict[str, str]
    attributes: tuple[Feature, ...]

    @classmethod
    def of(cls, tables: CrmTables, *, facts: DealFacts | None = None) -> DealContext:
        """The context of `tables` (`facts`: `DealFacts.of(tables)` when already made)."""
        facts = facts or DealFacts.of(tables)
        closes = close_events(tables)
        accounts, by_account = _account_fields(tables, closes)
        reps, close_rep, close_team, n_teams = _rep_fields(tables, closes)
        n_reps = len(reps["rep_index"])
        records = _record_fields(tables, closes, (close_rep, n_reps), (close_team, n_teams))
        quote_index, quotes, quoted = _first_quotes(
            tables, facts, accounts["account_index"], by_account
        )
        return cls(
            **accounts,
            **reps,
            **records,
            quote_index=quote_index,
            quotes=quotes,
            quoted=quoted,
            unavailable=unavailable_features(tables),
            attributes=attribute_features(tables),
        )


def _account_fields(tables: CrmTables, closes: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """The accounts' part of the context (keyed as `DealContext`'s fields), and the accounts
    table by id."""
    accounts, deals, revenue = tables.accounts, tables.deals, tables.revenue
    known = pd.concat([accounts["account_id"], deals["account_id"]]).dropna()
    account_index = Ids(pd.unique(known.to_numpy()))
    close_account = account_index.index.get_indexer(closes["account_id"].to_numpy())
    by_account = accounts.set_index("account_id")
    month_ended = revenue["period"] + pd.offsets.MonthBegin(1)
    fields = {
        "account_index": account_index,
        "account_created": by_code(by_account["created_at"], account_index, "datetime64[ns]"),
        "firmographics": {
            column: by_code(by_account[column], account_index)
            for column in ("industry", "region", "segment")
        },
        "account_closes": running_sums(
            closes.assign(account=close_account),
            "account",
            "at",
            {"won": closes["won"].to_numpy(), "lost": closes["lost"].to_numpy()},
        ),
        "account_revenue": running_sums(
            pd.DataFrame(
                {
                    "account": account_index.index.get_indexer(revenue["account_id"].to_numpy()),
                    "at": month_ended.to_numpy(),
                }
            ),
            "account",
            "at",
            {"amount": revenue["amount"].to_numpy(dtype=float)},
        ),
    }
    return fields, by_account


def _rep_fields(
    tables: CrmTables, closes: pd.DataFrame
) -> tuple[dict, np.ndarray, np.ndarray, int]:
    """The reps' part of the context, and each close's rep and team codes and the team count."""
    reps, deals = tables.reps, tables.deals
    # reps may be absent from an export: the deals still say who owns them (one team then)
    known = pd.concat([reps["rep_id"], deals["rep_id"]]).dropna()
    rep_index = Ids(pd.unique(known.to_numpy()))
    team_of = reps.set_index("rep_id")["team"].reindex(rep_index.index).fillna("").to_numpy(object)
    team_index = pd.Index(pd.unique(team_of))
    close_rep = rep_index.index.get_indexer(closes["rep_id"].to_numpy())
    close_team = team_index.get_indexer(take(team_of, close_rep))
    # a rep the store has not seen is in no team: the blank team's record, if there is one
    blank_team = team_index.get_indexer([""])[0]
    rep_team = np.append(
        team_index.get_indexer(team_of), blank_team if blank_team >= 0 else len(team_index)
    )
    fields = {
        "rep_index": rep_index,
        "rep_team": rep_team,
        "hired": by_code(reps.set_index("rep_id")["hired_at"], rep_index, "datetime64[ns]"),
    }
    return fields, close_rep, close_team, len(team_index)


def _record_fields(
    tables: CrmTables,
    closes: pd.DataFrame,
    reps: tuple[np.ndarray, int],
    teams: tuple[np.ndarray, int],
) -> dict:
    """The win records as of each moment (rep, team, product in industry, product, and rep
    and team from each stage on), and the product keys they are read by."""
    products, deals = tables.products, tables.deals
    (close_rep, n_reps), (close_team, n_teams) = reps, teams
    fit_index = Ids(pd.unique(closes["fit"].dropna()))
    known = pd.concat([products["product_id"], deals["product_id"]]).dropna()
    product_index = Ids(pd.unique(known.to_numpy()))
    close_product = np.array(
        [None if key is None else key.split("|")[0] for key in closes["fit"]], dtype=object
    )
    reached = [closes["furthest"].to_numpy() >= code for code in range(len(OPEN_STAGES))]
    return {
        "records": _Records.of(
            closes,
            [
                (close_rep, n_reps),
                (close_team, n_teams),
                (fit_index.index.get_indexer(closes["fit"]), len(fit_index)),
                (product_index.index.get_indexer(close_product), len(product_index)),
                *((np.where(r, close_rep, -1), n_reps) for r in reached),
                *((np.where(r, close_team, -1), n_teams) for r in reached),
            ],
        ),
        "fit_index": fit_index,
        "product_index": product_index,
        "product_family": by_code(products.set_index("product_id")["family"], product_index),
    }


def _first_quotes(
    tables: CrmTables, facts: DealFacts, account_index: Ids, by_account: pd.DataFrame
) -> tuple[Ids, Running, Ids]:
    """First quotes as running sums of their logs per (product, segment): the keys, the sums,
    and the deals they hold."""
    state = State.of_facts(facts)
    amount, when = state.first_quotes(len(facts.deal_id))
    # in the order of the deals' ids (rows first quoted at the same moment sum in that order)
    deals = np.flatnonzero(~np.isnan(amount))
    deals = deals[np.argsort(facts.deal_id[deals].astype(str), kind="stable")]
    segment = by_account["segment"].reindex(facts.account_id[deals]).to_numpy()
    keys = fit_key(facts.product_id[deals], segment)
    key_index = Ids(pd.unique(pd.Series(keys, dtype=object).dropna()))
    values = {"log_amount": np.log(amount[deals]), "n": np.ones(len(deals))}
    running = running_of(key_index.index.get_indexer(keys), when[deals], values)
    return key_index, running, Ids(facts.deal_id[deals])
