"""Benchmark: the churn model's learners on the public IBM telco churn sample (7,043 customers).

The sample has no dates (one snapshot, `tenure` in months only), so this is stratified 5-fold
cross-validation, NOT an out-of-time test: it checks the learners (the same `make_lightgbm` and
`make_logistic` pipelines as the churn pipeline, default `TreeParams`), not the point-in-time
features. "lightgbm + calibration" fits on 80 % of each training fold and calibrates on the
other 20 % with `forecast.model.calibrate` (sigmoid or isotonic by out-of-fold log loss), as
the churn pipeline does on its calibration slice.

    python benchmarks/telco_churn.py                      # print ROC AUC, Brier, log loss
    python benchmarks/telco_churn.py --write-docs         # also update docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split

from forecast.data.sources.telco import CATEGORY_COLUMNS, telco_features
from forecast.features.deal_schema import Feature
from forecast.model import TreeParams, calibrate, make_lightgbm, make_logistic, model_input

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ibm-telco-churn"
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Churn: IBM telco"
COMMAND = "python benchmarks/telco_churn.py --write-docs"
METRICS = ("roc_auc", "brier", "log_loss")


def features_of(x: pd.DataFrame) -> tuple[Feature, ...]:
    return tuple(
        Feature(c, "categorical" if c in CATEGORY_COLUMNS else "numeric") for c in x.columns
    )


def cross_validate(folder: Path, *, folds: int, seed: int, threads: int) -> pd.DataFrame:
    """One row per (learner, fold): ROC AUC, Brier score and log loss on the held-out fold."""
    x_raw, y = telco_features(folder)
    features = features_of(x_raw)
    x, y = model_input(x_raw, features), y.to_numpy()
    tree = TreeParams(n_jobs=threads)
    rows = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (fit, held) in enumerate(splitter.split(x, y)):
        x_fit, y_fit = x.iloc[fit], y[fit]
        scores = {
            "lightgbm": make_lightgbm(features, params=tree, seed=seed).fit(x_fit, y_fit),
            "logistic": make_logistic(features, seed=seed).fit(x_fit, y_fit),
        }
        inner, cal = train_test_split(
            np.arange(len(fit)), test_size=0.2, stratify=y_fit, random_state=seed
        )
        trees = make_lightgbm(features, params=tree, seed=seed)
        trees.fit(x_fit.iloc[inner], y_fit[inner])
        scores["lightgbm + calibration"] = calibrate(
            trees, x_fit.iloc[cal], y_fit[cal], groups=np.asarray(cal)
        ).model
        for name, model in scores.items():
            p = model.predict_proba(x.iloc[held])[:, 1]
            rows.append(
                {
                    "learner": name,
                    "fold": fold,
                    "roc_auc": roc_auc_score(y[held], p),
                    "brier": brier_score_loss(y[held], p),
                    "log_loss": log_loss(y[held], p),
                }
            )
    return pd.DataFrame(rows)


def summary(per_fold: pd.DataFrame) -> pd.DataFrame:
    stats = per_fold.drop(columns="fold").groupby("learner", sort=False).agg(["mean", "std"])
    return stats


def markdown(stats: pd.DataFrame, *, folds: int, seed: int, seconds: float) -> str:
    lines = [
        SECTION,
        "",
        f"Stratified {folds}-fold cross-validation (shuffled, seed {seed}) on the 7,043 customers",
        "of the public IBM telco sample (`forecast.data.sources.telco.telco_features`: all 19",
        "attributes, 26.5 % churn). The sample has **no dates**, so this is not an out-of-time",
        "test: it checks that the churn pipeline's learners (`make_lightgbm` with the default",
        "`TreeParams`, `make_logistic`) hold up on a public set, not the point-in-time features.",
        "",
        "| learner | ROC AUC | Brier | log loss |",
        "| --- | --- | --- | --- |",
    ]
    for learner, row in stats.iterrows():
        cells = [f"{row[(m, 'mean')]:.4f} ± {row[(m, 'std')]:.4f}" for m in METRICS]
        lines.append(f"| {learner} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mean ± standard deviation over the folds. Published gradient boosting results on this",
        "set sit around ROC AUC 0.84-0.85; LightGBM here is in that range. The regularised",
        "logistic regression does as well or better: the sample is small and its signal mostly",
        "monotone in contract type, tenure and charges, which a linear model captures. The",
        "calibration step costs a little AUC (it trains on 80 % of each fold) and buys nothing",
        "here: with 26.5 % churn and 5,600 training rows the raw booster is already calibrated.",
        "",
        f"Reproduce ({seconds:.0f} s on 2 cores; one LightGBM thread):",
        "",
        "```",
        COMMAND,
        "```",
        "",
    ]
    return "\n".join(lines)


def write_section(text: str, path: Path = DOCS) -> None:
    """Replace this benchmark's section of docs/benchmarks.md (other sections are kept)."""
    old = path.read_text() if path.exists() else "# Benchmarks\n\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        rest = "".join(lines[end:])
        new = "".join(lines[:start]) + text + ("\n" + rest if rest else "")
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS.name}")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    started = time.perf_counter()
    per_fold = cross_validate(args.data, folds=args.folds, seed=args.seed, threads=args.threads)
    seconds = time.perf_counter() - started
    stats = summary(per_fold)
    print(f"IBM telco churn, stratified {args.folds}-fold CV (no dates), {seconds:.1f} s")
    for learner, row in stats.iterrows():
        print(
            f"  {learner:<24} ROC AUC {row[('roc_auc', 'mean')]:.4f} ± "
            f"{row[('roc_auc', 'std')]:.4f}   Brier {row[('brier', 'mean')]:.4f} ± "
            f"{row[('brier', 'std')]:.4f}   log loss {row[('log_loss', 'mean')]:.4f}"
        )
    if args.write_docs:
        write_section(markdown(stats, folds=args.folds, seed=args.seed, seconds=seconds))
        print(f"wrote the '{SECTION[3:]}' section of {DOCS}")


if __name__ == "__main__":
    main()
