"""A CRM's round trip: deal records as the CRM holds them, scored through the real server."""

from __future__ import annotations

import pandas as pd
import pytest

from forecast.data.contract import OPEN_STAGES
from service.predlog import predictions_for

AS_OF = "2026-11-15T00:00:00Z"


def crm_record(tables, deal_id: str) -> dict:
    """The deal as a CRM holds it at the store's as-of: ids, stage, amount, dates, next step."""
    deal = tables.deals.set_index("deal_id").loc[deal_id]
    history = tables.deal_history
    now = history[(history["deal_id"] == deal_id) & (history["changed_at"] <= tables.as_of)]
    last = now.sort_values("changed_at").iloc[-1]
    return {
        "deal_id": deal_id,
        "rep_id": deal["rep_id"],
        "account_id": deal["account_id"],
        "product_id": deal["product_id"],
        "stage": last["stage"],
        "amount": None if pd.isna(last["amount"]) else float(last["amount"]),
        "currency": "USD",
        "created_at": deal["created_at"].isoformat(),
        "expected_close": None
        if pd.isna(last["expected_close"])
        else last["expected_close"].date().isoformat(),
        "next_step": None if pd.isna(last["next_step"]) else str(last["next_step"]),
    }


@pytest.fixture(scope="module")
def stored(api):
    """The open deals of the store, with their nightly (stored) scores."""
    from service.state import DEAL_MODEL

    scores = api.state.deal_scores(api.state.champion(DEAL_MODEL))
    return api.state.tables, scores


def test_a_stored_deal_sent_as_the_crm_holds_it_scores_as_the_nightly_score(api, stored):
    tables, nightly = stored
    deal_ids = sorted(nightly)[:40]
    records = [crm_record(tables, d) for d in deal_ids]
    answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": records}, api.key("crm"))
    assert answer.status == 200, answer.detail
    for score in answer.body["scores"]:
        assert score["probability"] == pytest.approx(
            nightly[score["deal_id"]].probability, abs=1e-9
        )
        assert score["new_to_store"] == []
    assert answer.body["warnings"] == []
    one = api.get(f"/v1/deals/{deal_ids[0]}", api.key("admin")).body
    assert one["probability"] == pytest.approx(answer.body["scores"][0]["probability"], abs=1e-9)


def test_a_new_deal_with_only_ids_stage_amount_and_dates_is_scored_as_new(api, stored):
    tables, _ = stored
    rep = tables.reps["rep_id"].iloc[0]
    record = {
        "deal_id": "CRM-NEW-1",
        "rep_id": rep,
        "account_id": "ACME-NEW",
        "product_id": tables.products["product_id"].iloc[0],
        "stage": "qualification",
        "amount": 30000,
        "created_at": "2026-10-01T09:00:00Z",
        "expected_close": "2026-12-20",
    }
    answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [record]}, api.key("crm"))
    assert answer.status == 200, answer.detail
    score = answer.body["scores"][0]
    assert score["new_to_store"] == ["deal_id", "account_id"]
    # the account's record is empty: said, so its rates in the reasons are not read as history
    (warning,) = answer.body["warnings"]
    assert "never seen: account_id (1)" in warning and "priors" in warning
    assert 0 < score["probability"] < 1 and score["grade"] in "ABCD"
    assert score["reasons"] and score["recommendations"]
    # what the store "knows" of a new account is a prior: no reason is drawn from it
    from forecast.features.deal_schema import FROM_RECORD_OF

    said = {r["feature"] for r in score["reasons"]}
    assert not said & set(FROM_RECORD_OF["account_id"]), said
    stranger = {**record, "deal_id": "CRM-NEW-9", "rep_id": "NOBODY-HERE", "product_id": "X-9"}
    answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [stranger]}, api.key("crm"))
    said = {r["feature"] for r in answer.body["scores"][0]["reasons"]}
    priors = {*FROM_RECORD_OF["rep_id"], *FROM_RECORD_OF["product_id"]}
    assert answer.body["scores"][0]["reasons"] and not said & priors, said


def test_changes_and_activities_sent_are_read_as_of_the_request(api, stored):
    """The same new deal: touched last week and moved to proposal scores otherwise than one
    left alone since creation; activities after the as-of are refused, not silently read."""
    base = {
        "deal_id": "CRM-NEW-2",
        "stage": "proposal",
        "amount": 20000,
        "created_at": "2026-08-01T00:00:00Z",
        "expected_close": "2026-12-15",
    }
    worked = {
        **base,
        "deal_id": "CRM-NEW-3",
        "history": [
            {"changed_at": "2026-08-01T00:00:00Z", "stage": "prospecting", "amount": 20000},
            {"changed_at": "2026-11-01T00:00:00Z", "stage": "proposal", "amount": 20000},
        ],
        "activities": [{"kind": k, "at": "2026-11-10T10:00:00Z"} for k in ("meeting", "demo")],
    }
    answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [base, worked]})
    assert answer.status == 401  # no key: refused before anything is read
    key = api.key("crm")
    answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [base, worked]}, key)
    assert answer.status == 200, answer.detail
    body = answer.body
    alone, touched = (s["probability"] for s in body["scores"])
    assert alone != touched
    late = {**worked, "activities": [{"kind": "call", "at": "2026-11-20T00:00:00Z"}]}
    answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [late]}, key)
    assert answer.status == 422 and "activities" in answer.detail


