"""The real-shaped sets in ../shared/data, through the path a user takes: a mapping, the CLI.

For each mapping in docs/examples/shared-data/ it imports the set into a fresh FORECAST_HOME
(`forecast data import ... --mapping ...`), asks `forecast data doctor`, trains
(`forecast train win --json`) and prints what happened: the out-of-time metrics of the model,
the base rate and the best simple rule on the same test rows, and the gate's verdict; or the
refusal, as the user reads it.

    .venv/bin/python benchmarks/shared_data.py [--shared ../shared/data] [--write-docs]

For each trained model it also rebuilds the test rows the gate judged it on and sets the trained
version against the base rate, the best simple rule, LightGBM with its library defaults and a
logistic regression, all learned on the same train slice and features (`same_rows`); with
`--write-docs` the tables replace the block between the bench-real markers of
docs/benchmarks.md (`make bench-real`).

A set with orders and no subscriptions (online-retail) goes through `forecast train churn`
(inactivity churn) instead; its references add a logistic regression on recency, frequency and
monetary value alone and a buy-till-you-die model (BG/NBD, pymc-marketing's CLV module, fitted
on every customer's purchases known at each test as-of: `churn_same_rows`). pymc-marketing is
installed for this benchmark only (benchmarks/requirements-clv.txt); without it that row says
so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# run as a script, this folder comes first on sys.path, and its service.py would shadow the
# project's `service` package that the CLI imports
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
MAPPINGS = ROOT / "docs" / "examples" / "shared-data"
# mapping file -> (data folder in shared/, bad-row flag a user needs for it, pipeline)
RUNS = {
    "maven-crm/mapping.yaml": ("maven-crm", "quarantine", "win"),
    "maven-crm/mapping-careless.yaml": ("maven-crm", "quarantine", "win"),
    "ibm-sales-win-loss/mapping.yaml": ("ibm-sales-win-loss", "refuse", "win"),
    "online-retail/mapping.yaml": ("online-retail", "refuse", "churn"),
}
RFM = ("days_since_last_purchase", "purchases", "spend_365d")


@dataclass
class Outcome:
    """What a user saw for one mapping."""

    mapping: str
    imported: bool
    trained: bool = False
    message: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    promoted: bool = False
    reason: str = ""
    references: object = None  # pandas DataFrame: the same-rows table (`same_rows`)


def run(mapping: str, shared: Path) -> Outcome:
    """Import, doctor and train one mapping in a fresh FORECAST_HOME (restored after)."""
    from typer.testing import CliRunner

    from forecast.cli import app
    from forecast.settings import get_settings

    folder, bad_rows, pipeline = RUNS[mapping]
    runner = CliRunner()
    previous = os.environ.get("FORECAST_HOME")
    with tempfile.TemporaryDirectory() as home:
        os.environ["FORECAST_HOME"] = home
        get_settings.cache_clear()
        try:
            args = ["data", "import", str(shared / folder), "--mapping", str(MAPPINGS / mapping)]
            imported = runner.invoke(app, [*args, "--bad-rows", bad_rows])
            if imported.exit_code != 0:
                return Outcome(mapping, False, message=_last_lines(imported.output))
            trained = runner.invoke(app, ["train", pipeline, "--json"])
            if trained.exit_code != 0:
                return Outcome(mapping, True, message=_last_lines(trained.output))
            result = json.loads(trained.stdout[trained.stdout.index("{") :])
            return Outcome(
                mapping,
                True,
                trained=True,
                metrics=result["metrics"],
                promoted=result["promoted"],
                reason=result["reason"],
                references=(same_rows if pipeline == "win" else churn_same_rows)(
                    result["model"], result["version"]
                ),
            )
        finally:
            if previous is None:
                os.environ.pop("FORECAST_HOME", None)
            else:
                os.environ["FORECAST_HOME"] = previous
            get_settings.cache_clear()


def same_rows(model_name: str, version: str):
    """The trained version against the references, on the test rows the gate judged it on.

    The rows are rebuilt from the store the way `forecast train win` built them (the same
    windows, features and slices); the references learn on its train slice: the base rate, the
    best simple rule, LightGBM with its library defaults and a logistic regression with
    scikit-learn's default C=1, on the same features. ROC AUC, log loss, Brier, ECE over 10
    equal-width bins, and the 90 % bootstrap interval (200 rounds by deal) of the version's AUC
    minus each reference's.
    """

    from forecast.data.store import read_store
    from forecast.model import LIBRARY_DEFAULTS, make_lightgbm, make_logistic, model_input
    from forecast.training.registry import load_champion
    from forecast.training.win import TrainHooks, WinParams, baseline_scores, prepare

    data = prepare(read_store(), WinParams(), TrainHooks())
    train, test = data.slices.train, data.slices.test
    x_train, y_train = model_input(train, data.features), train["won"].to_numpy(dtype=int)
    x_test, y_test = model_input(test, data.features), test["won"].to_numpy(dtype=int)
    baselines = baseline_scores(data)
    references = {name: p for name, p in baselines.items() if name != "stage_fixed"}
    for name, model in (
        ("lightgbm (library defaults)", make_lightgbm(data.features, params=LIBRARY_DEFAULTS)),
        ("logistic (C=1)", make_logistic(data.features, c=1.0)),
    ):
        references[name] = model.fit(x_train, y_train).predict_proba(x_test)[:, 1]
    trained = load_champion(model_name, version).predict_proba(x_test)[:, 1]
    scores = {f"{model_name} v{version} (trained)": trained, **references}
    return _same_rows_table(y_test, scores, test["deal_id"].to_numpy())


def _same_rows_table(y_test, scores: dict, groups):
    """Metrics of every contender, and the bootstrap interval of the first one's AUC minus each
    other's (resampled by `groups`: a deal, an account)."""
    import numpy as np
    import pandas as pd

    from forecast.training import evaluate

    trained, *_ = scores.values()
    references = dict(list(scores.items())[1:])
    rows = {}
    constant = {n for n, p in references.items() if np.ptp(p) == 0}
    diffs = evaluate.auc_differences(
        y_test, trained, {n: None if n in constant else p for n, p in references.items()}, groups
    )
    for name, p in scores.items():
        m = evaluate.binary_metrics(y_test, p)
        interval = diffs.get(name)
        low, high = np.quantile(interval, [0.05, 0.95]) if interval is not None else (np.nan,) * 2
        rows[name] = {
            "AUC": m["auc"], "log loss": m["log_loss"], "Brier": m["brier"],
            "ECE (10 equal-width)": evaluate.equal_width_ece(y_test, p),
            "AUC difference, 90 %": "" if np.isnan(low) else f"{low:+.3f} .. {high:+.3f}",
        }  # fmt: skip
    table = pd.DataFrame(rows).T.rename_axis("contender")
    table.attrs["rows"] = len(y_test)
    table.attrs["rate"] = float(np.mean(y_test))
    return table


