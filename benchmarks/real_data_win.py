"""Benchmark: deal win probability on public data, out of time (maven-crm, UCI bank marketing).

Prints tables of ROC AUC, PR AUC, log loss, Brier score and ECE on a later test period for the
project's model pipelines (`forecast.model.make_lightgbm`, `make_logistic`, `calibrate`) and
simple baselines; asserts nothing. Needs the public datasets in ../shared/data (see their
SOURCE.md files); no network.

    .venv/bin/python benchmarks/real_data_win.py --dataset maven
    .venv/bin/python benchmarks/real_data_win.py --dataset bank
    .venv/bin/python benchmarks/real_data_win.py                  # both

maven-crm (synthetic B2B pipeline): one row per closed deal, built only from facts known at its
engage date (`maven_features`). Agent and account records come from deals closed strictly before
that date. Label: won vs lost. Split: engage date.

UCI bank marketing (real telemarketing, B2C): `duration` dropped; the year is inferred from
month resets (`bank_frame`); train on earlier rows, test on the last 20 % and on a rolling
(expanding) window of four later blocks, as Moro et al. (2014) did.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecast.data.sources.maven import read_maven_crm
from forecast.data.tables import CrmTables
from forecast.data.validate import validate
from forecast.features.deal_schema import Feature
from forecast.model import (
    LIBRARY_DEFAULTS,
    TreeParams,
    calibrate,
    make_lightgbm,
    make_logistic,
    model_input,
)
from forecast.training.choice import fit_and_choose
from forecast.training.drift import HALF_LIVES, ROLLING_FOLDS
from forecast.training.evaluate import StageRates, compare
from forecast.training.task import CANDIDATES, Task

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHOWN = ("auc", "pr_auc", "log_loss", "brier", "ece", "mean_predicted", "win_rate", "n")

# Beside LightGBM's own defaults (`LIBRARY_DEFAULTS`, "out of the box"): the project's defaults
# (`TreeParams()`, tuned on the generated world) and a strongly regularised variant for small,
# noisy data. One thread: on a shared, loaded machine two LightGBM threads ran up to 70x slower
# (FIELD-NOTES).
PROJECT = TreeParams(n_jobs=1)
REGULARISED = TreeParams(
    n_estimators=200,
    learning_rate=0.03,
    num_leaves=7,
    min_child_samples=200,
    reg_lambda=10.0,
    subsample=0.8,
    colsample_bytree=0.5,
    n_jobs=1,
)
PRIOR_DEALS = 10  # a record's win rate counts this many deals at the company's rate so far


# --- maven-crm -------------------------------------------------------------------------------

MAVEN_FEATURES: tuple[Feature, ...] = (
    Feature("agent", "categorical"),
    Feature("manager", "categorical"),
    Feature("office", "categorical"),
    Feature("product", "categorical"),
    Feature("series", "categorical"),
    Feature("list_price"),
    Feature("sector", "categorical"),
    Feature("country", "categorical"),
    Feature("account_revenue"),
    Feature("account_employees"),
    Feature("account_year_established"),
    Feature("engage_month"),
    Feature("engage_quarter", "categorical"),
    Feature("agent_prior_won"),
    Feature("agent_prior_lost"),
    Feature("agent_prior_win_rate"),
    Feature("agent_product_prior_closed"),
    Feature("agent_product_prior_win_rate"),
    Feature("account_prior_won"),
    Feature("account_prior_lost"),
    Feature("account_prior_win_rate"),
)
# Columns of the deals table that describe the deal's own outcome: never read for its features.
OUTCOME_COLUMNS = (
    "stage",
    "outcome",
    "closed_at",
    "amount",
    "deal_stage",
    "close_date",
    "close_value",
)


def load_maven(folder: Path) -> tuple[CrmTables, pd.DataFrame]:
    """Validated canonical tables, plus the account firmographics the canonical tables drop.

    `revenue` and `year_established` are fixed account facts (no dates attached, like sector and
    head count); the adapter does not map them, so they are read here by account name.
    """
    raw, as_of = read_maven_crm(folder)
    tables = validate(raw, as_of=as_of)
    extra = pd.read_csv(folder / "accounts.csv", usecols=["account", "revenue", "year_established"])
    extra = extra.rename(columns={"account": "account_id"})
    return tables, extra


def _prior_record(
    deals: pd.DataFrame, closes: pd.DataFrame, key: list[str], prefix: str
) -> pd.DataFrame:
    """Won / lost counts of `key`'s deals closed strictly before each deal's engage date.

    `deals` has `row`, `created_at` and the key columns; `closes` one row per closed deal with
    `closed_at`, `won` and the key columns. `merge_asof` with exact matches excluded: a deal
    closed on the engage day is not counted (dates have no time of day).
    """
    joined = "\x1f".join
    left = deals.assign(_k=deals[key].astype(str).agg(joined, axis=1))
    right = closes.assign(_k=closes[key].astype(str).agg(joined, axis=1))
    right = right.sort_values(["_k", "closed_at"], kind="stable")
    right["_won"] = right.groupby("_k")["won"].cumsum()
    right["_n"] = right.groupby("_k").cumcount() + 1
    right = right.sort_values("closed_at", kind="stable")
    left = left.sort_values("created_at", kind="stable")
    at = (
        pd.merge_asof(
            left[["row", "_k", "created_at"]],
            right[["_k", "closed_at", "_won", "_n"]],
            left_on="created_at",
            right_on="closed_at",
            by="_k",
            direction="backward",
            allow_exact_matches=False,
        )
        .set_index("row")
        .sort_index()
    )
    won = at["_won"].fillna(0.0).to_numpy(dtype=float)
    n = at["_n"].fillna(0.0).to_numpy(dtype=float)
    no_key = deals.sort_values("row")[key].isna().any(axis=1).to_numpy()
    return pd.DataFrame(
        {
            f"{prefix}_won": np.where(no_key, np.nan, won),
            f"{prefix}_lost": np.where(no_key, np.nan, n - won),
            f"{prefix}_n": np.where(no_key, np.nan, n),
        }
    )


def maven_features(tables: CrmTables, extra: pd.DataFrame) -> pd.DataFrame:
    """One row per deal with an engage date: facts known at engage time, `won` label, dates.

    From the deal itself only its id, agent, product, account and engage date (`created_at`)
    are read; the rest comes from the reps, products and accounts tables and from OTHER deals
    closed strictly before this deal's engage date. `won` (1/0, NaN when open), `closed_at` and
    `engaged_at` are returned for labelling and splitting, never as features.
    """
    deals = tables.deals
    reps = tables.reps.set_index("rep_id")
    products = tables.products.set_index("product_id")
    accounts = tables.accounts.set_index("account_id")
    extra = extra.set_index("account_id")
    own = deals[["deal_id", "rep_id", "product_id", "account_id", "created_at"]].copy()
    # Prospecting rows have no engage date (the adapter sets it to the as-of): not engaged yet.
    engaged = (deals["stage"] != "prospecting").to_numpy()
    own = own[engaged].reset_index(drop=True)
    own["row"] = np.arange(len(own))

    out = pd.DataFrame({"deal_id": own["deal_id"].to_numpy()})
    agent = own["rep_id"].to_numpy(dtype=object)
    product = own["product_id"].to_numpy(dtype=object)
    account = own["account_id"].astype(object).where(own["account_id"].notna(), None)
    out["agent"] = agent
    out["manager"] = reps["manager_id"].reindex(agent).to_numpy(dtype=object)
    out["office"] = reps["region"].reindex(agent).to_numpy(dtype=object)
    out["product"] = product
    out["series"] = products["family"].reindex(product).to_numpy(dtype=object)
    out["list_price"] = products["list_price"].reindex(product).to_numpy(dtype=float)
    out["sector"] = accounts["industry"].reindex(account).to_numpy(dtype=object)
    out["country"] = accounts["region"].reindex(account).to_numpy(dtype=object)
    out["account_revenue"] = extra["revenue"].reindex(account).to_numpy(dtype=float)
    out["account_employees"] = accounts["employees"].reindex(account).to_numpy(dtype=float)
    out["account_year_established"] = (
        extra["year_established"].reindex(account).to_numpy(dtype=float)
    )
    created = pd.DatetimeIndex(own["created_at"])
    out["engage_month"] = created.month.to_numpy(dtype=float)
    out["engage_quarter"] = ("Q" + pd.Series(created.quarter).astype(str)).to_numpy(dtype=object)

    # Other deals' closes: the only place outcomes enter, always dated before the engage date.
    closed = deals[deals["outcome"].isin(["won", "lost"])]
    closes = pd.DataFrame(
        {
            "rep_id": closed["rep_id"].to_numpy(dtype=object),
            "product_id": closed["product_id"].to_numpy(dtype=object),
            "account_id": closed["account_id"].astype(object).to_numpy(),
            "closed_at": pd.DatetimeIndex(closed["closed_at"]).as_unit("ns"),
            "won": (closed["outcome"] == "won").to_numpy(dtype=float),
        }
    )
    closes = closes[closes["closed_at"].notna()]
    left = pd.DataFrame(
        {
            "row": own["row"].to_numpy(),
            "rep_id": agent,
            "product_id": product,
            "account_id": account.to_numpy(),
            "created_at": created.as_unit("ns"),
        }
    )
    # the company's win rate so far (from a 1-in-2 prior): what each record is shrunk towards
    company = _prior_record(left.assign(_all=0), closes.assign(_all=0), ["_all"], "company")
    prior_rate = ((company["company_won"] + 1) / (company["company_n"] + 2)).to_numpy()
    for prefix, key in (
        ("agent_prior", ["rep_id"]),
        ("agent_product_prior", ["rep_id", "product_id"]),
        ("account_prior", ["account_id"]),
    ):
        record = _prior_record(left, closes, key, prefix)
        won, n = record[f"{prefix}_won"], record[f"{prefix}_n"]
        if prefix == "agent_product_prior":
            out[f"{prefix}_closed"] = n.to_numpy()
        else:
            out[f"{prefix}_won"] = won.to_numpy()
            out[f"{prefix}_lost"] = record[f"{prefix}_lost"].to_numpy()
        # shrunk towards a fixed prior so that the first few deals do not swing it to 0 or 1
        out[f"{prefix}_win_rate"] = (
            (won + PRIOR_DEALS * prior_rate) / (n + PRIOR_DEALS)
        ).to_numpy()

    outcome = deals["outcome"].to_numpy(dtype=object)[engaged]
    out["won"] = np.where(outcome == "won", 1.0, np.where(outcome == "lost", 0.0, np.nan))
    out["engaged_at"] = created.to_numpy()
    out["closed_at"] = pd.DatetimeIndex(deals["closed_at"]).to_numpy()[engaged]
    return out


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    cutoff: pd.Timestamp
    description: str


def maven_split(frame: pd.DataFrame, *, test_share: float = 0.3, strict: bool = True) -> Split:
    """Out of time by engage date: the latest `test_share` of closed deals form the test set.

    The cutoff is the engage date at the (1 - test_share) quantile of the closed deals. Test:
    deals engaged on or after it and closed by the export's end. Train: deals engaged before it;
    with `strict`, only those also closed before it (the labels one would have had on the cutoff
    day); otherwise also those closed later (their labels come from the test period).
    """
    closed = frame[frame["won"].notna()]
    cutoff = pd.Timestamp(closed["engaged_at"].quantile(1 - test_share)).normalize()
    early = closed["engaged_at"] < cutoff
    train = closed[early & (closed["closed_at"] < cutoff)] if strict else closed[early]
    test = closed[~early]
    how = "closed before the cutoff" if strict else "closed any time"
    return Split(
        train.reset_index(drop=True),
        test.reset_index(drop=True),
        cutoff,
        f"train: engaged before {cutoff.date()} and {how} ({len(train):,}); "
        f"test: engaged {cutoff.date()} or later, closed by the end ({len(test):,})",
    )


def _fit_and_score(
    train: pd.DataFrame,
    test: pd.DataFrame,
    features: tuple[Feature, ...],
    *,
    calibration_share: float = 0.2,
    order: str,
    logistic_c: float = 0.1,
) -> dict[str, np.ndarray]:
    """P(won) on `test` from each candidate pipeline fitted on `train` (rows in time order)."""
    x_train, x_test = model_input(train, features), model_input(test, features)
    y_train = train["won"].to_numpy(dtype=int)
    scores: dict[str, np.ndarray] = {}
    for name, model in (
        ("lightgbm (library defaults)", make_lightgbm(features, params=LIBRARY_DEFAULTS)),
        ("lightgbm (project TreeParams)", make_lightgbm(features, params=PROJECT)),
        ("lightgbm (regularised)", make_lightgbm(features, params=REGULARISED)),
        (f"logistic (C={logistic_c})", make_logistic(features, c=logistic_c)),
    ):
        scores[name] = model.fit(x_train, y_train).predict_proba(x_test)[:, 1]
    # calibrated: fit on the earlier part of train, calibration map on its latest slice
    ordered = train.sort_values(order, kind="stable").reset_index(drop=True)
    cut = int(len(ordered) * (1 - calibration_share))
    fit_part, cal_part = ordered.iloc[:cut], ordered.iloc[cut:]
    for name, model in (
        ("lightgbm (regularised) + calibration", make_lightgbm(features, params=REGULARISED)),
        (f"logistic (C={logistic_c}) + calibration", make_logistic(features, c=logistic_c)),
    ):
        model.fit(model_input(fit_part, features), fit_part["won"].to_numpy(dtype=int))
        cal = calibrate(
            model,
            model_input(cal_part, features),
            cal_part["won"].to_numpy(dtype=int),
            np.arange(len(cal_part)),
        )
        # sigmoid or isotonic, whichever has the lower out-of-fold log loss on the slice
        scores[name] = cal.model.predict_proba(x_test)[:, 1]
    return scores


def run_maven(folder: Path, *, strict: bool = True) -> tuple[Split, pd.DataFrame]:
    tables, extra = load_maven(folder)
    frame = maven_features(tables, extra)
    split = maven_split(frame, strict=strict)
    train, test = split.train, split.test
    y_test = test["won"].to_numpy()
    overall = float(train["won"].mean())
    agent_rates = StageRates.learn(train["agent"], train["won"].to_numpy())
    scores = {
        "baseline: overall train win rate": np.full(len(test), overall),
        "baseline: agent's train win rate": agent_rates.predict(test["agent"]),
        "baseline: agent's point-in-time rate": test["agent_prior_win_rate"].to_numpy(),
    }
    scores |= _fit_and_score(train, test, MAVEN_FEATURES, order="engaged_at")
    return split, compare(y_test, scores)


def maven_censoring(folder: Path) -> pd.DataFrame:
    """Per engage month: deals, share still open at the end, win rate among closed, cycle."""
    tables, extra = load_maven(folder)
    frame = maven_features(tables, extra)
    month = pd.DatetimeIndex(frame["engaged_at"]).to_period("M")
    cycle = (frame["closed_at"] - frame["engaged_at"]).dt.days
    return (
        frame.assign(month=month, cycle=cycle, open=frame["won"].isna())
        .groupby("month")
        .agg(
            deals=("won", "size"),
            open_share=("open", "mean"),
            win_rate=("won", "mean"),
            median_cycle_days=("cycle", "median"),
        )
    )


# --- UCI bank marketing ----------------------------------------------------------------------

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
MACRO = ("emp.var.rate", "cons.price.idx", "cons.conf.idx", "euribor3m", "nr.employed")
BANK_FEATURES: tuple[Feature, ...] = (
    Feature("age"),
    *(
        Feature(c, "categorical")
        for c in ("job", "marital", "education", "default", "housing", "loan", "contact")
    ),
    Feature("month", "categorical"),
    Feature("day_of_week", "categorical"),
    Feature("campaign"),
    Feature("pdays"),  # 999 ("never contacted") made missing; previously_contacted says which
    Feature("previously_contacted"),
    Feature("previous"),
    Feature("poutcome", "categorical"),
    *(Feature(c) for c in MACRO),
)
BANK_WITHOUT_MACRO = tuple(f for f in BANK_FEATURES if f.name not in MACRO)


def bank_frame(path: Path) -> pd.DataFrame:
    """The calls in file (date) order, `duration` dropped, `year` inferred, `won` = y."""
    frame = pd.read_csv(path, sep=";")
    frame = frame.drop(columns="duration")  # known only after the call: a leak (UCI's warning)
    month = frame["month"].map({m: i + 1 for i, m in enumerate(MONTHS)}).to_numpy()
    # rows are ordered by date: a month number lower than the previous row's starts a new year
    resets = np.concatenate([[0], (np.diff(month) < 0).astype(int)]).cumsum()
    frame["year"] = 2008 + resets
    frame["period"] = pd.PeriodIndex.from_fields(year=frame["year"], month=month, freq="M")
    frame["previously_contacted"] = (frame["pdays"] != 999).astype(float)
    frame["pdays"] = frame["pdays"].where(frame["pdays"] != 999)
    frame["won"] = (frame["y"] == "yes").astype(float)
    frame["order"] = np.arange(len(frame))
    frame["as_of"] = _call_dates(frame).dt.to_period("W-SUN").dt.start_time  # weekly, as snapshots
    return frame


def bank_drift(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Macro features: train range, test range, and the share of test rows outside train's."""
    rows = {}
    for c in MACRO:
        lo, hi = train[c].min(), train[c].max()
        outside = ((test[c] < lo) | (test[c] > hi)).mean()
        rows[c] = {
            "train_min": lo,
            "train_max": hi,
            "test_min": test[c].min(),
            "test_max": test[c].max(),
            "test_outside_share": outside,
        }
    return pd.DataFrame(rows).T


