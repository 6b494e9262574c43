"""`forecast revenue` and `forecast revenue-backtest`: thin wrappers around forecast.revenue.

Registered on the main app by `forecast.cli` (`register(app)`); kept apart so the revenue
commands and the model commands can change without touching each other.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from forecast.cli.common import (
    LocalClusterOpt,
    SchedulerOpt,
    cluster,
    err_console,
    fail,
    moment_option,
    steps,
    stored_world,
)
from forecast.settings import get_settings

if TYPE_CHECKING:
    from forecast.data.tables import CrmTables, Featurize
    from forecast.explain.book import BookScores

# a terminal sets its own width; in a log (make run, CI) the wide tables stay readable
console = Console(width=None if sys.stdout.isatty() else 160)

LEVEL_NAMES = ("rep", "team", "region", "company")
CHAMPION_NAME = "deal-win"


def champion_scorer(tables: CrmTables):
    """The deal-win champion as a win scorer, and its version; exits with how to train one
    when there is none (or why none can be trained on `tables`)."""
    from forecast.data.doctor import no_win_model
    from forecast.model import model_input, win_probability
    from forecast.training.registry import (
        RegistryError,
        champion_version,
        forced_sentence,
        load_champion,
        no_champion,
        served_below_bar,
    )

    version = champion_version(CHAMPION_NAME)
    if version is None:
        if why := no_win_model(tables):
            raise fail(f"no bookings forecast: it scores the open deals with {CHAMPION_NAME}, "
                       f"and {why}")  # fmt: skip
        raise fail(
            f"{no_champion(CHAMPION_NAME, 'forecast train win')} (model registry: "
            f"{get_settings().mlflow_tracking_uri})"
        )
    try:
        model = load_champion(CHAMPION_NAME, version)
    except (RegistryError, OSError) as err:
        raise fail(f"{CHAMPION_NAME} version {version} cannot be loaded: {err}") from None
    if forced := forced_sentence(CHAMPION_NAME, version, served_below_bar(CHAMPION_NAME, version)):
        err_console.print(forced, style="yellow", markup=False, highlight=False)

    def scorer(features: pd.DataFrame):
        return win_probability(model, model_input(features))

    return scorer, version


def _churn_champion():
    """The churn champion as (account scorer, source, definition), or None (said) when there is
    none."""
    from forecast.explain.scorers import scorer_for
    from forecast.features.deal_schema import model_features
    from forecast.training.churn_task import MODEL_NAME as CHURN_NAME
    from forecast.training.churn_task import definition_of
    from forecast.training.registry import RegistryError, champion_version, load_champion

    try:
        version = champion_version(CHURN_NAME)
        if version is None:
            raise RegistryError(f"{CHURN_NAME} has no champion")
        model = load_champion(CHURN_NAME, version)
    except (RegistryError, OSError):
        err_console.print(
            f"no {CHURN_NAME} champion: renewals at segment rates and no revenue at risk from "
            "churn (`forecast train churn` trains one)",
            style="yellow",
        )
        return None
    definition = definition_of(model)
    scorer = scorer_for(model, model_features(model, definition.features))
    return scorer, f"{CHURN_NAME} v{version}", definition


def _with_churn_risk(forecast, tables, scorer, moment: pd.Timestamp):
    """Revenue at risk on every node from the churn champion's scorer."""
    from forecast.explain.account_scoring import at_risk_by_owner, score_accounts
    from forecast.revenue import with_revenue_at_risk

    scores = score_accounts(tables, scorer, as_of=moment)
    return with_revenue_at_risk(forecast, at_risk_by_owner(scores), tables.reps)


def _money(value: float) -> str:
    if pd.isna(value):
        return ""
    if abs(value) >= 1e6:
        return f"{value / 1e6:,.2f}M"
    return f"{value / 1e3:,.0f}k" if abs(value) >= 1e3 else f"{value:,.0f}"


def _share(value: float) -> str:
    return "" if pd.isna(value) else f"{value:.0%}"


def _coverage(value: float) -> str:
    if pd.isna(value):
        return ""
    return "met" if value == float("inf") else f"{value:.1f}x"