def churn_same_rows(model_name: str, version: str):
    """The churn version against the references on the test rows the gate judged it on.

    As `same_rows`, with the churn pipeline's slices: the base rate and the rule table learned
    on the train slice, LightGBM with library defaults and a logistic regression (C=1) on the
    same features, a logistic regression on recency, frequency and monetary value (`RFM`), and
    for inactivity churn BG/NBD's probability of no purchase within the horizon.
    """
    from forecast.data.store import read_store
    from forecast.features.deal_schema import Feature
    from forecast.model import LIBRARY_DEFAULTS, make_lightgbm, make_logistic, model_input
    from forecast.training.churn_task import LABEL, ChurnHooks, ChurnParams, prepare, resolve
    from forecast.training.registry import load_champion

    tables = read_store()
    params = resolve(ChurnParams(), tables)
    data = prepare(tables, params, ChurnHooks())
    train, test = data.slices.train, data.slices.test
    y_train, y_test = train[LABEL].to_numpy(dtype=int), test[LABEL].to_numpy(dtype=int)
    rule = data.definition.rule.learn(train, y_train)
    references = {
        "base_rate": [y_train.mean()] * len(test),
        f"rule: {data.definition.rule.__name__}": rule.predict(test),
    }
    models = {
        "lightgbm (library defaults)": (make_lightgbm, data.features, {"params": LIBRARY_DEFAULTS}),
        "logistic (C=1)": (make_logistic, data.features, {"c": 1.0}),
    }
    if params.definition == "inactivity":
        models["logistic on RFM (C=1)"] = (make_logistic, tuple(map(Feature, RFM)), {"c": 1.0})
    for name, (make, features, options) in models.items():
        model = make(features, **options).fit(model_input(train, features), y_train)
        references[name] = model.predict_proba(model_input(test, features))[:, 1]
    if params.definition == "inactivity":
        no_purchase, dead = bgnbd_scores(tables, test, params.horizon_days)
        references["BG/NBD P(no purchase in the horizon)"] = no_purchase
        references["BG/NBD 1 - P(alive)"] = dead
    trained = load_champion(model_name, version).predict_proba(model_input(test, data.features))
    scores = {f"{model_name} v{version} (trained)": trained[:, 1]}
    scores |= {name: p for name, p in references.items() if p is not None}
    table = _same_rows_table(y_test, scores, test["account_id"].to_numpy())
    for name, p in references.items():
        if p is None:
            table.loc[name] = {"AUC difference, 90 %": "pymc-marketing not installed"}
    table.attrs["label"] = "churned"
    return table


