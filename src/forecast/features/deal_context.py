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

from forecast.data import derive
from forecast.data.contract import OPEN_STAGES
from forecast.data.tables import STRING, CrmTables
from forecast.features.asof import Running, running_in_order, running_of, running_sums
from forecast.features.deal_codes import Ids, by_code, fit_key, take
from forecast.features.deal_facts import DealFacts, State, close_events
from forecast.features.deal_schema import (
    Feature,
    attribute_kinds,
    attributes_known_at_creation,
    unavailable_features,
)

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
        at = closes["at"].to_numpy("datetime64[ns]")
        # a kind at a time in (key, time) order: the kinds' keys follow each other, so the
        # whole table is in order without sorting all of it (tens of millions of rows at scale)
        keys, rows = [], []
        for start, (codes, _) in zip(first, kinds, strict=True):
            mine = _in_key_order(codes, at)
            keys.append(start + codes[mine])
            rows.append(mine)
        taken = np.concatenate(rows)
        won = closes["won"].to_numpy(dtype=float)[taken]
        values = {"won": won, "n": np.ones(len(taken))}
        return cls(running_in_order(np.concatenate(keys), at[taken], values), first)

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
        return cls.of_own(tables, OwnRows.of(tables, facts=facts))

    @classmethod
    def of_own(cls, tables: CrmTables, own: OwnRows) -> DealContext:
        """The context of `tables` whose deals' own rows (history, activities, attributes) are
        summed up in `own`: `tables` need not hold those rows (a store in parts, read by the
        workers, `forecast.features.on_dask`)."""
        closes = own.closes.assign(fit=fit_key(*_product_and(tables, own.closes, "industry")))
        accounts = _account_fields(tables, closes)
        reps, close_rep, close_team, n_teams = _rep_fields(tables, closes)
        n_reps = len(reps["rep_index"])
        records = _record_fields(tables, closes, (close_rep, n_reps), (close_team, n_teams))
        quote_index, quotes, quoted = _first_quotes(tables, own.quotes)
        return cls(
            **accounts,
            **reps,
            **records,
            quote_index=quote_index,
            quotes=quotes,
            quoted=quoted,
            unavailable=unavailable_features(
                tables, history_derived=own.history_derived, activities=own.activities
            ),
            attributes=attribute_kinds(own.attributes, own.text_attributes),
        )


@dataclass(frozen=True)
class OwnRows:
    """What the context reads of the deals' own rows: their closes and first quotes, the
    attributes known at creation, whether the history is derived and how many activities
    there are; small beside the rows. Made per part of a store in parts (each part holding
    its deals' rows), `joined` in the parts' order, it is what the whole store gives."""

    closes: pd.DataFrame  # `close_events`, in the order of the close times
    quotes: pd.DataFrame  # deal_id, account_id, product_id, amount, at: first quotes, by deal id
    attributes: tuple[str, ...]  # names known at creation, sorted
    text_attributes: tuple[str, ...]  # those of them holding a value that is not a number
    history_rows: int
    derived_rows: int  # history rows derived on import, not recorded by the CRM
    activities: int

    @property
    def history_derived(self) -> bool:
        """The history was derived on import (`derive.history_is_derived`)."""
        return self.history_rows > 0 and self.derived_rows == self.history_rows

    @classmethod
    def of(cls, tables: CrmTables, *, facts: DealFacts | None = None) -> OwnRows:
        facts = facts or DealFacts.of(tables)
        amount, when = State.of_facts(facts).first_quotes(len(facts.deal_id))
        quoted = np.flatnonzero(~np.isnan(amount))
        history = tables.deal_history
        attributes, text_attributes = attributes_known_at_creation(tables.deal_attributes)
        return cls(
            closes=close_events(tables),
            quotes=pd.DataFrame(
                {
                    "deal_id": pd.array(facts.deal_id[quoted], dtype=STRING),
                    "account_id": pd.array(facts.account_id[quoted], dtype=STRING),
                    "product_id": pd.array(facts.product_id[quoted], dtype=STRING),
                    "amount": amount[quoted],
                    "at": when[quoted],
                }
            ),
            attributes=attributes,
            text_attributes=text_attributes,
            history_rows=len(history),
            derived_rows=int(history["origin"].eq(derive.DERIVED).fillna(False).sum()),
            activities=len(tables.activities),
        )

    @classmethod
    def joined(cls, parts: Sequence[OwnRows]) -> OwnRows:
        """The parts' own rows as one (closes at the same moment keep the parts' order, as
        the parts' rows read back in order do)."""
        closes = pd.concat([p.closes for p in parts], ignore_index=True)
        at = closes["at"].to_numpy("datetime64[ns]").view(np.int64)
        return cls(
            closes=closes.iloc[np.argsort(at, kind="stable")].reset_index(drop=True),
            quotes=pd.concat([p.quotes for p in parts], ignore_index=True),
            attributes=tuple(sorted(set().union(*(p.attributes for p in parts)))),
            text_attributes=tuple(sorted(set().union(*(p.text_attributes for p in parts)))),
            history_rows=sum(p.history_rows for p in parts),
            derived_rows=sum(p.derived_rows for p in parts),
            activities=sum(p.activities for p in parts),
        )


def _in_key_order(codes: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The rows with a code (>= 0) in (code, time) order; ties in the order given."""
    kept = np.flatnonzero(codes >= 0)
    return kept[np.lexsort((at[kept].view(np.int64), codes[kept]))]


def _product_and(
    tables: CrmTables, rows: pd.DataFrame, column: str
) -> tuple[np.ndarray, np.ndarray]:
    """The rows' product ids and their accounts' `column` (industry, segment)."""
    by_account = tables.accounts.set_index("account_id")[column]
    return (
        rows["product_id"].to_numpy(),
        by_account.reindex(rows["account_id"].to_numpy()).to_numpy(),
    )


def _account_fields(tables: CrmTables, closes: pd.DataFrame) -> dict:
    """The accounts' part of the context (keyed as `DealContext`'s fields)."""
    accounts, deals, revenue = tables.accounts, tables.deals, tables.revenue
    known = pd.concat([accounts["account_id"], deals["account_id"]]).dropna()
    account_index = Ids(pd.unique(known.to_numpy()))
    close_account = account_index.index.get_indexer(closes["account_id"].to_numpy())
    by_account = accounts.set_index("account_id")
    month_ended = revenue["period"] + pd.offsets.MonthBegin(1)
    return {
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


def _first_quotes(tables: CrmTables, quotes: pd.DataFrame) -> tuple[Ids, Running, Ids]:
    """First quotes as running sums of their logs per (product, segment): the keys, the sums,
    and the deals they hold."""
    # in the order of the deals' ids (rows first quoted at the same moment sum in that order)
    quotes = quotes.iloc[np.argsort(quotes["deal_id"].to_numpy().astype(str), kind="stable")]
    keys = fit_key(*_product_and(tables, quotes, "segment"))
    key_index = Ids(pd.unique(pd.Series(keys, dtype=object).dropna()))
    amount = quotes["amount"].to_numpy(dtype=float)
    values = {"log_amount": np.log(amount), "n": np.ones(len(quotes))}
    when = quotes["at"].to_numpy("datetime64[ns]")
    running = running_of(key_index.index.get_indexer(keys), when, values)
    return key_index, running, Ids(quotes["deal_id"].to_numpy())