GOOD = {
    "deal_id": "CRM-BAD",
    "stage": "proposal",
    "amount": 1000.0,
    "created_at": "2026-10-01T00:00:00Z",
    "expected_close": "2026-12-01",
}


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"stage": "Proposal"}, "stage", "negotiation"),  # the allowed values are listed
        ({"stage": "closed_won"}, "stage", "prospecting"),
        ({"stage": "won"}, "stage", "qualification"),
        ({"amount": -5}, "amount", "greater than or equal to 0"),
        ({"expected_close": "2026-09-01"}, "expected_close", "before created_at"),
        ({"created_at": "2026-12-01T00:00:00Z"}, "created_at", "after the as-of"),
        ({"currency": "EUR"}, "currency", "USD"),
        ({"attributes": {"lead_sauce": "web"}}, "lead_sauce", "not an attribute"),
        ({"activities": [{"kind": "fax", "at": "2026-10-02T00:00:00Z"}]}, "kind", "call"),
        (
            {"history": [{"changed_at": "2026-09-01T00:00:00Z", "stage": "proposal"}]},
            "changed_at",
            "between",
        ),
        ({"deal_id": ""}, "deal_id", "at least 1"),  # a blank id names no deal
        ({"days_in_stage": 4}, "days_in_stage", "not permitted"),
    ],
)
def test_a_malformed_record_is_422_naming_the_field(api, change, field, says):
    record = {**GOOD, "deal_id": "CRM-BAD-2", **change}
    answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [GOOD, record]}, api.key("crm"))
    assert answer.status == 422, answer.detail
    (error,) = answer.body["detail"]
    assert error["loc"][:3] == ["body", "deals", 1] and field in map(str, error["loc"])
    assert says in error["msg"], error


def test_a_blank_optional_field_is_missing_as_the_import_reads_it(api):
    """A CRM sends an empty field as "": the record scores as if it were not sent."""
    optional = ("rep_id", "account_id", "product_id", "amount", "expected_close", "next_step")
    without = {k: v for k, v in GOOD.items() if k not in optional}
    blank = {**without, **dict.fromkeys(optional, "")}
    scored = [
        api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [r]}, api.key("crm"))
        for r in (without, blank)
    ]
    assert [a.status for a in scored] == [200, 200], scored[1].detail
    probabilities = [a.body["scores"][0]["probability"] for a in scored]
    assert probabilities[0] == probabilities[1]


def test_a_record_missing_what_it_must_have_is_422(api):
    for missing in ("deal_id", "stage", "created_at"):
        record = {k: v for k, v in GOOD.items() if k != missing}
        answer = api.post("/v1/deals:score", {"deals": [record]}, api.key("crm"))
        assert answer.status == 422 and missing in answer.detail


def test_a_deal_sent_twice_in_a_batch_is_422(api):
    answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [GOOD, GOOD]}, api.key("crm"))
    assert answer.status == 422 and "sent twice" in answer.detail


def test_a_thousand_records_score_in_one_call_and_are_logged_with_their_reasons(api, stored):
    tables, nightly = stored
    records = [crm_record(tables, d) for d in sorted(nightly)]
    records += [{**GOOD, "deal_id": f"CRM-{i}"} for i in range(1000 - len(records))]
    answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": records}, api.key("crm"))
    assert answer.status == 200, answer.detail
    assert len(answer.body["scores"]) == 1000
    api.state.logs.flush()
    logged = predictions_for(api.state.engine, answer.body["request_id"])
    assert len(logged) == 1000
    first = logged[0]
    assert first["subject"] == records[0]["deal_id"]
    assert first["output"]["reasons"] == [r["text"] for r in answer.body["scores"][0]["reasons"]]
    assert len(first["input_hash"]) == 64


