"""`forecast train` and `forecast retrain`: each pipeline through training and its gate."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from forecast.cli.common import (
    JsonOpt,
    LocalClusterOpt,
    SchedulerOpt,
    SeedOpt,
    cluster,
    console,
    err_console,
    fail,
    parts_read_by_workers,
    steps,
    stored_world,
)

train_app = typer.Typer(
    help="Train a model: one MLflow run, registered as challenger, then the gate.",
    no_args_is_help=True,
)


def _run_pipeline(name: str, tables, truth, seed: int, **options):
    """One pipeline through training and its gate, with progress; training refusals exit 1."""
    from forecast.training.drift import ROLLING_FOLDS
    from forecast.training.leakage import LeakageSuspected
    from forecast.training.pipelines import PIPELINES
    from forecast.training.task import NotEnoughDataError

    # features, guard and candidates, each held-out window of the choice, evaluation, logging,
    # gate (sklearn is imported here, not for `forecast --help`)
    with steps(5 + ROLLING_FOLDS, f"training {name}") as on_step:
        if options.get("client") is not None:
            options["progress"] = on_step.parts
        try:
            return PIPELINES[name](tables, truth=truth, seed=seed, on_step=on_step, **options)
        except (NotEnoughDataError, LeakageSuspected) as err:
            raise fail(f"{name}: {err}") from None


def _listed(values: list[str] | None) -> tuple[str, ...]:
    """A repeated option's values, each may be a comma-separated list."""
    return tuple(c.strip() for value in values or () for c in value.split(",") if c.strip())


def given_choice(option: str, values: list[str] | None) -> tuple[str, ...] | None:
    """A retrain option's columns: None when not given (carried), () for `none` (dropped)."""
    if values is None:
        return None
    listed = _listed(values)
    if any(c.lower() == "none" for c in listed):
        if len(listed) > 1:
            raise fail(f"{option} none drops every column: give it alone, not with {listed}")
        return ()
    return listed


def carried_choices(
    model: str, before: tuple[str | None, dict[str, str]], **given: tuple[str, ...] | None
) -> dict[str, tuple[str, ...]]:
    """A person's choices for `model` (`allow_columns`, `leave_out`: its run's parameters), each
    as given, or, not given (None), as its latest version was trained (`before`:
    `registry.latest_params`), said."""
    version, params = before
    out = {}
    for key, values in given.items():
        if values is not None:
            out[key] = values
            continue
        out[key] = tuple(c for c in params.get(key, "").split(",") if c)
        if out[key]:
            option = "--" + key.removesuffix("s").replace("_", "-")
            err_console.print(
                f"{model}: {option} {','.join(out[key])}, as version {version} was trained "
                f"({option} none drops it)"
            )
    return out


def churn_as_trained(model: str, before: tuple[str | None, dict[str, str]]) -> dict[str, object]:
    """What a person chose of churn's definition and horizon for `model`'s latest version
    (`before`: `registry.latest_params`), said; what `auto` decided is decided again."""
    version, params = before
    given = [k for k in params.get("given", "").split(",") if k in ("definition", "horizon_days")]
    kept: dict[str, object] = {k: params[k] for k in given if params.get(k)}
    if "horizon_days" in kept:
        kept["horizon_days"] = int(str(kept["horizon_days"]))
    if kept:
        said = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in kept.items())
        err_console.print(
            f"{model}: {said}, as version {version} was trained (`forecast train churn` changes it)"
        )
    return kept


def _outcome_dict(outcome) -> dict:
    d = outcome.decision
    return {
        "pipeline": outcome.pipeline,
        "run_id": outcome.run_id,
        "model": d.name,
        "version": d.version,
        "promoted": d.promoted,
        "reason": d.reason,
        "metrics": outcome.metrics.to_dict(orient="index"),
    }


