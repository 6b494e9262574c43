"""Plotly figures as plain dicts (JSON for Plotly.newPlot in the page): no plotting in routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Figure = dict[str, Any]

BAND = "rgba(37, 99, 235, 0.18)"
INNER = "rgba(37, 99, 235, 0.35)"
LINE = "#1d4ed8"
TARGET = "#b91c1c"
LAYOUT: dict[str, Any] = {
    "margin": {"l": 56, "r": 12, "t": 28, "b": 40},
    "height": 320,
    "legend": {"orientation": "h", "y": -0.18},
    "font": {"family": "system-ui, sans-serif", "size": 12},
    "paper_bgcolor": "white",
    "plot_bgcolor": "white",
}


def _num(value: Any) -> float | None:
    v = float(value) if value is not None else float("nan")
    return v if np.isfinite(v) else None


def fan_chart(quarters: Sequence[dict[str, Any]]) -> Figure:
    """P10-P90 and P25-P75 bands with the P50 line for each quarter, and the target.

    Args:
        quarters: per quarter, `quarter`, `p10`, `p25`, `p50`, `p75`, `p90` and `target`.
    """
    x = [q["quarter"] for q in quarters]

    def band(low: str, high: str, name: str, color: str) -> list[dict[str, Any]]:
        return [
            {"x": x, "y": [q[low] for q in quarters], "mode": "lines", "line": {"width": 0},
             "showlegend": False, "hoverinfo": "skip", "type": "scatter"},
            {"x": x, "y": [q[high] for q in quarters], "mode": "lines", "line": {"width": 0},
             "fill": "tonexty", "fillcolor": color, "name": name, "type": "scatter"},
        ]  # fmt: skip

    data = [
        *band("p10", "p90", "P10-P90", BAND),
        *band("p25", "p75", "P25-P75", INNER),
        {"x": x, "y": [q["p50"] for q in quarters], "mode": "lines+markers", "name": "P50",
         "line": {"color": LINE, "width": 3}, "type": "scatter"},
    ]  # fmt: skip
    targets = [_num(q["target"]) for q in quarters]
    if any(t is not None for t in targets):  # no legend entry for targets nobody set
        data.append(
            {"x": x, "y": targets, "mode": "markers+lines", "name": "target",
             "line": {"color": TARGET, "dash": "dash"},
             "marker": {"symbol": "line-ew-open", "size": 18}, "type": "scatter"}
        )  # fmt: skip
    layout = {**LAYOUT, "yaxis": {"title": {"text": "bookings"}, "rangemode": "tozero"}}
    return {"data": data, "layout": layout}


def decomposition_chart(quarters: Sequence[dict[str, Any]]) -> Figure:
    """Expected bookings split into closed, open, not yet created and recurring, per quarter."""
    parts = (
        ("closed", "closed", "#15803d"),
        ("open", "open pipeline", "#2563eb"),
        ("new", "not yet created", "#a855f7"),
        ("recurring", "recurring", "#f59e0b"),
    )
    data = [
        {"type": "bar", "name": label, "x": [q["quarter"] for q in quarters],
         "y": [q[key] for q in quarters], "marker": {"color": color}}
        for key, label, color in parts
    ]  # fmt: skip
    return {"data": data, "layout": {**LAYOUT, "barmode": "stack", "height": 280}}


def funnel_chart(
    stages: Sequence[str], rep: Sequence[float], team: Sequence[float] | None
) -> Figure:
    """Share of deals reaching each stage (of those that entered the first), rep against team
    (None: the team's figures are withheld from this viewer)."""
    data = [
        {"type": "funnel", "name": "this rep", "y": list(stages), "x": list(rep),
         "texttemplate": "%{x:.0%}", "marker": {"color": LINE}},
    ]  # fmt: skip
    if team is not None:
        data.append({"type": "funnel", "name": "team", "y": list(stages), "x": list(team),
                     "texttemplate": "%{x:.0%}", "marker": {"color": "#9ca3af"}})  # fmt: skip
    layout = {
        **LAYOUT,
        "funnelmode": "group",
        "height": 340,
        "margin": {**LAYOUT["margin"], "l": 96},
    }
    return {"data": data, "layout": layout}