@dataclass(frozen=True)
class ChoiceParams:
    """The product's choice settings, with the project's trees and the bank's logistic C."""

    seed: int = 0
    tree: TreeParams = PROJECT
    logistic_c: float = 1.0
    candidates: tuple[str, ...] = CANDIDATES
    half_lives: tuple[int | None, ...] = HALF_LIVES
    rolling_folds: int = ROLLING_FOLDS


BANK_TASK = Task("bank", "bank", "bank", label="won", group="order", purge_group=False)
CHOICE = "project choice (held-out windows)"


@dataclass(frozen=True)
class _Slices:
    train: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame
    history: pd.DataFrame


def _call_dates(rows: pd.DataFrame) -> pd.Series:
    """A date per call: the file gives months only, so the calls of a month are spread over it
    in file (date) order."""
    start = rows["period"].dt.start_time
    days = rows["period"].dt.days_in_month.to_numpy()
    share = rows.groupby("period").cumcount() / rows.groupby("period")["order"].transform("size")
    return start + pd.to_timedelta(share.to_numpy() * days, unit="D")


def project_choice(
    train: pd.DataFrame, test: pd.DataFrame, features: tuple[Feature, ...], *, window_weeks: int
) -> tuple[np.ndarray, str]:
    """P(won) on `test` from the product's own choice (`forecast.training.shared.fit_and_choose`):
    candidates, half-lives and calibration chosen on held-out windows of `window_weeks` weekly
    call dates before the test rows, the latest window calibrating the final model; and what
    it chose."""
    weeks = np.sort(train["as_of"].unique())
    recent = train["as_of"] >= weeks[-window_weeks]
    slices = _Slices(train=train[~recent], calibration=train[recent], test=test, history=train)
    fitted = fit_and_choose(BANK_TASK, slices, features, ChoiceParams(), window=window_weeks)
    chosen = (
        f"{fitted.chosen}, half-life {fitted.half_life or 'none'}, "
        f"{fitted.calibration.method}, {fitted.drift.folds if fitted.drift else 0} windows"
    )
    return fitted.calibration.model.predict_proba(model_input(test, features))[:, 1], chosen