def print_forecast(forecast, level: str) -> None:
    """A readable table of one level, with the deals behind the spread."""
    nodes = forecast.level(level)
    scenario = f", scenario {forecast.scenario}" if forecast.scenario else ""
    title = (
        f"Bookings {forecast.quarter} as of {forecast.as_of:%Y-%m-%d} "
        f"({forecast.draws:,} draws{scenario})"
    )
    at_risk = "revenue_at_risk" in nodes
    leaning = "source" in nodes and (nodes["source"] != "simulation").any()
    table = Table(
        level, "target", "mean", "P10", "P50", "P90", "P(target)", "gap", "closed", "open",
        "new", "recurring", "coverage", *(["churn risk"] if at_risk else []),
        *(["source"] if leaning else []), title=title,
    )  # fmt: skip
    for row in nodes.itertuples():
        table.add_row(
            str(row.node), _money(row.target), f"[bold]{_money(row.mean)}[/]", _money(row.p10),
            _money(row.p50), _money(row.p90), _share(row.p_reach_target),
            _money(row.gap_to_target), _money(row.closed), _money(row.open), _money(row.new),
            _money(row.recurring), _coverage(row.coverage),
            *([_money(row.revenue_at_risk)] if at_risk else []),
            *([str(row.source)] if leaning else []),
        )  # fmt: skip
    console.print(table)
    shown = nodes["node"].tolist() if level != "rep" else nodes.nlargest(5, "std")["node"].tolist()
    for node in shown[:8]:
        console.print(forecast.spread_sentence(level, node), highlight=False)
    console.print(
        "bookings = won deals closing in the quarter + renewals passed in it (12 x monthly bill "
        "for annual contracts, 1 x for SMB); gap = target - mean; coverage = open pipeline "
        "expected to close in the quarter / (target - booked - expected renewals); "
        f"renewals still to come from {forecast.inputs.renewals_source}"
        + (
            "; churn risk = ARR at risk from churn in the next 90 days (churn model)"
            if at_risk
            else ""
        ),
        style="dim",
    )
    if leaning:
        from forecast.revenue.lean import LEAN_MARGIN, MIN_LEAN_QUARTERS

        console.print(
            "source: where the node's mean comes from. A node leans on a time series (naive, "
            f"mean of the last four quarters, AutoETS) where the {forecast.inputs.lean.basis} "
            f"erred at least {LEAN_MARGIN:.0%} less with it than with the simulation over "
            f"{MIN_LEAN_QUARTERS} quarters or more; it keeps "
            "the shape of the simulation's distribution above what is booked, and its parts "
            "(closed, open, new, recurring) stay the simulation's. Every node stays the sum "
            "of its children: a leaning node's figure holds, its children share it by their "
            "own, and the nodes above it add it up",
            style="dim",
        )


QUARTERS_AHEAD = 3  # as far as the service forecasts: beyond, it is new deals and renewals only


def _far_quarter(quarter: pd.Period, current: pd.Period) -> str | None:
    """A warning when the quarter lies before the as-of's, or far after it."""
    ahead = quarter.ordinal - current.ordinal
    if ahead < 0:
        return (
            f"{quarter} ended before the as-of's quarter {current}: this is what was forecast "
            "as of then, with what is known now; its bookings are in `forecast data describe`"
        )
    if ahead > QUARTERS_AHEAD:
        return (
            f"{quarter} is {ahead} quarters after the as-of's quarter {current}: hardly any "
            "deal open today closes then, so this is new deals and renewals projected from the "
            f"past (the service forecasts up to {QUARTERS_AHEAD} quarters ahead)"
        )
    return None


QuarterOpt = Annotated[
    str | None, typer.Option(help="Calendar quarter, e.g. 2026Q4 (default: the as-of's).")
]
ForecastAsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of", help="Forecast as of this date (default: the data's).", callback=moment_option
    ),
]
LeanOpt = Annotated[
    bool,
    typer.Option(
        "--lean/--no-lean",
        help="Let nodes lean on a time series where the latest revenue backtest found it "
        "more accurate than the simulation.",
    ),
]
ScoresOpt = Annotated[
    Path | None,
    typer.Option(
        "--scores",
        help="Take the open deals' chances from a scored book (the file `forecast score deals "
        "--all` wrote) instead of scoring them again; the forecast is as of its as-of.",
    ),
]
ChurnOpt = Annotated[
    bool,
    typer.Option(
        "--churn/--no-churn",
        help="Also simulate renewals from a churn model trained at each quarter's start.",
    ),
]