def _print_outcome(outcome) -> None:
    from forecast.training.evaluate import LOWER_IS_BETTER, METRICS

    table = Table("contender", *METRICS, title=f"{outcome.pipeline}: test slice, same rows")
    best = {
        m: outcome.metrics[m]
        .drop("truth", errors="ignore")
        .agg("min" if m in LOWER_IS_BETTER else "max")
        for m in METRICS
    }
    for name, row in outcome.metrics.iterrows():
        cells = [
            f"[bold]{row[m]:.4f}[/]" if row[m] == best[m] and name != "truth" else f"{row[m]:.4f}"
            for m in METRICS
        ]
        table.add_row(str(name), *cells)
    console.print(table)
    d = outcome.decision
    colour = "green" if d.promoted else "yellow"
    console.print(f"[{colour}]{d.name} v{d.version} {d.summary()}[/]", highlight=False)
    if not d.promoted:  # what to do with it: look, or serve it anyway knowing the verdict
        console.print(
            f"`forecast models list` compares it; `forecast models promote {d.name} {d.version} "
            "--force` serves it anyway (every page and answer then says it was forced)",
            style="dim", markup=False, highlight=False,
        )  # fmt: skip
    console.print(f"MLflow run {outcome.run_id}", style="dim")


TestDaysOpt = Annotated[
    int | None,
    typer.Option(min=0, help="Days of the out-of-time test slice (default, or 0: fitted)."),
]
CalibrationDaysOpt = Annotated[
    int | None,
    typer.Option(min=0, help="Days of the calibration slice before it (default, or 0: fitted)."),
]


AllowColumnOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="A column the leak guard refuses that you know is filled before the outcome (e.g. "
        "deals.amount at creation, or an account's usage_last at each snapshot); repeat, or "
        "separate with commas. Logged to MLflow and on the card."
    ),
]
LeaveOutOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="A column the CRM sets at the close (e.g. deals.amount, set to what was booked): "
        "kept for bookings, read by no feature; repeat, or separate with commas. Logged to "
        "MLflow and on the card."
    ),
]


class SnapshotEvery(StrEnum):
    week = "week"
    month = "month"
    quarter = "quarter"


SNAPSHOT_FREQ = {
    SnapshotEvery.week: "W-SUN",
    SnapshotEvery.month: "MS",
    SnapshotEvery.quarter: "QS",
}


@train_app.command("win")
def train_win(
    *,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    label_lag_days: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Days before the export where the test slice ends (default, or 0: from the "
            "data's cycle lengths).",
        ),
    ] = None,
    test_days: TestDaysOpt = None,
    calibration_days: CalibrationDaysOpt = None,
    allow_column: AllowColumnOpt = None,
    leave_out: LeaveOutOpt = None,
    snapshots: Annotated[
        SnapshotEvery,
        typer.Option(
            help="One snapshot of each open deal every week, or every month or quarter (samples "
            "for very large CRMs: about a quarter or a thirteenth of the rows; docs/scale.md)."
        ),
    ] = SnapshotEvery.week,
    scheduler: SchedulerOpt = None,
    local_cluster: LocalClusterOpt = None,
) -> None:
    """Train the deal win model on the stored CRM, compare it with the baselines and gate it.
    With a Dask cluster, its workers compute the snapshots' features, reading a store in parts
    themselves (docs/scale.md)."""
    from forecast.features.on_dask import CONTEXT_TABLES
    from forecast.training import win as train
    from forecast.training.win_task import check_leave_out

    allowed, left_out = _listed(allow_column), _listed(leave_out)
    try:
        check_leave_out(left_out)
    except ValueError as err:
        raise fail(str(err)) from None
    params = train.WinParams(
        seed=seed,
        label_lag_days=label_lag_days or None,
        test_days=test_days or None,
        calibration_days=calibration_days or None,
        allow_columns=allowed,
        leave_out=left_out,
        snapshot_freq=SNAPSHOT_FREQ[snapshots],
    )
    with cluster(scheduler, local_cluster) as client:
        parts = parts_read_by_workers(client)
        tables, truth = stored_world(CONTEXT_TABLES if parts else None)
        options = {"params": params, "client": client} | ({"parts": parts} if parts else {})
        outcome = _run_pipeline("win", tables, truth, seed, **options)
    _show(outcome, as_json)


class ChurnDefinition(StrEnum):
    auto = "auto"
    subscription = "subscription"
    inactivity = "inactivity"


