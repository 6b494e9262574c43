"""What an explanation says and in which words: reasons, recommendations, the catalogue's labels
for the model's features."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from forecast.explain.actions import ActionPlan
from forecast.explain.catalogue import (
    Action,
    Catalogue,
    FeatureEntry,
    Model,
    attribute_entry,
)

Direction = Literal["raises", "lowers"]


# Plain (not frozen) slotted records: a frozen one costs four times as much to make, and a
# book's explanation makes ten of them per deal.
@dataclass(slots=True)
class Reason:
    """One feature's push on the score, in the words of the catalogue."""

    code: str  # the stable reason code (catalogue group)
    feature: str
    direction: Direction
    effect: float  # contribution to the raw (log-odds) score
    value: float | str | None
    typical: float | None  # what won deals at the same stage show (None if not numeric)
    text: str


@dataclass(slots=True)
class Recommendation:
    """An action, its expected effect on the probability and on expected revenue."""

    action: str
    text: str
    features: tuple[str, ...]
    probability_before: float
    probability_after: float
    lift_points: float  # percentage points gained (deals) or churn risk removed (accounts)
    expected_revenue_change: float
    evidence: str


@dataclass(slots=True)
class Explanation:
    probability: float
    raw_score: float
    reasons: list[Reason] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    reason_codes: dict[str, float] = field(default_factory=dict)


def _group_matrix(
    names: list[str], entries: dict[str, FeatureEntry]
) -> tuple[list[str], np.ndarray]:
    codes = sorted({entries[n].group for n in names})
    matrix = np.array([[entries[n].group == c for n in names] for c in codes], dtype=float)
    return codes, matrix


@dataclass(frozen=True)
class Vocabulary:
    """How a model's features are put into words and grouped into reason codes, and what can
    be done about them."""

    names: list[str]
    words: list[_Words]
    codes: list[str]
    membership: np.ndarray  # codes x features
    actions: list[tuple[str, Action]]
    evidence: list[int]  # per action: the column its evidence sentence describes
    plan: ActionPlan
    helps: np.ndarray  # per feature: +1 more helps, -1 less helps, 0 no settled direction


_VOCABULARIES: dict[tuple[int, str], tuple[Catalogue, Vocabulary]] = {}


def vocabulary_for(names: list[str], catalogue: Catalogue, model: Model) -> Vocabulary:
    """Made once per catalogue, model and feature list: making it for every one-deal request
    would cost a fifth of the request."""
    cached = _VOCABULARIES.get((id(catalogue), model))
    # the same object, not a recycled id, and the same features
    if cached is not None and cached[0] is catalogue and cached[1].names == names:
        return cached[1]
    entries = catalogue.features(model)
    # a deal attribute from an export (`attr_...`) has no catalogue entry: it speaks for itself
    entries = entries | {n: attribute_entry(n) for n in names if n not in entries}
    position = {name: j for j, name in enumerate(names)}
    codes, membership = _group_matrix(names, entries)
    actions = [
        (key, action)
        for key, action in catalogue.actions[model].items()
        if _applies(action, position.keys())
    ]
    made = Vocabulary(
        names=list(names),
        words=[_Words(name, entries[name], YARDSTICKS[model]) for name in names],
        codes=codes,
        membership=membership,
        actions=actions,
        evidence=[position[action.evidence] for _, action in actions],
        plan=ActionPlan.of([action for _, action in actions], position),
        helps=np.array([{"up": 1.0, "down": -1.0}.get(entries[n].helps or "", 0.0) for n in names]),
    )
    if len(_VOCABULARIES) > 16:  # a few catalogues at most; drop older ones
        _VOCABULARIES.clear()
    _VOCABULARIES[(id(catalogue), model)] = (catalogue, made)
    return made


def _one(unit: str) -> str:
    """The catalogue's plural unit for one: 1 purchase, 1 day, 1 touch (a rate stays)."""
    if unit == "people":
        return "person"
    if "/" in unit:
        return unit
    if unit.endswith(("ches", "shes", "xes")):
        return unit[:-2]
    return unit.removesuffix("s")


class _Words:
    """How one feature is put into words: label, unit and the evidence sentence."""

    def __init__(self, name: str, entry: FeatureEntry, yardstick: str):
        self.name, self.entry, self.unit, self.group = name, entry, entry.unit, entry.group
        self.yardstick = yardstick
        if name == "days_since_last_activity":
            self.prefix = "No touch in "
        elif name == "days_since_rep_touch":
            self.prefix = "The rep has not been in touch for "
        else:
            self.prefix = f"{entry.label[0].upper()}{entry.label[1:]}: "
        # a book repeats values and yardsticks: each (value, yardstick) is worded once
        self._texts: dict[tuple[object, float | None], str] = {}

    def show(self, value: Any) -> str:
        if value is None or value != value:  # None or NaN
            return "unknown"
        if isinstance(value, str):
            return value
        return self._worded(float(value))

    def _worded(self, number: float) -> str:
        unit = self.unit
        if unit == "share":
            return f"{number:.0%}"
        if unit == "currency":
            return f"{number:,.0f}"
        if unit == "":
            return "yes" if number == 1 else "no" if number == 0 else f"{number:g}"
        if number == 1:
            return f"1 {_one(unit)}"
        if abs(number) >= 10 or number == int(number):
            return f"{number:.0f} {unit}"
        return f"{number:.1f} {unit}"

    def text(self, value: object, typical: float) -> str:
        # NaN is not equal to itself, so it would never be found again as a key
        key = (None if value != value else value, None if typical != typical else typical)
        text = self._texts.get(key)
        if text is None:
            if len(self._texts) > 8192:  # continuous values need not all be kept
                self._texts.clear()
            text = self.prefix + self.show(value)
            if key[1] is not None:
                text += f"; {self.yardstick}: " + self.show(typical)
            self._texts[key] = text
        return text

    def reason(self, effect: float, value: Any, typical: float, shown: object) -> Reason:
        """The reason `value` gives, in words naming it as people know it (`shown`)."""
        if value is None or value != value:
            known = None
        else:
            known = value if isinstance(value, str) else float(value)
        return Reason(
            code=self.group,
            feature=self.name,
            direction="raises" if effect > 0 else "lowers",
            effect=effect,
            value=known,
            typical=None if typical != typical else float(typical),
            text=self.text(shown, typical),
        )


YARDSTICKS = {"deal": "won deals at this stage", "account": "accounts that stayed"}

"""Whom a value is set against in the text, per model."""


def _applies(action: Action, names: Collection[str]) -> bool:
    """An action applies to a model that reads every feature it reads and moves (a churn
    model of orders has none of the subscription actions' features)."""
    return {action.evidence, *action.changes} <= set(names)


def why_no_actions(names: Collection[str], catalogue: Catalogue, model: Model) -> str | None:
    """Why a model reading `names` can recommend no action of the catalogue to anyone (every
    action acts on features it does not read), or None when some action applies."""
    if any(_applies(action, names) for action in catalogue.actions[model].values()):
        return None
    entries = catalogue.features(model)
    evidence = dict.fromkeys(a.evidence for a in catalogue.actions[model].values())
    unread = [entries[n].label for n in evidence if n not in names]
    whom = "deal" if model == "deal" else "account"
    return (
        f"No action is recommended to any {whom}: the catalogue's actions act on "
        f"{', '.join(unread)}, and the stored CRM holds none of them (`forecast data doctor` "
        "lists what it lacks)."
    )
