"""schemathesis over the service's own OpenAPI schema, against real champions on 127.0.0.1.

Every operation gets generated requests with a valid key: valid ones for an admin and for a
rep, invalid ones for the admin. No answer may be a server error, and every answer must match
the documented status codes, content types, headers and body schemas. Half of the generated
requests name real objects (deals, accounts, reps, teams, the forecast quarter), so the 200
paths are fuzzed too, not only the 404s.

`FORECAST_FUZZ_CASES` sets the valid cases per operation for the admin (default 100; `make fuzz`
runs 1,000); the admin's invalid cases and the rep's are a quarter of that.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from forecast.explain.account_scoring import billed_account_ids
from forecast.explain.scoring import open_deal_ids
from tests.service.conftest import OPERATIONS

CASES = int(os.environ.get("FORECAST_FUZZ_CASES", "100"))
# The schema's contract. Not `positive_data_acceptance`: a request can match the schema and still
# name a deal, node or quarter that does not exist or is out of reach (404), or a closed deal in a
# scenario (422), by design. Not `negative_data_rejection`: numbers sent as text ("12.5", "NaN",
# "Infinity") are scored on purpose (JSON has no NaN), though the schema says `number`.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]
# No parameters and no body: their requests differ only in generated credentials (replaced by
# ours), so a handful say all there is to say (the reload reads the store and registry each time).
NO_INPUTS = {
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /v1/models",
    "POST /v1/admin/reload",
}
NO_INPUT_CASES = 10


@dataclass
class Tally:
    cases: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: Counter = field(default_factory=Counter)


def real_ids(api) -> dict[str, list[str]]:
    """Path parameter -> ids that exist (some of R0001's, so a rep's 200 paths run too)."""
    tables = api.state.tables
    deals = tables.deals[tables.deals["deal_id"].isin(open_deal_ids(tables, tables.as_of))]
    accounts = tables.accounts[
        tables.accounts["account_id"].isin(billed_account_ids(tables, tables.as_of))
    ]
    return {
        "deal_id": [*deals.loc[deals["rep_id"] == "R0001", "deal_id"][:5], *deals["deal_id"][:20]],
        "account_id": [
            *accounts.loc[accounts["owner_rep_id"] == "R0001", "account_id"][:5],
            *accounts["account_id"][:20],
        ],
        "rep_id": ["R0001", *tables.reps["rep_id"][:20]],
        "team": sorted(set(tables.reps["team"])),
        "quarter": [str(tables.as_of.to_period("Q"))],
    }


def strategy(operation, mode: GenerationMode, ids: dict[str, list[str]]) -> st.SearchStrategy:
    """Generated cases; for valid ones, half with the path naming a real object."""
    generated = operation.as_strategy(generation_mode=mode)
    names = [n for n in ids if "{" + n + "}" in operation.path]
    if mode != GenerationMode.POSITIVE or not names:
        return generated
    real = st.fixed_dictionaries({n: st.sampled_from(ids[n]) for n in names}).flatmap(
        lambda path: operation.as_strategy(generation_mode=mode, path_parameters=path)
    )
    return st.one_of(generated, real)


def fuzz(api, key: str, mode: GenerationMode, cases: int) -> Tally:
    """Every operation of the live schema, `cases` generated requests each (fewer if no inputs)."""
    schema = schemathesis.openapi.from_url(f"{api.base}/openapi.json")
    headers = {"X-API-Key": key}
    checks = CHECKS
    ids = real_ids(api)
    tally = Tally()

    def hammer(operation) -> None:
        label = operation.label

        @given(case=strategy(operation, mode, ids))
        @settings(
            max_examples=NO_INPUT_CASES if label in NO_INPUTS else cases,
            deadline=None,
            derandomize=True,  # the same cases on every run: a failure reproduces
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            tally.cases[label] += 1
            for name in list(case.headers or {}):  # generated credentials: ours replace them
                if name.lower() in ("authorization", "x-api-key"):
                    del case.headers[name]
            try:
                # a scenario redraws the quarter: seconds alone, a minute beside the suite
                response = case.call_and_validate(headers=headers, checks=checks, timeout=120)
                tally.statuses[(label, response.status_code)] += 1
            except (Exception, FailureGroup) as err:  # collect them all, report at the end
                tally.failures.append(f"{label}: {str(err)[:1500]}")

        began = time.perf_counter()
        try:
            run()
        except Unsatisfiable:  # nothing in it can be made invalid (negative mode)
            tally.cases[label] += 0
        tally.seconds[label] += time.perf_counter() - began

    for result in schema.get_all_operations():
        hammer(result.ok())
    return tally


def report(title: str, tally: Tally, seconds: float) -> None:
    print(f"\n{title}: {sum(tally.cases.values())} cases in {seconds:.0f} s")
    for label in sorted(tally.cases):
        seen = {s: n for (op, s), n in sorted(tally.statuses.items()) if op == label}
        took = tally.seconds[label]
        print(f"  {label}: {tally.cases[label]} cases in {took:.1f} s, statuses {seen}")
    for kind, n in Counter(" ".join(f.split())[:400] for f in tally.failures).most_common():
        print(f"  FAILED x{n}: {kind}")


@pytest.mark.parametrize(
    ("role", "rep_id", "mode", "share"),
    [
        ("admin", None, GenerationMode.POSITIVE, 1),
        ("admin", None, GenerationMode.NEGATIVE, 4),
        ("rep", "R0001", GenerationMode.POSITIVE, 4),
    ],
    ids=["admin-valid", "admin-invalid", "rep-valid"],
)
def test_no_server_errors_and_no_answer_breaks_the_schema(
    api, at_trained_home, role, rep_id, mode, share
):
    started = time.perf_counter()
    cases = CASES // share
    tally = fuzz(api, api.key(role, rep_id=rep_id), mode, cases)
    report(f"{role} {mode.value}", tally, time.perf_counter() - started)
    assert not tally.failures, "\n".join(tally.failures[:3])
    assert set(tally.cases) >= OPERATIONS, sorted(tally.cases)
    server_errors = {k: n for k, n in tally.statuses.items() if k[1] >= 500}
    assert not server_errors, server_errors
    if mode == GenerationMode.POSITIVE:
        for label, n in tally.cases.items():
            assert n >= (NO_INPUT_CASES if label in NO_INPUTS else cases) or n >= 1, label
            if label not in NO_INPUTS:
                assert n >= cases, f"{label}: only {n} cases"
