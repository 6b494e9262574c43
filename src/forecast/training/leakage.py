"""The leak guard: before any fit, every mapped column is tested for knowing the outcome.

A CRM fills many fields only when a deal is won (owner, amount, account details), and its
expected close date of a closed deal is usually the day it closed. Mapped into features, such
columns make a model that looks excellent out of time and is useless on open deals. The guard
looks for the signatures, each on closed deals only:

- **filled for one outcome**: a column empty (or a placeholder such as `unknown`, or an amount
  of 0) for most deals of one outcome and filled for most of the other;
- **the close as the expected close**: the expected close known at creation lies within a day
  of the actual close for most closed deals (an estimate is rarely that good);
- **one column that separates**: a single feature's out-of-time ROC AUC on the test slice of
  LEAK_AUC or more at the lower end of its 90 % interval (rows resampled by deal or account),
  learned on the train slice (a category's win rate; a number as it is, or through a depth-3
  tree, which also finds a value leaky only in a band).

Every feature is tested by itself, so two leaky columns that share a model's gain are both
caught. Suspects are refused with the column, the evidence and the fix; `allow` names columns a
person has checked (logged to MLflow and shown on the model card).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binom
from sklearn.metrics import roc_auc_score

from forecast.data.contract import CLOSED_STAGES
from forecast.data.derive import history_is_derived
from forecast.data.tables import CrmTables
from forecast.training.evaluate import auc_differences

log = logging.getLogger(__name__)

BLANK_PURITY = 0.98  # an empty value this often of one outcome tells the outcome ...
BLANK_P_VALUE = 1e-6  # ... unless chance explains it at that outcome's share
FILL_GAP = 0.2  # filled for >= this share more of one outcome's deals than of the other's
CLOSE_MATCH = 0.5  # share of closed deals whose first expected close is within a day of the close
LEAK_AUC = 0.9  # one feature alone ranking deals this well out of time knows the outcome
TREE_ROWS = 50_000  # train rows the one-feature tree sees (a sample keeps the guard fast)
MIN_PER_OUTCOME = 20  # closed deals of each outcome needed before a rate is compared
PLACEHOLDERS = frozenset(
    {"", "unknown", "n/a", "na", "none", "null", "-", "--", "?", "tbd", "not set", "0"}
)

# The columns a feature reads, as a person names them in a mapping.
SOURCE_OF_FEATURE: Mapping[str, str] = {
    "amount": "deals.amount",
    "amount_vs_typical": "deals.amount",
    "amount_change_ratio": "deal_history.amount",
    "amount_changes": "deal_history.amount",
    "days_to_expected_close": "deals.expected_close",
    "expected_close_in_quarter": "deals.expected_close",
    "close_pushes": "deal_history.expected_close",
    "rep_win_rate": "deals.rep_id",
    "rep_stage_win_rate": "deals.rep_id",
    "rep_closed_deals_365d": "deals.rep_id",
    "rep_tenure_days": "reps.hired_at",
    "account_prior_wins": "deals.account_id",
    "account_prior_losses": "deals.account_id",
    "account_tenure_days": "accounts.created_at",
    "account_revenue_365d": "revenue",
    "industry": "accounts.industry",
    "region": "accounts.region",
    "segment": "accounts.segment",
    "product_id": "deals.product_id",
    "product_family": "products.family",
    "fit_win_rate": "deals.product_id",
}


def source_of(feature: str) -> str:
    """The mapped column a feature reads (`deals.amount`, `deal_attributes.lead_source`)."""
    if feature.startswith("attr_"):
        return f"deal_attributes.{feature.removeprefix('attr_')}"
    return SOURCE_OF_FEATURE.get(feature, feature)


class LeakageSuspected(RuntimeError):  # noqa: N818 (the name says what happened)
    """A feature looks like it knows the outcome: training stopped."""


@dataclass(frozen=True)
class Suspect:
    """One column that looks like it was filled in at or after the close."""

    column: str  # e.g. deals.amount, or a feature name
    kind: str  # filled_for_one_outcome | close_as_expected_close | separates_alone
    evidence: str
    fix: str

    def __str__(self) -> str:
        return f"{self.column}: {self.evidence}; {self.fix}"


def _fix_for(column: str) -> str:
    table, name = column.split(".")
    if table == "deal_attributes":
        return (
            f"declare the attribute {name} `known_at: closed` (it is then kept, never a "
            "feature), or leave it out of `attributes`"
        )
    return (
        "map a column the CRM fills when the deal is created; or, if the CRM sets it at the "
        f"close (a won deal's amount set to what was booked), train without it: `--leave-out "
        f"{column}` keeps it for bookings and out of the model; or leave it out of the import "
        f'with `{name}: "-"` under the {table}\' columns'
    )


def creation_values(tables: CrmTables) -> pd.DataFrame:
    """Closed deals with the values a mapping gave them, as known when each deal was created.

    Amount and expected close come from the deal's first open history row (its creation
    state; named `deal_history.` when the CRM recorded the history); the fixed facts from the
    deals row and its account. A deal that was never open (closed at its creation) is no
    snapshot of any model, so it is left out.
    """
    deals = tables.deals
    history = tables.deal_history.sort_values(["deal_id", "changed_at"], kind="stable")
    open_rows = history[~history["stage"].isin(CLOSED_STAGES)]
    first = open_rows.drop_duplicates("deal_id").set_index("deal_id")
    closed = deals[deals["outcome"].isin(("won", "lost")) & deals["deal_id"].isin(first.index)]
    ids = closed["deal_id"].to_numpy()
    states = "deals" if history_is_derived(tables.deal_history) else "deal_history"
    accounts = tables.accounts.set_index("account_id")
    account = closed["account_id"].to_numpy()
    frame = pd.DataFrame(
        {
            "won": (closed["outcome"] == "won").to_numpy(dtype=int),
            "closed_at": closed["closed_at"].to_numpy(),
            "deals.rep_id": closed["rep_id"].to_numpy(),
            "deals.account_id": account,
            "deals.product_id": closed["product_id"].to_numpy(),
            f"{states}.amount": first["amount"].reindex(ids).to_numpy(),
            f"{states}.expected_close": first["expected_close"].reindex(ids).to_numpy(),
        }
    )
    if len(tables.accounts):
        for column in ("industry", "segment", "region"):
            frame[f"accounts.{column}"] = accounts[column].reindex(account).to_numpy()
    attributes = tables.deal_attributes
    created = attributes[attributes["known_at"] == "created"]
    if len(created):
        table = created.pivot(index="deal_id", columns="name", values="value")
        for name in table.columns:
            frame[f"deal_attributes.{name}"] = table[name].reindex(ids).to_numpy()
    return frame


def joined_creation_values(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The `creation_values` of a store's parts as the whole store's (its columns in their
    order: an attribute no deal of a part has is still the whole's column)."""
    frame = pd.concat(parts, ignore_index=True)
    attributes = sorted(c for c in frame.columns if c.startswith("deal_attributes."))
    fixed = [c for c in frame.columns if not c.startswith("deal_attributes.")]
    return frame[[*fixed, *attributes]]


