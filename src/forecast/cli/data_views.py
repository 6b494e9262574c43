"""How the `forecast data` commands show a CRM and its import: tables of what it holds and
what it supports, the problems found and the rows set aside."""

from __future__ import annotations

from rich.table import Table

from forecast.cli.common import console, err_console
from forecast.settings import get_settings


def print_diagnosis(found) -> None:
    console.rule(f"CRM as of {found.as_of}: what it supports")
    rows = ", ".join(f"{k} {v:,}" for k, v in found.rows.items() if v)
    console.print(f"Rows: {rows}", highlight=False)
    first, last = found.deals_span
    if first is None:
        console.print("Deals: none in the export", highlight=False)
    else:
        console.print(
            f"Deals created {first} .. {last}; won {found.closed['won']:,}, lost "
            f"{found.closed['lost']:,}, open {found.closed['open']:,}; stage history: "
            f"{found.history}",
            highlight=False,
        )
        cycle = ", ".join(f"{k} {v:g}" for k, v in found.cycle_days.items() if v is not None)
        console.print(f"Days from created to closed: {cycle or 'no closed deals'}", highlight=False)
        rates = ", ".join(f"{k} {v:.0%}" for k, v in found.win_rate_by_quarter.items())
        console.print(f"Win rate by close quarter: {rates or 'no closed deals'}", highlight=False)
    table = Table("model", "can be trained (a forecast: made)", title="Models")
    for model, verdict in found.trainable.items():
        table.add_row(model, verdict)
    console.print(table)
    if found.features_off and first is not None:  # the deal-win model's features
        off = Table("reason", "features off", title="Features off (the data lacks what they read)")
        for reason in dict.fromkeys(found.features_off.values()):
            names = [n for n, r in found.features_off.items() if r == reason]
            off.add_row(reason, ", ".join(names))
        console.print(off)
    for suspect in found.suspicious_columns:
        console.print(f"suspicious: {suspect}", style="yellow", markup=False, highlight=False)
    if not found.blocked:
        if found.blockers:  # no closed deals at all: a deal-win model is not what it is for
            console.print("[green]nothing blocks training churn[/] (no closed deals to win)")
        else:
            console.print(
                "[green]nothing blocks training[/] of what the doctor checks; the leak guard "
                "also tests each feature alone when `forecast train win` runs (a column set at "
                "the close, as a won deal's booked amount, is refused then)"
            )


def print_description(tables) -> None:
    from forecast.data.describe import describe

    d = describe(tables)
    console.rule(f"CRM as of {d.as_of:%Y-%m-%d}")
    counts = Table("table", "rows", "from", "to", title="Tables")
    for name, n in d.rows.items():
        first, last = d.date_ranges.get(name, (None, None))
        counts.add_row(
            name,
            f"{n:,}",
            "" if first is None else f"{first:%Y-%m-%d}",
            "" if last is None else f"{last:%Y-%m-%d}",
        )
    console.print(counts)
    if d.rows["deals"]:
        _print_deals(d, tables)
    if o := d.orders:
        console.print(
            f"Orders: {o['lines']:,} lines in {o['orders']:,} orders from {o['customers']:,} "
            f"customers; {o['lines_without_customer']:,} lines "
            f"({o['lines_without_customer'] / o['lines']:.1%}) without a customer (in the totals, "
            f"scored for no one); returns and cancellations {o['returned_share']:.1%} of sales",
            soft_wrap=True,
        )
    revenue = Table("quarter", *d.revenue_by_quarter.columns, title="Revenue by quarter (last 8)")
    for quarter, row in d.revenue_by_quarter.tail(8).iterrows():
        revenue.add_row(quarter, *(f"{v:,.0f}" for v in row))
    console.print(revenue)


def _print_deals(d, tables) -> None:
    from forecast.data.derive import history_is_derived

    outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(d.deals_by_outcome.items()))
    console.print(f"Deals: {outcomes}; win rate of closed deals {d.win_rate:.1%}")
    segments = ", ".join(f"{k} {v:.1%}" for k, v in d.win_rate_by_segment.items())
    console.print(f"Win rate by segment: {segments}")
    if history_is_derived(tables.deal_history):
        console.print(
            "Stage conversion: no stage history in the export (deal_history derived from the "
            "deals), so there is none to show"
        )
    else:
        conversion = Table("from", "to", "deals", "converted", "rate", title="Stage conversion")
        for row in d.stage_conversion.itertuples():
            conversion.add_row(
                row[1], row[2], f"{row.deals:,}", f"{row.converted:,}", f"{row.rate:.1%}"
            )
        console.print(conversion)


def print_set_aside(set_aside, derived) -> None:
    """Rows repaired or quarantined under --bad-rows, and tables derived, as warnings."""
    if "deal_history" in derived:
        err_console.print(
            "deal_history: none in the source, derived from deals (a creation row and the "
            "closing row per deal); stage-history features are off",
            style="yellow",
            markup=False,
        )
    if not set_aside:
        return
    err_console.print(f"{len(set_aside):,} rows set aside or repaired:", style="yellow")
    shown = get_settings().max_violations_shown
    for note in set_aside[:shown]:
        err_console.print(f"  {note}", markup=False, highlight=False, soft_wrap=True)
    if len(set_aside) > shown:
        err_console.print(f"  … and {len(set_aside) - shown:,} more", markup=False)


def print_violations(err) -> None:
    """The validation summary as plain text: long paths must not be wrapped mid-name."""
    err_console.print(
        err.summary(get_settings().max_violations_shown),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