def run_bank(path: Path, *, test_share: float = 0.2, blocks: int = 4) -> dict[str, object]:
    """Single split (last `test_share` of rows) and a rolling expanding-window evaluation."""
    frame = bank_frame(path)
    cut = int(len(frame) * (1 - test_share))
    train, test = frame.iloc[:cut], frame.iloc[cut:]
    y_test = test["won"].to_numpy()
    choices: list[str] = []

    def contenders(tr: pd.DataFrame, te: pd.DataFrame) -> dict[str, np.ndarray]:
        scores = {"baseline: train conversion rate": np.full(len(te), tr["won"].mean())}
        scores |= _fit_and_score(tr, te, BANK_FEATURES, order="order", logistic_c=1.0)
        scores[CHOICE], chosen = project_choice(tr, te, BANK_FEATURES, window_weeks=13)
        choices.append(f"{len(tr):,} rows: {chosen}")
        without = _fit_and_score(tr, te, BANK_WITHOUT_MACRO, order="order", logistic_c=1.0)
        for name in ("lightgbm (regularised)", "logistic (C=1.0)"):
            scores[f"{name}, no macro features"] = without[name]
        return scores

    single = compare(y_test, contenders(train, test))
    # rolling: the last `test_share` in `blocks` consecutive blocks; each block is scored by
    # models fitted on every earlier row (an expanding window), then all blocks pooled
    edges = np.linspace(cut, len(frame), blocks + 1).astype(int)
    pooled: dict[str, list[np.ndarray]] = {}
    per_block = []
    for start, end in itertools.pairwise(edges):
        tr, te = frame.iloc[:start], frame.iloc[start:end]
        scores = contenders(tr, te)
        for name, p in scores.items():
            pooled.setdefault(name, []).append(p)
        table = compare(te["won"].to_numpy(), scores)
        per_block.append(
            table[["auc", "log_loss", "win_rate"]].assign(
                block=f"{te['period'].iloc[0]}..{te['period'].iloc[-1]} ({len(te):,})"
            )
        )
    rolling = compare(y_test, {k: np.concatenate(v) for k, v in pooled.items()})
    return {
        "frame": frame,
        "train": train,
        "test": test,
        "single": single,
        "rolling": rolling,
        "per_block": pd.concat(per_block).rename_axis("model").reset_index(),
        "drift": bank_drift(train, test),
        "choices": choices,
    }