def _filled(values: pd.Series) -> np.ndarray:
    """Non-empty, not a placeholder, and not a zero amount (what a CRM writes on a loss)."""
    if pd.api.types.is_numeric_dtype(values):
        return (values.notna() & (values != 0)).to_numpy(dtype=bool)
    text = values.astype("string").str.strip().str.lower()
    return (values.notna() & ~text.isin(PLACEHOLDERS).fillna(True)).to_numpy(dtype=bool)


@dataclass(frozen=True)
class _Blank:
    """A column left empty only on deals of one outcome: an empty value tells the outcome."""

    outcome: str
    blank: int

    def at(self, column: str) -> Suspect:
        return Suspect(
            column,
            "blank_for_one_outcome",
            f"empty (or 0, or a placeholder) on {self.blank} closed deals, every one of them "
            f"{self.outcome}: an empty value tells the model the deal is {self.outcome}",
            _fix_for(column),
        )


def _blank_for_one_outcome(filled: np.ndarray, won: np.ndarray) -> _Blank | None:
    """When BLANK_PURITY of the deals that leave the column empty share an outcome, and chance
    cannot explain it (binomial tail below BLANK_P_VALUE at that outcome's overall share): a
    CRM clears the field, or never fills it, on that outcome."""
    blank = ~filled
    n = int(blank.sum())
    if n < MIN_PER_OUTCOME or blank.all():
        return None
    for outcome, mask in (("lost", ~won), ("won", won)):
        hits = int(mask[blank].sum())
        if hits >= BLANK_PURITY * n and binom.sf(hits - 1, n, mask.mean()) < BLANK_P_VALUE:
            return _Blank(outcome, n)
    return None


def screen_columns(tables: CrmTables) -> list[Suspect]:
    """The mapped columns whose creation-time values look filled in at the close."""
    return screen_values(creation_values(tables))


