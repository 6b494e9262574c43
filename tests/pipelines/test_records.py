"""CRM records scored against a stored CRM: the training features, exactly, at any as-of."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecast.data.world import make_crm
from forecast.features.deals import deal_features, deal_snapshots
from forecast.features.records import RecordError, StoredCrm, canonical_records, record_tables

AS_OFS = [pd.Timestamp("2025-03-09"), pd.Timestamp("2025-09-14"), pd.Timestamp("2026-11-15")]


@pytest.fixture(scope="module")
def stored() -> StoredCrm:
    """A generated CRM with a lead source known at creation and a loss reason known at close."""
    tables = make_crm(2500, seed=11, start="2023-06-01").tables
    deals = tables.deals
    rng = np.random.default_rng(0)
    sources = rng.choice(["web", "event", "partner"], size=len(deals))
    attributes = pd.concat(
        [
            pd.DataFrame(
                {
                    "deal_id": deals["deal_id"],
                    "name": "lead_source",
                    "value": sources,
                    "known_at": "created",
                }
            ),
            pd.DataFrame(
                {
                    "deal_id": deals["deal_id"],
                    "name": "loss_reason",
                    "value": "price",
                    "known_at": "closed",
                }
            ),
        ],
        ignore_index=True,
    )
    return StoredCrm.of(tables.replace(deal_attributes=attributes))


def _as_held(stored: StoredCrm, deal_id: str, as_of: pd.Timestamp) -> dict:
    """The deal as its CRM held it at `as_of`: the record's fields from its last change then."""
    tables = stored.tables
    deal = tables.deals.set_index("deal_id").loc[deal_id]
    history = tables.deal_history
    mine = history[(history["deal_id"] == deal_id) & (history["changed_at"] <= as_of)]
    last = mine.sort_values("changed_at").iloc[-1]

    def value(v: object) -> object:
        return None if pd.isna(v) else v

    return {
        "deal_id": deal_id,
        "rep_id": value(deal["rep_id"]),
        "account_id": value(deal["account_id"]),
        "product_id": value(deal["product_id"]),
        "created_at": deal["created_at"],
        "stage": last["stage"],
        "amount": value(last["amount"]),
        "expected_close": value(last["expected_close"]),
        "next_step": value(last["next_step"]),
    }


@pytest.mark.parametrize("as_of", AS_OFS)
def test_stored_deals_sent_as_held_get_the_training_features_exactly(stored, as_of):
    tables = stored.tables
    snapshots = deal_snapshots(tables, [as_of]).sample(frac=1.0, random_state=0).head(150)
    expected = deal_features(tables, snapshots.reset_index(drop=True))
    records = [_as_held(stored, d, as_of) for d in snapshots["deal_id"]]
    sent = record_tables(records, stored, as_of)
    got = deal_features(sent, snapshots.reset_index(drop=True), context=stored.context)
    assert "attr_lead_source" in got and "attr_loss_reason" not in got
    pd.testing.assert_frame_equal(got, expected)


def test_changes_and_activities_sent_in_full_give_the_same_features(stored):
    """Sending the deal's own changes and activities (as the store has them) changes nothing."""
    tables, as_of = stored.tables, AS_OFS[1]
    snapshots = deal_snapshots(tables, [as_of]).head(60).reset_index(drop=True)
    records = []
    for deal_id in snapshots["deal_id"]:
        record = _as_held(stored, deal_id, as_of)
        history = tables.deal_history[tables.deal_history["deal_id"] == deal_id]
        acts = tables.activities[tables.activities["deal_id"] == deal_id]
        record["history"] = [
            {k: (None if pd.isna(v) else v) for k, v in row.items()}
            for row in history[history["changed_at"] <= as_of][
                ["changed_at", "stage", "amount", "expected_close", "next_step"]
            ].to_dict(orient="records")
        ]
        record["activities"] = acts[acts["at"] <= as_of][["kind", "at"]].to_dict(orient="records")
        record["attributes"] = {
            "lead_source": tables.deal_attributes.set_index(["deal_id", "name"]).at[
                (deal_id, "lead_source"), "value"
            ]
        }
        records.append(record)
    got = deal_features(record_tables(records, stored, as_of), snapshots, context=stored.context)
    pd.testing.assert_frame_equal(got, deal_features(tables, snapshots))


def test_a_record_whose_state_moved_since_the_store_reads_its_own_state(stored):
    tables, as_of = stored.tables, AS_OFS[2]
    deal_id = deal_snapshots(tables, [as_of])["deal_id"].iloc[0]
    record = _as_held(stored, deal_id, as_of)
    moved = {**record, "amount": (record["amount"] or 0) * 2 + 1000, "next_step": "Call the CFO"}
    snapshot = pd.DataFrame({"deal_id": [deal_id], "as_of": [as_of]})
    before = deal_features(record_tables([record], stored, as_of), snapshot, context=stored.context)
    after = deal_features(record_tables([moved], stored, as_of), snapshot, context=stored.context)
    assert after["amount"].iloc[0] == moved["amount"]
    assert after["amount_changes"].iloc[0] == before["amount_changes"].iloc[0] + 1
    assert after["has_next_step"].iloc[0] == 1.0