@train_app.command("churn")
def train_churn(
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    definition: Annotated[
        ChurnDefinition,
        typer.Option(
            help="What churn is: subscription (recurring revenue stops), inactivity (no purchase "
            "within the horizon) or auto (subscription when the export has recurring revenue, "
            "else inactivity when it has orders).",
        ),
    ] = ChurnDefinition.auto,
    horizon_days: Annotated[
        int | None,
        typer.Option(
            min=7,
            max=730,
            help="Days a label looks ahead (default: 90 for subscription churn; for inactivity "
            "churn the gaps between a customer's purchases decide).",
        ),
    ] = None,
    allow_column: AllowColumnOpt = None,
    scheduler: SchedulerOpt = None,
    local_cluster: LocalClusterOpt = None,
) -> None:
    """Train the account churn model on the stored CRM, compare it with the baselines, gate it.
    With a Dask cluster, its workers compute the snapshots' features, reading a store in parts
    themselves (docs/scale.md)."""
    with cluster(scheduler, local_cluster) as client:
        parts = parts_read_by_workers(client)
        tables, truth = stored_world(("reps", "products") if parts else None)
        options = {"client": client} | ({"parts": parts} if parts else {})
        outcome = _run_pipeline(
            "churn",
            tables,
            truth,
            seed,
            definition=definition.value,
            horizon_days=horizon_days,
            allow_columns=_listed(allow_column),
            **options,
        )
    _show(outcome, as_json)


def _show(outcome, as_json: bool) -> None:
    """A training outcome as JSON on stdout, or as the table of its figures and the verdict."""
    if as_json:
        json.dump(_outcome_dict(outcome), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        _print_outcome(outcome)


def retrain(
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    allow_column: AllowColumnOpt = None,
    leave_out: LeaveOutOpt = None,
    scheduler: SchedulerOpt = None,
    local_cluster: LocalClusterOpt = None,
) -> None:
    """Retrain every pipeline on the stored CRM and pass each through its registry gate (on a
    Dask cluster's workers, the features, when given one, reading a store in parts
    themselves). --allow-column is each model's, as in `train win` and `train churn` (a column
    allowed passes the guard of the model that reads it); --leave-out is the deal-win model's.
    Not given, each is as the model's latest version was trained (said as it starts), so a
    nightly retrain keeps what a person decided; `--leave-out none` (or `--allow-column none`)
    drops it. A column given to --allow-column goes to the model that reads it. Churn keeps the
    definition and horizon a person gave `train churn` the same way."""
    from forecast.features.on_dask import CONTEXT_TABLES
    from forecast.training import win as train
    from forecast.training.churn_task import MODEL_NAME as CHURN_MODEL
    from forecast.training.pipelines import PIPELINES
    from forecast.training.registry import latest_params
    from forecast.training.win_task import MODEL_NAME as WIN_MODEL
    from forecast.training.win_task import check_leave_out, reads

    allowed = given_choice("--allow-column", allow_column)
    for_win = for_churn = allowed  # not given (None) or none (): the same for both
    if allowed:  # a column goes to the model that reads it; the other keeps its own
        for_win = tuple(c for c in allowed if reads(c)) or None
        for_churn = tuple(c for c in allowed if not reads(c)) or None
    chosen = carried_choices(
        WIN_MODEL,
        latest_params(WIN_MODEL),
        allow_columns=for_win,
        leave_out=given_choice("--leave-out", leave_out),
    )
    win = train.WinParams(
        seed=seed, allow_columns=chosen["allow_columns"], leave_out=chosen["leave_out"]
    )
    before = latest_params(CHURN_MODEL)
    churn: dict[str, object] = {
        **carried_choices(CHURN_MODEL, before, allow_columns=for_churn),
        **churn_as_trained(CHURN_MODEL, before),
    }
    try:
        check_leave_out(win.leave_out)
    except ValueError as err:
        raise fail(str(err)) from None

    outcomes, failed = [], []
    with cluster(scheduler, local_cluster) as client:
        parts = parts_read_by_workers(client)
        tables, truth = stored_world(CONTEXT_TABLES if parts else None)
        options = {"client": client} | ({"parts": parts} if parts else {})
        for name in PIPELINES:
            try:
                own = {"params": win} if name == "win" else churn
                outcomes.append(_run_pipeline(name, tables, truth, seed, **options, **own))
            except typer.Exit:  # refused (reason printed): the other pipelines still run
                failed.append(name)
                continue
            if not as_json:
                _print_outcome(outcomes[-1])
    if as_json:
        json.dump([_outcome_dict(o) for o in outcomes], sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    if failed:
        raise fail(f"not retrained: {', '.join(failed)}")