def bgnbd_scores(tables, test, horizon_days: int):
    """BG/NBD's P(no purchase in (as_of, as_of + horizon]) and 1 - P(alive at as_of) for each
    test row, fitted by MAP on the purchase days of every customer known at that row's as-of
    (no label is read); (None, None) when pymc-marketing is not installed."""
    try:
        from pymc_marketing.clv import BetaGeoModel
    except ImportError:
        return None, None
    import numpy as np
    import pandas as pd

    from forecast.features.orders import purchases

    no_purchase, dead = pd.Series(np.nan, index=test.index), pd.Series(np.nan, index=test.index)
    for as_of, rows in test.groupby("as_of").groups.items():
        days = purchases(tables, as_of).assign(day=lambda f: f["at"].dt.normalize())
        known = days.drop_duplicates(["account_id", "day"])
        by = known.groupby("account_id", observed=True)["day"]
        first, last = by.min(), by.max()
        rfm = pd.DataFrame(
            {
                "customer_id": first.index.astype(str),
                "frequency": by.size().to_numpy() - 1,
                "recency": (last - first).dt.days.to_numpy(dtype=float),
                "T": (pd.Timestamp(as_of).normalize() - first).dt.days.to_numpy(dtype=float),
            }
        )
        model = BetaGeoModel(data=rfm)
        model.fit(method="map", progressbar=False)
        wanted = test.loc[rows, "account_id"].astype(str).to_numpy()
        for out, scores in (
            (no_purchase, model.expected_probability_no_purchase(t=horizon_days)),
            (dead, 1 - model.expected_probability_alive()),
        ):
            by_customer = scores.mean(("chain", "draw")).to_series()
            out[rows] = by_customer.reindex(wanted).to_numpy()
    return no_purchase.to_numpy(), dead.to_numpy()


def references_markdown(table) -> str:
    """The same-rows table as markdown (the AUC difference is the trained version's minus the
    row's)."""
    lines = [
        "| contender | AUC | log loss | Brier | ECE (10 equal-width) "
        "| AUC of the trained minus it, 90 % |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in table.iterrows():
        lines.append(
            f"| {name} | {row['AUC']:.3f} | {row['log loss']:.4f} | {row['Brier']:.4f} | "
            f"{row['ECE (10 equal-width)']:.3f} | {row['AUC difference, 90 %']} |"
        )
    return "\n".join(lines)


LOG_LINE = re.compile(r"^(?:(?:DEBUG|INFO|WARNING) |\d{4}/\d\d/\d\d | {9}\S)")


def _last_lines(output: str, n: int = 12) -> str:
    """The refusal a user read: the output's last `n` lines but the log's (warnings about
    features that are off, MLflow's database set-up), wrapped at 100 columns (a refusal is
    printed unwrapped; the terminal wraps it) with a path kept whole."""
    said = [line for line in output.strip().splitlines() if not LOG_LINE.match(line)]
    return "\n".join(_wrapped(line) for line in said[-n:])


def _wrapped(line: str, width: int = 100) -> str:
    """`line` at `width` columns; an indented line (a list's item) continues two further in."""
    indent = len(line) - len(line.lstrip())
    under = " " * (indent + 2) if indent else ""
    return textwrap.fill(
        line, width, subsequent_indent=under, break_long_words=False, break_on_hyphens=False
    )


def table(outcome: Outcome) -> str:
    """The model against the base rate and the best rule, same rows, as markdown."""
    rows = ["| contender | AUC | log loss | ECE |", "| --- | --- | --- | --- |"]
    for name, m in outcome.metrics.items():
        if name in ("model", "base_rate", "rate_table") or name.startswith(("rule_", "stage_")):
            rows.append(f"| {name} | {m['auc']:.3f} | {m['log_loss']:.4f} | {m['ece']:.3f} |")
    return "\n".join(rows)


def report(outcome: Outcome) -> str:
    """What a user saw for one mapping, as markdown."""
    lines = [f"### {outcome.mapping}", ""]
    if not outcome.trained:
        stage = "training" if outcome.imported else "import"
        message = outcome.message.replace(f"{ROOT}/", "")  # paths as a clone has them
        return "\n".join([*lines, f"{stage} refused:", "", "```text", message, "```"])
    verdict = "promoted" if outcome.promoted else "not promoted"
    lines += [table(outcome), "", f"{verdict}: {outcome.reason}", ""]
    if outcome.references is not None:
        attrs = outcome.references.attrs
        lines += [
            f"The same {attrs['rows']:,} test rows ({attrs['rate']:.1%} "
            f"{attrs.get('label', 'won')}) with the references"
            " learned on the same train slice and features:",
            "",
            references_markdown(outcome.references),
        ]
    return "\n".join(lines)


START, END = "<!-- bench-real: start -->", "<!-- bench-real: end -->"


def write_docs(text: str, path: Path = ROOT / "docs" / "benchmarks.md") -> None:
    """Replace the block between the bench-real markers of docs/benchmarks.md with `text`."""
    doc = path.read_text()
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--write-docs", action="store_true", help="also write the tables into docs/benchmarks.md"
    )
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    sections = []
    for mapping in RUNS:
        print(f"{mapping}: importing and training", file=sys.stderr, flush=True)
        sections.append(report(run(mapping, args.shared)))
        print(f"\n{sections[-1]}\n")
    if args.write_docs:
        write_docs("\n\n".join(sections))


if __name__ == "__main__":
    main()
