"""The backtest in MLflow: plots, the logged run, and the live forecast's lean read back from it."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from forecast.data.tables import CrmTables
from forecast.revenue.backtest import BacktestResult
from forecast.revenue.backtest_card import EXPERIMENT, card_text
from forecast.revenue.inputs import QuarterInputs
from forecast.revenue.lean import live_lean


def plot_fan(
    points: pd.DataFrame, path: Path, *, method: str = "simulation", week: int = 5
) -> Path:
    """Company forecast (P10-P90 band, mean) per quarter at one week, against target and actual."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = points[
        (points["method"] == method) & (points["week"] == week) & (points["level"] == "company")
    ].sort_values("quarter")
    wp = points[
        (points["method"] == "weighted_pipeline")
        & (points["week"] == week)
        & (points["level"] == "company")
    ].sort_values("quarter")
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    x = np.arange(len(rows))
    scale = 1e6
    ax.fill_between(x, rows["p10"] / scale, rows["p90"] / scale, alpha=0.3, label="P10-P90")
    ax.plot(x, rows["mean"] / scale, marker="o", label=f"{method} mean")
    ax.plot(x, rows["actual"] / scale, marker="s", color="black", label="actual")
    ax.plot(x, rows["target"] / scale, linestyle="--", color="grey", label="target")
    if len(wp):
        ax.plot(
            x, wp["mean"].to_numpy() / scale, marker="x", linestyle=":", label="weighted pipeline"
        )
    ax.set_xticks(x, rows["quarter"], rotation=45)
    ax.set(
        ylabel="bookings (millions)", title=f"Company bookings at week {week}: forecast vs actual"
    )
    ax.legend(loc="upper left", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def plot_metric_by_week(
    metrics: pd.DataFrame, path: Path, *, metric: str = "mape", level: str = "company"
) -> Path:
    """One line per method: the metric at each backtest week."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = metrics[metrics["level"] == level].dropna(subset=[metric])
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for method, part in rows.groupby("method"):
        ax.plot(part["week"], part[metric], marker="o", label=method)
    if metric == "coverage":
        ax.axhspan(0.7, 0.9, color="green", alpha=0.1, label="70-90 %")
    ax.set(xlabel="week of the quarter", ylabel=metric, title=f"{metric} by week ({level})")
    ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def log_backtest(
    result: BacktestResult,
    *,
    run_name: str = "revenue backtest",
    tags: Mapping[str, str] | None = None,
    card_dir: Path | None = None,
) -> tuple[str, Path]:
    """Log the backtest as one MLflow run (experiment `revenue-forecast`) and write the card.

    Returns the run id and the model card's path.
    """
    import mlflow

    from forecast.training.tracking import default_card_dir, tracking_run

    metrics = result.metrics()
    card = (card_dir or default_card_dir()) / "revenue-forecast.md"
    with tracking_run(EXPERIMENT, run_name=run_name) as run:
        mlflow.log_params(
            result.params.flat()
            | {
                "draws": result.draws,
                "seed": result.seed,
                "quarters": ",".join(sorted(result.points["quarter"].unique())),
                "weeks": ",".join(map(str, sorted(result.points["week"].unique()))),
            }
        )
        if tags:
            mlflow.set_tags(dict(tags))
        flat = {}
        for row in metrics.itertuples():
            for name in ("mape", "wape", "bias", "pinball", "coverage"):
                value = getattr(row, name)
                if pd.notna(value):
                    flat[f"{name}_{row.method}_{row.level}_w{row.week}"] = float(value)
        mlflow.log_metrics(flat)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            result.points.to_csv(folder / "backtest_points.csv", index=False)
            metrics.to_csv(folder / "backtest_metrics.csv", index=False)
            plot_fan(result.points, folder / "fan_company_week5.png")
            plot_metric_by_week(metrics, folder / "mape_by_week.png")
            plot_metric_by_week(metrics, folder / "coverage_by_week.png", metric="coverage")
            plot_metric_by_week(metrics, folder / "mape_by_week_team.png", level="team")
            mlflow.log_artifacts(str(folder), artifact_path="backtest")
        card.parent.mkdir(parents=True, exist_ok=True)
        card.write_text(card_text(result, metrics, run.info.run_id, tags or {}))
        mlflow.log_artifact(str(card), artifact_path="card")
    return run.info.run_id, card


def latest_backtest() -> tuple[pd.DataFrame, str] | None:
    """The points of the latest finished revenue backtest in the project's MLflow store, with
    a line saying which run it is; None when there is none (`forecast revenue-backtest`)."""
    import mlflow

    from forecast.training.registry import client

    tracking = client()
    experiment = tracking.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return None
    runs = tracking.search_runs(
        [experiment.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id,
                artifact_path="backtest/backtest_points.csv",
                dst_path=tmp,
                tracking_uri=tracking.tracking_uri,
            )
        except (OSError, mlflow.exceptions.MlflowException):
            return None  # a run without points (an older or a failed one): no lean
        points = pd.read_csv(path, dtype={"quarter": str, "level": str, "node": str})
    started = pd.Timestamp(run.info.start_time, unit="ms")
    return points, f"revenue backtest run {run.info.run_id[:8]} of {started:%Y-%m-%d}"


def lean_on_latest_backtest(
    tables: CrmTables, inputs: QuarterInputs
) -> tuple[QuarterInputs, str | None]:
    """`inputs` leaning on the time series the latest revenue backtest found more accurate,
    node by node (`live_lean`), and which backtest that was; unchanged, and None, when there is
    none."""
    found = latest_backtest()
    if found is None:
        return inputs, None
    points, basis = found
    return live_lean(tables, inputs, points, basis), basis