def screen_values(frame: pd.DataFrame) -> list[Suspect]:
    """`screen_columns` of the closed deals' `creation_values` (made per part of a store in
    parts and put together: `joined_creation_values`)."""
    won = frame["won"].to_numpy(dtype=bool)
    if won.sum() < MIN_PER_OUTCOME or (~won).sum() < MIN_PER_OUTCOME:
        return []
    suspects = []
    expected_column = next(c for c in frame.columns if c.endswith(".expected_close"))
    for column in frame.columns.drop(["won", "closed_at", expected_column]):
        values = frame[column]
        if not values.notna().any():
            continue
        filled = _filled(values)
        rate_won, rate_lost = filled[won].mean(), filled[~won].mean()
        if abs(rate_won - rate_lost) < FILL_GAP:
            if (blank := _blank_for_one_outcome(filled, won)) is not None:
                suspects.append(blank.at(column))
        else:
            more = "won" if rate_won > rate_lost else "lost"
            suspects.append(
                Suspect(
                    column,
                    "filled_for_one_outcome",
                    f"filled for {rate_won:.0%} of won and {rate_lost:.0%} of lost deals "
                    f"(empty, 0 or a placeholder such as 'unknown' counted as not filled): the "
                    f"CRM fills it when a deal is {more}",
                    _fix_for(column),
                )
            )
    expected = pd.to_datetime(frame[expected_column])
    known = expected.notna().to_numpy()
    if known.sum() >= 2 * MIN_PER_OUTCOME:
        gap = (expected - pd.to_datetime(frame["closed_at"]).dt.normalize()).abs()
        share = float((gap[known] <= pd.Timedelta(days=1)).mean())
        if share >= CLOSE_MATCH:
            suspects.append(
                Suspect(
                    expected_column,
                    "close_as_expected_close",
                    f"for {share:.0%} of closed deals the expected close known at creation is "
                    "within a day of the actual close: it is the final close date, set at the "
                    "close",
                    "map the expected close as first entered (or export the stage history), or "
                    'leave it out with `expected_close: "-"` under the deals\' columns',
                )
            )
    return suspects


def single_feature_score(
    train: pd.DataFrame, test: pd.DataFrame, feature: str, categorical: bool, label: str = "won"
) -> np.ndarray | None:
    """One feature alone as a score of the test slice's rows, learned out of time, in its
    better direction; None when it cannot rank (one outcome, or no value).

    Categories score their win rate on the train slice (unseen ones the base rate); numbers
    score themselves, missing values as their own lowest value, or through a depth-3 tree where
    that ranks better.
    """
    y = test[label].to_numpy(dtype=int)
    if len(np.unique(y)) < 2:
        return None
    if categorical:
        key_train = train[feature].astype("string").fillna("(missing)")
        rates = train[label].groupby(key_train.to_numpy()).mean()
        key_test = test[feature].astype("string").fillna("(missing)")
        score = key_test.map(rates).fillna(train[label].mean()).to_numpy(dtype=float)
    else:
        values = pd.to_numeric(test[feature], errors="coerce").to_numpy(dtype=float)
        if np.isnan(values).all():
            return None
        score = np.where(np.isnan(values), np.nanmin(values) - 1, values)
        # a small tree also sees a value that is leaky only in a band (not just high or low)
        banded = _small_tree_score(train, test, feature, label)
        if banded is not None and _auc(y, banded) > _auc(y, score):
            score = banded
    return score if roc_auc_score(y, score) >= 0.5 else -score


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    auc = float(roc_auc_score(y, score))
    return max(auc, 1 - auc)


def _small_tree_score(
    train: pd.DataFrame, test: pd.DataFrame, feature: str, label: str
) -> np.ndarray | None:
    """P(label) from a depth-3 tree on the feature alone (missing as its own value), or None."""
    from sklearn.tree import DecisionTreeClassifier

    sample = train.sample(min(len(train), TREE_ROWS), random_state=0) if len(train) else train
    x = pd.to_numeric(sample[feature], errors="coerce").to_numpy(dtype=float)
    y = sample[label].to_numpy(dtype=int)
    if len(np.unique(y)) < 2 or np.isnan(x).all():
        return None
    low = np.nanmin(x) - 1
    tree = DecisionTreeClassifier(max_depth=3, min_samples_leaf=20, random_state=0)
    tree.fit(np.where(np.isnan(x), low, x).reshape(-1, 1), y)
    values = pd.to_numeric(test[feature], errors="coerce").to_numpy(dtype=float)
    return tree.predict_proba(np.where(np.isnan(values), low, values).reshape(-1, 1))[:, 1]