def revenue(
    *,
    quarter: QuarterOpt = None,
    as_of: ForecastAsOfOpt = None,
    level: Annotated[str, typer.Option(help="rep, team, region or company.")] = "team",
    draws: Annotated[int, typer.Option(help="Simulated quarters.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    lean: LeanOpt = True,
    scores: ScoresOpt = None,
    scheduler: SchedulerOpt = None,
    local_cluster: LocalClusterOpt = None,
) -> None:
    """Forecast a quarter's bookings at every node of the org tree (uses the deal-win champion).
    With a Dask cluster, its workers compute the deals' features (docs/scale.md)."""
    from forecast.features.on_dask import deal_features_with
    from forecast.revenue import simulate_quarter

    if level not in LEVEL_NAMES:
        raise fail(f"--level {level!r}: expected one of {', '.join(LEVEL_NAMES)}")
    book = _book_scores(scores) if scores else None
    tables, moment, quarter = _forecast_moment(quarter, as_of or (book and book.as_of))
    scorer, version = champion_scorer(tables)
    if book is not None:
        _check_book(book, moment, version)
    churn = _churn_champion()
    with cluster(scheduler, local_cluster) as client, steps(1, f"forecasting {quarter}") as bar:
        featurize = deal_features_with(client, bar.parts)
        inputs = _live_inputs(tables, quarter, moment, scorer, churn, featurize, book)
    if lean:
        inputs = _lean(tables, inputs)
    forecast = simulate_quarter(inputs, draws=draws, seed=seed, level=level)
    if churn is not None:
        forecast = _with_churn_risk(forecast, tables, churn[0], moment)
    if as_json:
        model = {"name": CHAMPION_NAME, "version": version}
        json.dump({**forecast.to_dict(level), "model": model}, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return
    print_forecast(forecast, level)


def _book_scores(path: Path) -> BookScores:
    from forecast.explain.book import BookFileError, read_book_scores

    try:
        return read_book_scores(path)
    except BookFileError as err:
        raise fail(f"--scores {err}") from None


def _check_book(book: BookScores, moment: pd.Timestamp, version: str) -> None:
    """Exits unless the book was scored at the forecast's moment, on the stored data, by the
    champion (the quarters before it are scored by the champion too)."""
    from forecast.data.store import store_manifest

    path, again = book.path, "score the book again: `forecast score deals --all`"
    if book.as_of != moment:
        raise fail(
            f"--scores {path}: scored as of {book.as_of:%Y-%m-%d}, the forecast is as of "
            f"{moment:%Y-%m-%d}: leave out --as-of, or {again} --as-of {moment:%Y-%m-%d}"
        )
    if book.fingerprint != store_manifest()["fingerprint"]:
        raise fail(f"--scores {path}: scored on other data than the store holds now: {again}")
    if (book.model, book.model_version) != (CHAMPION_NAME, str(version)):
        raise fail(
            f"--scores {path}: scored by {book.model} version {book.model_version}, the "
            f"champion is {CHAMPION_NAME} version {version}: {again}"
        )
    err_console.print(
        f"the open deals' chances from {path} ({book.model} version {book.model_version}, "
        f"as of {book.as_of:%Y-%m-%d})",
        soft_wrap=True,
    )


def _forecast_moment(quarter: str | None, as_of: str | pd.Timestamp | None):
    """The stored tables, the forecast's moment and its quarter; exits on a bad quarter or a
    moment after the data's."""
    from forecast.data.store import StoreEmptyError, read_store
    from forecast.revenue.bookings import parse_quarter

    try:
        if quarter is not None:
            parse_quarter(quarter)
    except ValueError as err:
        raise fail(str(err)) from None
    try:
        tables = read_store()
    except StoreEmptyError as err:
        raise fail(str(err)) from None
    _check_forecastable(tables)
    moment = pd.Timestamp(as_of) if as_of else pd.Timestamp(tables.as_of)
    quarter = quarter or str(moment.to_period("Q"))
    if moment > tables.as_of:
        raise fail(f"--as-of {moment:%Y-%m-%d} is after the stored data's as-of "
                    f"{tables.as_of:%Y-%m-%d}")  # fmt: skip
    if warning := _far_quarter(pd.Period(quarter, "Q"), moment.to_period("Q")):
        err_console.print(warning, style="yellow", markup=False, highlight=False)
    return tables, moment, quarter


def _check_forecastable(tables) -> None:
    """Exit naming what the export lacks when no bookings forecast can be made from it."""
    from forecast.data.doctor import no_forecast, not_in_the_data

    if refusal := no_forecast(not_in_the_data(tables)):
        raise fail(refusal)


def _live_inputs(
    tables,
    quarter: str,
    moment: pd.Timestamp,
    scorer,
    churn,
    featurize: Featurize,
    book: BookScores | None = None,
):
    """The quarter's inputs as the live forecast prepares them: renewals from the churn
    champion when there is one, the open deals' chances from the scored `book` when given."""
    from forecast.revenue import prepare_quarter
    from forecast.revenue.churn import live_renewals
    from forecast.revenue.timing import UnscoredDealsError

    renewals = None
    if churn is not None:
        churn_scorer, source, definition = churn
        renewals = live_renewals(
            lambda frame: churn_scorer.probability(churn_scorer.coded(frame)), tables,
            quarter=quarter, as_of=moment, source=source, definition=definition,
        )  # fmt: skip
    try:
        return prepare_quarter(
            tables, quarter=quarter, as_of=moment, win_scorer=scorer, renewal_probability=renewals,
            featurize=featurize, open_scores=book and book.probability,
        )  # fmt: skip
    except UnscoredDealsError as err:
        raise fail(f"--scores {book and book.path}: {err}") from None


def _lean(tables, inputs):
    """Nodes leaning on the latest backtest's series where it did better (said when none)."""
    from forecast.revenue.backtest_log import lean_on_latest_backtest

    inputs, basis = lean_on_latest_backtest(tables, inputs)
    if basis is None:
        err_console.print(
            "no revenue backtest yet: every node is the simulation's (`forecast "
            "revenue-backtest` finds where a time series does better)",
            style="yellow",
        )
    return inputs


def revenue_backtest(
    *,
    first: Annotated[str | None, typer.Option(help="First quarter (default: a year in).")] = None,
    weeks: Annotated[str, typer.Option(help="Weeks of the quarter, comma-separated.")] = "1,5,9,13",
    draws: Annotated[int, typer.Option(help="Simulated quarters per forecast.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    churn: ChurnOpt = True,
    scheduler: SchedulerOpt = None,
    local_cluster: LocalClusterOpt = None,
) -> None:
    """Backtest the revenue forecast against the baselines; log to MLflow and write the card.
    With a Dask cluster, its workers compute every weekly snapshot's deal features."""
    from forecast.features.on_dask import deal_features_with
    from forecast.revenue.backtest import backtest, backtest_quarters
    from forecast.revenue.backtest_log import log_backtest
    from forecast.revenue.win_scorers import TrainingFrame, fit_win_scorer, truth_scorer

    tables, truth = stored_world()
    _check_forecastable(tables)
    quarters = backtest_quarters(tables, first=first)
    if not quarters:
        raise fail("no quarter has a year of history before it and all its bookings known")
    with cluster(scheduler, local_cluster) as client, steps(1, "deal snapshots") as bar:
        training = TrainingFrame.build(tables, tables.as_of, deal_features_with(client, bar.parts))
    scorers = {"simulation": lambda cutoff: fit_win_scorer(training, cutoff, seed=seed)}
    if truth is not None:
        scorers["simulation_truth"] = lambda cutoff: truth_scorer(truth)
    renewals = {}
    if churn:
        from forecast.revenue.churn import fit_churn_renewal

        renewals["simulation_churn"] = lambda cutoff: fit_churn_renewal(tables, cutoff, seed=seed)
    with console.status("backtesting") as status:
        result = backtest(
            tables,
            quarters=quarters,
            scorers=scorers,
            renewals=renewals,
            weeks=[int(w) for w in weeks.split(",")],
            draws=draws,
            seed=seed,
            on_step=lambda label: status.update(f"backtesting {label}"),
        )
    run_id, card = log_backtest(result)
    _print_backtest(result, quarters)
    console.print(f"MLflow run {run_id} (experiment revenue-forecast); card {card}", style="dim")


def _print_backtest(result, quarters: list[str]) -> None:
    """The headline tables at week 5 (company, team) and the coverage by level and week."""
    from forecast.revenue.backtest_card import coverage_table, headline

    metrics = result.metrics()
    week = 5 if 5 in result.points["week"].unique() else int(result.points["week"].min())
    for level in ("company", "team"):
        rows = headline(metrics, week=week, level=level)
        title = f"{level} level, week {week}, quarters {quarters[0]}..{quarters[-1]}"
        table = Table(
            "method", "n", "MAPE", "MAPE of P50", "bias", "pinball", "P10-P90 coverage",
            title=title,
        )  # fmt: skip
        for method, row in rows.iterrows():
            table.add_row(
                str(method), str(int(row.n)), f"{row.mape:.1%}", f"{row.mape_p50:.1%}",
                f"{row.bias:+.1%}", f"{row.pinball:.4f}", _share(row.coverage),
            )  # fmt: skip
        console.print(table)
    for method in ("simulation", "simulation_churn"):
        coverage = coverage_table(metrics, method)
        if coverage.empty:
            continue
        weeks_seen = [int(w) for w in coverage.columns]
        table = Table("level", *(f"week {w}" for w in weeks_seen),
                      title=f"{method}: P10-P90 coverage (goal 70-90 %)")  # fmt: skip
        for level_name, row in coverage.iterrows():
            table.add_row(str(level_name), *(_share(v) for v in row.to_numpy()))
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command("revenue")(revenue)
    app.command("revenue-backtest")(revenue_backtest)