def test_the_crms_own_names_score_once_the_store_was_imported_with_them(api, stored):
    """A store imported through a mapping keeps what the mapping translated: the CRM sends its
    own stage, product and activity names, as its export holds them."""
    from forecast.data.store import read_store, rollback_store, write_store

    tables, nightly = stored
    record = crm_record(tables, sorted(nightly)[0])
    record["activities"] = [{"kind": "call", "at": "2026-11-10T10:00:00Z"}]
    key = api.key("crm")
    canonical = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [record]}, key)
    assert canonical.status == 200, canonical.detail
    unknown = {**record, "stage": "Pitched"}
    answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [unknown]}, key)
    assert answer.status == 422
    assert answer.body["detail"][0]["msg"] == (
        "not one of prospecting, qualification, proposal, negotiation"
    )
    names = {"Engaging": "qualification", "Pitched": "proposal", "Negotiating": "negotiation",
             "Prospect": "prospecting", "Won": "closed_won"}  # fmt: skip
    product, rep = record["product_id"], record["rep_id"]
    other = next(r for r in tables.reps["rep_id"] if r != rep)
    translations = {
        "deals": {
            "stage": names,
            "product_id": {"Widget Pro": product},
            "rep_id": {"Alice Own": rep, "Bob Other": other},
        },
        "activities": {"kind": {"Phone": "call"}},
    }
    own = {
        **record,
        "stage": {v: k for k, v in names.items()}[record["stage"]],
        "product_id": "Widget Pro",
        "activities": [{"kind": "Phone", "at": "2026-11-10T10:00:00Z"}],
    }
    store = api.state.settings.store_path
    write_store(read_store(store).replace(translations=translations), source="renamed",
                imported_at=pd.Timestamp("2026-11-15"), store=store)  # fmt: skip
    try:
        api.state.load_store()
        answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [own]}, key)
        assert answer.status == 200, answer.detail
        (score,) = answer.body["scores"]
        assert score["probability"] == pytest.approx(
            canonical.body["scores"][0]["probability"], abs=1e-12
        )
        assert score["new_to_store"] == [] and answer.body["warnings"] == []
        answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [{**own, "stage": "Lost"}]},
                          key)  # fmt: skip
        assert answer.status == 422
        (error,) = answer.body["detail"]
        assert error["loc"] == ["body", "deals", 0, "stage"] and error["input"] == "Lost"
        assert error["msg"] == (
            "not one of prospecting, qualification, proposal, negotiation, or as the CRM names "
            "them: Engaging, Pitched, Negotiating, Prospect"
        )
        answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [{**own, "stage": "Won"}]},
                          key)  # fmt: skip
        assert answer.status == 422
        assert answer.body["detail"][0]["msg"].startswith("Won (closed_won) is a closed stage")
        # reach is judged on the ids as the store names them: a rep's own CRM name is theirs,
        # a name the mapping gives another rep is not
        mine = api.key("rep", rep)
        named = {**own, "deal_id": "MY-NEW-1", "rep_id": "Alice Own"}
        answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [named]}, mine)
        assert answer.status == 200, answer.detail
        theirs = {**named, "rep_id": "Bob Other"}
        answer = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [theirs]}, mine)
        assert answer.status == 404 and other in answer.detail
    finally:
        rollback_store(store)
        api.state.load_store()


def test_the_schema_lists_the_stages_and_describes_every_field(api):
    schema = api.get("/openapi.json").body
    record = schema["components"]["schemas"]["DealRecordIn"]
    canonical, own = record["properties"]["stage"]["anyOf"]
    assert canonical["enum"] == list(OPEN_STAGES)
    assert own["type"] == "string" and "mapping" in own["description"]
    undescribed = [name for name, p in record["properties"].items() if not p.get("description")]
    assert undescribed == []
    assert record["examples"] and set(record["required"]) == {"deal_id", "stage", "created_at"}


def test_a_422_names_a_large_input_without_echoing_it(api):
    big = {"as_of": AS_OF, "deals": [{**GOOD, "deal_id": f"D{i}"} for i in range(1001)]}
    answer = api.post("/v1/deals:score", big, api.key("crm"))
    assert answer.status == 422
    assert len(answer.detail) < 2000, len(answer.detail)
    (error,) = answer.body["detail"]
    assert error["loc"] == ["body", "deals"] and "1000" in error["msg"]
    assert "1,001 items" in error["input"]


def test_a_422_for_values_json_cannot_carry_is_still_a_422(api):
    key = api.key("crm")
    raw = b'{"deals": [{"deal_id": "X", "stage": "proposal", "amount": NaN}]}'
    answer = api.call("POST", "/v1/deals:score", key=key, data=raw)
    assert answer.status == 422, answer.detail
    assert ["body", "deals", 0, "amount"] in [e["loc"] for e in answer.body["detail"]]
    raw = b'{"deals": [{"deal_id": "\\ud800", "stage": "proposal"}]}'
    answer = api.call("POST", "/v1/deals:score", key=key, data=raw)
    assert answer.status == 422, answer.detail


def test_a_rep_scores_records_of_their_own_deals_and_no_one_elses(api, stored):
    tables, nightly = stored
    owners = tables.deals.set_index("deal_id")["rep_id"]
    mine_id = sorted(nightly)[0]
    rep = owners[mine_id]
    other_id = next(d for d in sorted(nightly) if owners[d] != rep)
    key = api.key("rep", rep)

    def score(record: dict) -> int:
        return api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [record]}, key).status

    assert score(crm_record(tables, mine_id)) == 200
    assert score({**GOOD, "deal_id": "MY-NEW", "rep_id": rep}) == 200
    assert score(crm_record(tables, other_id)) == 404  # its stored history is not theirs
    assert score({**GOOD, "deal_id": "MY-NEW", "rep_id": owners[other_id]}) == 404
    crm = api.post("/v1/deals:score", {"as_of": AS_OF, "deals": [crm_record(tables, other_id)]},
                   api.key("crm"))  # fmt: skip
    assert crm.status == 200