def test_records_that_cannot_be_scored_are_refused_naming_the_field(stored):
    as_of = AS_OFS[2]
    good = {"deal_id": "N1", "stage": "proposal", "created_at": pd.Timestamp("2026-10-01")}
    cases = [
        ([good, good], ("deals", 1, "deal_id"), "sent twice"),
        (
            [{**good, "created_at": as_of + pd.Timedelta(days=1)}],
            ("deals", 0, "created_at"),
            "after",
        ),
        (
            [{**good, "attributes": {"loss_reason": "price"}}],
            ("deals", 0, "attributes", "loss_reason"),
            "lead_source",
        ),
    ]
    for records, where, says in cases:
        with pytest.raises(RecordError) as refused:
            record_tables(records, stored, as_of)
        assert refused.value.where == where and says in refused.value.message


def test_records_in_the_exports_own_names_score_as_the_canonical_ones(stored):
    """A store imported through a mapping keeps what it translated: a CRM sending its own
    stage, product and activity names gets the features of the canonical values."""
    tables, as_of = stored.tables, AS_OFS[1]
    product = tables.products["product_id"].iloc[0]
    translated = StoredCrm.of(
        tables.replace(
            translations={
                "deals": {
                    "stage": {
                        "Engaging": "qualification",
                        "Pitched": "proposal",
                        "Won": "closed_won",
                    },
                    "product_id": {"Widget Pro": product},
                },
                "deal_history": {"stage": {"Engaging": "qualification", "Pitched": "proposal"}},
                "activities": {"kind": {"Phone": "call", "Showcase": "demo"}},
            }
        )
    )
    canonical = {
        "deal_id": "N1",
        "stage": "proposal",
        "product_id": product,
        "created_at": pd.Timestamp("2025-08-01"),
        "history": [
            {"changed_at": pd.Timestamp("2025-08-01"), "stage": "qualification"},
            {"changed_at": pd.Timestamp("2025-09-01"), "stage": "proposal"},
        ],
        "activities": [
            {"kind": "call", "at": pd.Timestamp("2025-08-20")},
            {"kind": "demo", "at": pd.Timestamp("2025-09-05")},
        ],
    }
    own = {
        **canonical,
        "stage": " Pitched ",  # compared without surrounding spaces, as the import does
        "product_id": "Widget Pro",
        "history": [
            {"changed_at": pd.Timestamp("2025-08-01"), "stage": "Engaging"},
            {"changed_at": pd.Timestamp("2025-09-01"), "stage": "Pitched"},
        ],
        "activities": [
            {"kind": "Phone", "at": pd.Timestamp("2025-08-20")},
            {"kind": "Showcase", "at": pd.Timestamp("2025-09-05")},
        ],
    }
    snapshot = pd.DataFrame({"deal_id": ["N1"], "as_of": [as_of]})

    def features(records: list[dict], store: StoredCrm) -> pd.DataFrame:
        facts = record_tables(canonical_records(records, store), store, as_of)
        return deal_features(facts, snapshot, context=store.context)

    pd.testing.assert_frame_equal(features([own], translated), features([canonical], stored))
    assert features([canonical], translated)["stage"].iloc[0] == "proposal"

    cases = [
        (
            {"stage": "Engaged"},
            ("deals", 0, "stage"),
            "or as the CRM names them: Engaging, Pitched",
        ),
        ({"stage": "Won"}, ("deals", 0, "stage"), "Won (closed_won) is a closed stage"),
        (
            {"activities": [{"kind": "Fax", "at": pd.Timestamp("2025-08-20")}]},
            ("deals", 0, "activities", 0, "kind"),
            "call, email, meeting, demo, proposal, other, or as the CRM names them: Phone",
        ),
    ]
    for change, where, says in cases:
        with pytest.raises(RecordError) as refused:
            canonical_records([{**own, **change}], translated)
        assert refused.value.where == where and says in refused.value.message, refused.value
    with pytest.raises(RecordError) as refused:  # a store without translations names none
        canonical_records([{**canonical, "stage": "Pitched"}], stored)
    assert refused.value.message == "not one of prospecting, qualification, proposal, negotiation"
    with pytest.raises(RecordError) as refused:  # record_tables reads canonical values only
        record_tables([own], translated, as_of)
    assert refused.value.where == ("deals", 0, "stage")
    with pytest.raises(RecordError) as refused:
        canonical_records([{**canonical, "stage": None}], translated)
    assert refused.value.message.startswith("not text: one of prospecting")
    # a name the map holds is read as the map says, even when it is a canonical value too:
    # the import stored the export's "proposal" deals as negotiation
    renamed = StoredCrm.of(
        tables.replace(translations={"deals": {"stage": {"proposal": "negotiation"}}})
    )
    (once,) = canonical_records([{**canonical, "stage": "proposal", "history": None}], renamed)
    assert once["stage"] == "negotiation"
    assert canonical_records([once], renamed)[0]["stage"] == "negotiation"