# --- printing --------------------------------------------------------------------------------


def _show(title: str, table: pd.DataFrame) -> None:
    print(f"\n{title}")
    shown = table[[c for c in SHOWN if c in table.columns]].copy()
    shown["n"] = shown["n"].astype(int)
    print(shown.to_string(float_format=lambda v: f"{v:.4f}"))


def print_maven(folder: Path) -> None:
    started = time.perf_counter()
    print("== maven-crm: won vs lost among closed deals, features known at engage time ==")
    print("\nengage month: deals, share still open at 2017-12-31, win rate among closed")
    print(maven_censoring(folder).to_string(float_format=lambda v: f"{v:.3f}"))
    for strict in (True, False):
        split, table = run_maven(folder, strict=strict)
        _show(split.description, table)
    print(f"\n({time.perf_counter() - started:.1f} s)")


def print_bank(path: Path) -> None:
    started = time.perf_counter()
    print("== UCI bank marketing: subscribed (y) vs not, duration dropped ==")
    result = run_bank(path)
    frame, train, test = result["frame"], result["train"], result["test"]
    years = frame.groupby("year")["won"].agg(["size", "mean"])
    print("\ninferred year: calls and conversion rate")
    print(years.to_string(float_format=lambda v: f"{v:.3f}"))
    print(
        f"\nsingle split: train rows 1..{len(train):,} ({train['period'].iloc[0]}.."
        f"{train['period'].iloc[-1]}), test the last {len(test):,} "
        f"({test['period'].iloc[0]}..{test['period'].iloc[-1]})"
    )
    _show("single out-of-time split (last 20 % of rows)", result["single"])
    _show(
        "rolling: 4 consecutive blocks of the last 20 %, expanding window, pooled",
        result["rolling"],
    )
    print("\nrolling, per block: AUC (and the block's conversion rate)")
    per_block = result["per_block"]
    blocks = per_block.pivot(index="model", columns="block", values="auc")
    rates = per_block.groupby("block")["win_rate"].first().rename("(conversion rate)")
    blocks = pd.concat([blocks, rates.to_frame().T])
    print(blocks.to_string(float_format=lambda v: f"{v:.4f}"))
    print("\nthe project's choice, per training window:")
    for line in result["choices"]:
        print(f"  {line}")
    print("\nmacro features: training range vs test (single split)")
    print(result["drift"].to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\n({time.perf_counter() - started:.1f} s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("maven", "bank", "all"), default="all")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared data folder")
    args = parser.parse_args(argv)
    pd.set_option("display.width", 200)
    if args.dataset in ("maven", "all"):
        print_maven(args.data / "maven-crm")
    if args.dataset in ("bank", "all"):
        print_bank(args.data / "uci-bank-marketing" / "bank-additional-full.csv")


if __name__ == "__main__":
    main()
