"""Benchmark: reasons and recommendations against LightGBM's own SHAP and shap.TreeExplainer.

One run, one model (200 trees, calibrated), the same rows: one deal in-process (median of
repeats), then 10,000 deals three ways. Prints figures and ratios; asserts nothing.

    python benchmarks/explain.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
import shap

from forecast.data.world import make_crm
from forecast.explain.reasons import explain, typical_of_won
from forecast.explain.scorers import FastScorer
from forecast.features.deal_schema import DEAL_FEATURES
from forecast.features.deals import snapshot_dates, training_frame
from forecast.model import TreeParams, calibrate, make_lightgbm, model_input


def _median_seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trees", type=int, default=200)
    args = parser.parse_args()

    world = make_crm(20_000, seed=0, start="2023-01-01", as_of="2026-06-30")
    frame = training_frame(world.tables, snapshot_dates("2023-03-01", "2026-02-28"))
    train = frame[frame["as_of"] < "2025-06-01"]
    later = frame[(frame["as_of"] >= "2025-06-01") & (frame["as_of"] < "2025-10-01")]
    rows = frame[frame["as_of"] >= "2025-10-01"]
    rows = pd.concat([rows] * (1 + args.rows // max(len(rows), 1))).head(args.rows)
    trees = make_lightgbm(params=TreeParams(n_estimators=args.trees, n_jobs=2)).fit(
        model_input(train), train["won"].to_numpy()
    )
    model = calibrate(
        trees, model_input(later), later["won"].to_numpy(), later["deal_id"].to_numpy()
    ).model
    scorer = FastScorer(model, DEAL_FEATURES)
    typical = typical_of_won(train, DEAL_FEATURES)
    one = rows.head(1)
    explain(scorer, one, typical=typical)  # warm up

    single = _median_seconds(lambda: explain(scorer, one, typical=typical), 200)
    coded = scorer.coded(rows)
    ours = _median_seconds(lambda: explain(scorer, rows, typical=typical), args.repeats)
    native = _median_seconds(
        lambda: scorer.booster.predict(coded, pred_contrib=True, num_threads=2), args.repeats
    )
    explainer = shap.TreeExplainer(scorer.booster)
    theirs = _median_seconds(lambda: explainer.shap_values(coded), args.repeats)
    n = len(rows)

    print(f"model: {args.trees} trees, {len(DEAL_FEATURES)} features; {n:,} deals; 2 threads")
    print(f"one deal, reasons + recommendations: {single * 1000:.2f} ms (goal < 5 ms)")
    print(f"{'10,000 deals':<44}{'seconds':>9}{'rows/s':>10}")
    for label, seconds in (
        ("ours: reasons + recommendations", ours),
        ("LightGBM pred_contrib (SHAP values only)", native),
        ("shap.TreeExplainer.shap_values", theirs),
    ):
        print(f"{label:<44}{seconds:>9.2f}{n / seconds:>10,.0f}")
    print(f"ours / LightGBM: {ours / native:.2f} (goal <= 1.5)")
    print(f"ours / shap.TreeExplainer: {ours / theirs:.2f} (goal < 1)")
    np.testing.assert_allclose(
        scorer.contributions(coded[:100])[:, :-1],
        np.asarray(explainer.shap_values(coded[:100])),
        atol=1e-6,
    )


if __name__ == "__main__":
    main()
