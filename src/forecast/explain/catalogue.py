"""The feature catalogue (`catalogue.yaml`): labels, reason groups, and actions people can take.

Kept as data beside the feature code; `tests/unit/test_catalogue.py` fails when a feature has no
entry, or an action changes a feature nobody can change.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, model_validator

if TYPE_CHECKING:
    from forecast.data.tables import CrmTables

Model = Literal["deal", "account"]


class FeatureEntry(BaseModel):
    """What one feature means to a person."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    unit: str
    group: str
    actionable: bool
    helps: Literal["up", "down"] | None = None

    @model_validator(mode="after")
    def _direction_for_actionable(self) -> FeatureEntry:
        if self.actionable and self.helps is None:
            raise ValueError(f"{self.label}: an actionable feature needs `helps: up|down`")
        return self


class Change(BaseModel):
    """How an action moves one feature: set or add, then clip."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    set: float | None = None
    add: float | None = None
    floor: float | None = None
    ceiling: float | None = None

    def apply(self, values: np.ndarray) -> np.ndarray:
        out = np.asarray(values, dtype=float).copy()
        if self.set is not None:
            out = np.full_like(out, self.set)
        if self.add is not None:
            out = out + self.add
        if self.floor is not None:
            out = np.maximum(out, self.floor)
        if self.ceiling is not None:
            out = np.minimum(out, self.ceiling)
        return out


class Action(BaseModel):
    """Something a rep or account owner can do, and the features it changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    evidence: str
    changes: dict[str, Change]

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`frame` as it would look after the action (a copy)."""
        changed = frame.copy()
        for feature, change in self.changes.items():
            changed[feature] = change.apply(changed[feature].to_numpy())
        return changed


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    deal: dict[str, FeatureEntry]
    account: dict[str, FeatureEntry]
    actions: dict[Model, dict[str, Action]]

    def features(self, model: Model) -> dict[str, FeatureEntry]:
        return self.deal if model == "deal" else self.account


def attribute_entry(name: str) -> FeatureEntry:
    """What a deal attribute (`attr_lead_source`) means to a person: its own name, no action."""
    label = name.removeprefix("attr_").replace("_", " ")
    return FeatureEntry(label=label, unit="", group="deal attributes", actionable=False)


def display_names(tables: CrmTables) -> dict[str, dict[str, str]]:
    """The names people know categorical values by, for reasons: a product by its name."""
    products = tables.products.dropna(subset=["name"])
    return {"product_id": dict(zip(products["product_id"], products["name"], strict=True))}


@cache
def load_catalogue() -> Catalogue:
    """The packaged catalogue, parsed and checked once per process."""
    text = (Path(__file__).parent / "catalogue.yaml").read_text(encoding="utf-8")
    return Catalogue.model_validate(yaml.safe_load(text))
