"""The properties of reasons and actions, checked over a stored CRM's whole open book.

With the stored CRM and the champions of the current FORECAST_HOME (`make run` makes the default
world's): every open deal and every billed account is scored as the service scores them, and
each property the tests hold on generated samples is counted here on the real book:

- no reason is drawn from a missing value;
- a product is named as people know it (its name), never by its id;
- no action is advised whose evidence already meets the yardstick (won deals at the deal's
  stage; accounts that stayed);
- no reason says a value pushes against what its own yardstick shows (a value on the side of
  won deals or retained accounts said to hurt, or the other way round), for the features whose
  direction the catalogue settles (`helps`);
- the same action lifts different deals differently.

    python benchmarks/book_checks.py

Prints the counts and the violations (0 expected); asserts nothing.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _against(reason, yardstick: object, helps: str | None, helpful: str) -> bool:
    """The reason points against its yardstick: the value on the helpful side (`helps`) yet
    said not to be `helpful` (a deal's "raises", an account's "lowers"), or the other way."""
    value = reason.value
    if helps is None or _missing(value) or _missing(yardstick) or value == yardstick:
        return False
    on_helpful_side = (value > yardstick) == (helps == "up")
    return on_helpful_side != (reason.direction == helpful)


def main() -> None:
    from forecast.data.store import read_store
    from forecast.explain.account_scoring import retained_account_yardsticks, score_accounts
    from forecast.explain.catalogue import display_names, load_catalogue
    from forecast.explain.scorers import scorer_for
    from forecast.explain.scoring import load_deal_explainer, open_deal_ids, score_deals
    from forecast.features.accounts import ACCOUNT_FEATURES, account_features, account_snapshots
    from forecast.features.deal_schema import model_features
    from forecast.features.deals import deal_features
    from forecast.settings import disable_telemetry
    from forecast.training.churn_task import MODEL_NAME as CHURN_NAME
    from forecast.training.registry import RegistryError, load_champion

    disable_telemetry()
    tables = read_store()
    catalogue = load_catalogue()
    explainer = load_deal_explainer(tables, as_of=tables.as_of)
    scores = score_deals(tables, explainer.scorer, typical=explainer.typical)
    ids = open_deal_ids(tables, tables.as_of)
    frame = deal_features(tables, ids.to_frame().assign(as_of=tables.as_of)).set_index("deal_id")
    products = display_names(tables)["product_id"]
    typical = explainer.typical
    reasons = actions = from_missing = by_id = already = against = 0
    lifts: dict[str, set[float]] = {}
    for score in scores:
        row = frame.loc[score.deal_id]
        stage = row["stage"] if row["stage"] in typical.index else "*"
        for reason in score.explanation.reasons:
            reasons += 1
            from_missing += _missing(row[reason.feature])
            if reason.feature == "product_id" and reason.value in products:
                by_id += reason.value in reason.text or products[reason.value] not in reason.text
            if reason.feature in typical.columns:
                entry = catalogue.deal[reason.feature]
                yardstick = typical.loc[stage, reason.feature]
                against += _against(reason, yardstick, entry.helps, "raises")
        for rec in score.explanation.recommendations:
            actions += 1
            lifts.setdefault(rec.action, set()).add(rec.lift_points)
            feature = catalogue.actions["deal"][rec.action].evidence
            value, yardstick = row[feature], typical.loc[stage, feature]
            helps = catalogue.deal[feature].helps
            if not _missing(value) and not _missing(yardstick):
                already += value >= yardstick if helps == "up" else value <= yardstick
    print(f"{explainer.model_label}; store as of {tables.as_of:%Y-%m-%d}")
    print(f"open deals checked: {len(scores):,}; reasons {reasons:,}; actions advised {actions:,}")
    print(f"  reasons from a missing value: {from_missing}")
    print(f"  reasons against their yardstick: {against}")
    print(f"  product reasons naming the id, not the name: {by_id}")
    print(f"  actions the deal already does (meets won deals at its stage): {already}")
    distinct = ", ".join(f"{a} {len(v)}" for a, v in sorted(lifts.items()))
    print(f"  distinct lifts per action: {distinct}")

    try:
        model = load_champion(CHURN_NAME)
    except (RegistryError, OSError) as err:  # a store without a churn champion: say so
        print(f"no {CHURN_NAME} champion ({err}): accounts not checked")
        return
    retained = retained_account_yardsticks(tables, as_of=tables.as_of)
    scorer = scorer_for(model, model_features(model, ACCOUNT_FEATURES))
    accounts = score_accounts(tables, scorer, typical=retained)
    billed = account_features(tables, account_snapshots(tables, [tables.as_of]))
    billed = billed.set_index("account_id")
    advised = done = drivers_against = 0
    account_lifts: dict[str, set[float]] = {}
    for score in accounts:
        for reason in score.explanation.reasons:
            if reason.feature in retained.columns:
                helps = catalogue.account[reason.feature].helps
                yardstick = retained.loc["*", reason.feature]
                drivers_against += _against(reason, yardstick, helps, "lowers")
        for rec in score.explanation.recommendations:
            advised += 1
            account_lifts.setdefault(rec.action, set()).add(rec.lift_points)
            feature = catalogue.actions["account"][rec.action].evidence
            yardstick = retained.loc["*", feature]
            value = billed.at[score.account_id, feature]
            if not _missing(value) and not _missing(yardstick):
                helps = catalogue.account[feature].helps
                done += value >= yardstick if helps == "up" else value <= yardstick
    print(f"billed accounts checked: {len(accounts):,}; retention actions advised {advised:,}")
    print(f"  actions the account already does (meets accounts that stayed): {done}")
    print(f"  drivers against their yardstick: {drivers_against}")
    distinct = ", ".join(f"{a} {len(v)}" for a, v in sorted(account_lifts.items()))
    print(f"  distinct lifts per action: {distinct}")


if __name__ == "__main__":
    main()
