"""Deal attributes: how a mapping declares them, and how a model fitted on them is served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecast.data.sources.mapping import read_mapped
from forecast.data.violations import ValidationError
from forecast.features.accounts import ACCOUNT_FEATURES
from forecast.features.deal_schema import DEAL_FEATURES, Feature, model_features


class _Fitted:
    def __init__(self, names: list[str]) -> None:
        self.feature_names_in_ = np.asarray(names, dtype=object)


def test_a_model_fitted_on_attributes_is_served_with_them_in_its_order():
    names = [*(f.name for f in DEAL_FEATURES), "attr_lead_source"]
    features = model_features(_Fitted(names), DEAL_FEATURES)
    assert [f.name for f in features] == names
    assert features[-1] == Feature("attr_lead_source", "categorical")
    assert features[0] is DEAL_FEATURES[0]


def test_an_attribute_is_served_as_the_model_was_fitted_on_it_numbers_or_categories():
    from forecast.model import make_lightgbm, model_input

    features = (*DEAL_FEATURES, Feature("attr_employees"), Feature("attr_source", "categorical"))
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f.name: rng.random(60) for f in features if f.kind == "numeric"})
    for f in features:
        if f.kind == "categorical":
            frame[f.name] = rng.choice(["a", "b"], 60)
    model = make_lightgbm(features).fit(model_input(frame, features), rng.integers(0, 2, 60))
    served = model_features(model, DEAL_FEATURES)
    assert served[-2:] == (Feature("attr_employees"), Feature("attr_source", "categorical"))


def test_a_model_of_another_pipeline_is_refused_naming_its_features():
    churn_model = _Fitted([f.name for f in ACCOUNT_FEATURES])
    with pytest.raises(ValueError, match="trained for another pipeline"):
        model_features(churn_model, DEAL_FEATURES)


def _export(tmp_path: Path, attributes: str, table: str = "deals") -> Path:
    (tmp_path / "deals.csv").write_text(
        "id,created,closed,stage,Lead Source\nD1,2024-01-02,,prospecting,Web\n"
    )
    (tmp_path / "mapping.yaml").write_text(
        "tables:\n  deals:\n    file: deals.csv\n"
        "    columns: {deal_id: id, created_at: created, closed_at: closed, stage: stage}\n"
        "    derive: {outcome: from_stage}\n"
        + (attributes if table == "deals" else "")
        + (
            "  reps:\n    file: deals.csv\n    columns: {rep_id: id}\n" + attributes
            if table == "reps"
            else ""
        )
    )
    return tmp_path / "mapping.yaml"


def test_attributes_are_read_with_their_file_line(tmp_path):
    mapping = _export(
        tmp_path, "    attributes:\n      lead_source: {column: Lead Source, known_at: created}\n"
    )
    raw, _ = read_mapped(tmp_path, mapping)
    attributes = raw["deal_attributes"]
    assert attributes.frame.to_dict("records") == [
        {"deal_id": "D1", "name": "lead_source", "value": "Web", "known_at": "created"}
    ]
    assert attributes.location(0) == "line 2"


@pytest.mark.parametrize(
    ("attributes", "table", "expected"),
    [
        (
            "    attributes:\n      lead_source: {column: Lead Sorce, known_at: created}\n",
            "deals",
            "did you mean 'Lead Source'?",
        ),
        (
            "    attributes:\n      Lead Source: {column: Lead Source, known_at: created}\n",
            "deals",
            "an attribute name in lower case",
        ),
        (
            "    attributes:\n      lead_source: {column: Lead Source, known_at: later}\n",
            "deals",
            "'created' or 'closed'",
        ),
        (
            "    attributes:\n      lead_source: {column: Lead Source, known_at: created}\n",
            "reps",
            "`attributes` only under deals",
        ),
    ],
    ids=["unknown-column", "bad-name", "bad-known-at", "not-deals"],
)
def test_a_wrong_attribute_is_a_mapping_error_with_its_line(tmp_path, attributes, table, expected):
    with pytest.raises(ValidationError) as refused:
        read_mapped(tmp_path, _export(tmp_path, attributes, table))
    message = str(refused.value)
    assert expected in message
    assert "mapping.yaml line" in message


def test_attribute_names_from_any_source_must_make_feature_names():
    from forecast.data.sources import RawTable
    from forecast.data.validate import validate

    deals = RawTable(
        "deals",
        pd.DataFrame(
            {
                "deal_id": ["D1"],
                "created_at": ["2024-01-02"],
                "closed_at": [""],
                "stage": ["prospecting"],
                "outcome": ["open"],
            }
        ),
        "deals.csv",
    )
    attributes = RawTable(
        "deal_attributes",
        pd.DataFrame(
            {
                "deal_id": ["D1", "D1"],
                "name": ["lead_source", 'Lead "Source"'],
                "value": ["Web", "Web"],
                "known_at": ["created", "created"],
            }
        ),
        "deal_attributes.csv",
    )
    with pytest.raises(ValidationError) as refused:
        validate({"deals": deals, "deal_attributes": attributes}, as_of=pd.Timestamp("2024-06-30"))
    [problem] = refused.value.violations
    assert (problem.location, problem.column, problem.check) == ("row 2", "name", "format")