def screen_features(
    train: pd.DataFrame,
    test: pd.DataFrame,
    features: Iterable,
    label: str = "won",
    *,
    group: str | None = None,
    can_leave_out: bool,
) -> tuple[list[Suspect], dict[str, float]]:
    """Each feature alone, out of time: those that separate the outcomes too well, and every AUC.

    A feature is refused when the lower end of its AUC's 90 % interval (test rows resampled by
    `group`: a deal's or an account's snapshots together) is at the limit or above: on a small
    test slice an honest feature's AUC can come out past the limit by chance (an account's
    latest usage, 0.82 on the default world, scored 0.91 on 226 snapshots of a small one).
    `can_leave_out`: the pipeline trains without a column (`--leave-out`), the deal-win one."""
    y = test[label].to_numpy(dtype=int)
    scores = {
        f.name: single_feature_score(train, test, f.name, f.kind == "categorical", label)
        for f in features
    }
    aucs = {
        name: 0.5 if score is None else float(roc_auc_score(y, score))
        for name, score in scores.items()
    }
    groups = test[group].to_numpy() if group in test.columns else None
    suspects = []
    for name, auc in aucs.items():
        score = scores[name]
        if auc < LEAK_AUC or score is None:
            continue
        coin = auc_differences(y, score, {"coin": None}, groups, rounds=200)["coin"]
        low, high = 0.5 + np.quantile(coin, [0.05, 0.95]) if len(coin) else (auc, auc)
        interval = f"90 % interval {low:.3f} .. {high:.3f} over {len(y):,} rows"
        if low < LEAK_AUC:
            log.warning(
                "%s alone ranks the test slice with ROC AUC %.3f, past the leak guard's %s, "
                "but within noise of it (%s): not refused", name, auc, LEAK_AUC, interval
            )  # fmt: skip
            continue
        suspects.append(
            Suspect(
                source_of(name),
                "separates_alone",
                f"the feature {name} alone ranks the test slice's outcomes with ROC AUC "
                f"{auc:.3f} ({interval}; limit {LEAK_AUC}); no honest single fact known at a "
                "snapshot does that",
                _fix(source_of(name), can_leave_out),
            )
        )
    return suspects, aucs


def _fix(column: str, can_leave_out: bool) -> str:
    if not can_leave_out:
        return (
            "check when the column is filled; if it is known at each snapshot, allow it with "
            f"--allow-column {column}"
        )
    return (
        "check when the column is filled; if it is known at creation, allow it with "
        f"--allow-column {column}; if the CRM sets it at the close, train without it: "
        f"--leave-out {column}"
    )


def _one_per_column(suspects: Sequence[Suspect]) -> list[Suspect]:
    """Suspects of the same column (several features read it) as one, with all the evidence."""
    by_column: dict[str, list[Suspect]] = {}
    for suspect in suspects:
        by_column.setdefault(suspect.column, []).append(suspect)
    return [
        group[0]
        if len(group) == 1
        else Suspect(
            column,
            group[0].kind,
            "; ".join(dict.fromkeys(s.evidence for s in group)),
            group[0].fix,
        )
        for column, group in by_column.items()
    ]


def refuse(
    suspects: Sequence[Suspect], allowed: Iterable[str] = (), *, can_leave_out: bool
) -> list[Suspect]:
    """Raise for every suspect not allowed; return the allowed ones (to log and show).
    `can_leave_out`: as in `screen_features`, which options the message names."""
    allowed = set(allowed)
    suspects = _one_per_column(suspects)
    kept = [
        s for s in suspects if s.column not in allowed and s.column.split(".")[-1] not in allowed
    ]
    if kept:
        lines = "\n".join(f"  - {s}" for s in kept)
        how = (
            "A column known only at or after the close makes a model that cannot score open "
            "deals. If a column is in fact known when the deal is created, train with "
            "--allow-column COLUMN; if it is set at the close, --leave-out COLUMN keeps it "
            "out of the model (both recorded in MLflow and on the model card)."
            if can_leave_out
            else "A column filled only after the outcome (as when an account leaves) makes a "
            "model that cannot score accounts today. If a column is in fact known at each "
            "snapshot, train with --allow-column COLUMN (recorded in MLflow and on the model "
            "card)."
        )
        raise LeakageSuspected(
            f"suspected leakage in {len(kept)} column(s); nothing was trained:\n{lines}\n{how}"
        )
    return [s for s in suspects if s not in kept]
