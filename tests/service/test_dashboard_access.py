"""The dashboard's sign-in and access rules over plain HTTP (no browser needed).

The pages answer exactly as the API does: a rep sees their own deals, a manager their subtree,
and anything else is 404; no session sends the browser to the sign-in form.
"""

from __future__ import annotations

import csv
import http.client
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest

from forecast.explain.scoring import open_deal_ids
from service.deps import reach_of, subtree
from service.keys import revoke_key, verify_key
from service.page_guard import form_token
from service.pages import plotly_js
from tests.service.conftest import Api, home_env, serve


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    text: str


def _request(
    api: Api,
    method: str,
    path: str,
    *,
    cookie: str | None = None,
    form: str = "",
    headers: dict[str, str] | None = None,
    token: bool = True,
):
    """One request, redirects not followed (http.client), so a 303 is seen as a 303. A POST
    carries its page's form token as the page's form would (`token=False`: none), and a
    sign-in first fetches the form (its cookie) as a browser does."""
    url = urlparse(api.base)
    sent = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    cookies = {"forecast_session": cookie} if cookie else {}
    if method == "POST" and path.startswith("/dashboard/sign-in") and not cookie:
        got = _request(api, "GET", "/dashboard/sign-in").headers["set-cookie"]
        cookies["forecast_form"] = got.split(";", 1)[0].split("=", 1)[1]
    if method == "POST" and token and cookies:
        form = f"{form}&csrf={form_token(next(iter(cookies.values())))}"
    if cookies:
        sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request(method, path, body=form.encode() if form else None, headers=sent)
    response = conn.getresponse()
    reply = Reply(response.status, response.headers, response.read().decode(errors="replace"))
    conn.close()
    return reply


def _sign_in(api: Api, key: str) -> str:
    reply = _request(api, "POST", "/dashboard/sign-in", form=f"api_key={quote(key)}")
    assert reply.status == 303, reply.text
    cookie = reply.headers["set-cookie"]
    return cookie.split(";", 1)[0].split("=", 1)[1]


@pytest.fixture(scope="module")
def dash(trained_home: Path) -> Iterator[Api]:
    from service.app import create_app

    with home_env(trained_home), serve(create_app()) as running:
        yield running


def _open_deals(api: Api) -> dict[str, str]:
    tables = api.state.store()
    open_now = set(open_deal_ids(tables, tables.as_of))
    deals = tables.deals[tables.deals["deal_id"].isin(open_now)]
    return dict(zip(deals["deal_id"], deals["rep_id"], strict=True))


def test_no_session_is_sent_to_sign_in(dash: Api) -> None:
    for path in ("/dashboard/forecast", "/dashboard/deals/D0000001", "/dashboard/models"):
        reply = _request(dash, "GET", path)
        assert reply.status == 303
        assert reply.headers["location"] == f"/dashboard/sign-in?next={quote(path)}"
    reply = _request(dash, "GET", "/dashboard/forecast", cookie="made-up-token")
    assert reply.status == 303


def test_sign_in_sets_a_strict_http_only_secure_cookie(dash: Api) -> None:
    reply = _request(
        dash,
        "POST",
        "/dashboard/sign-in",
        form=f"api_key={dash.key('admin')}&next=/dashboard/churn",
    )
    assert reply.status == 303 and reply.headers["location"] == "/dashboard/churn"
    flags = {part.strip().split("=")[0].lower() for part in reply.headers["set-cookie"].split(";")}
    assert {"httponly", "secure", "samesite", "path"} <= flags
    assert "samesite=strict" in reply.headers["set-cookie"].lower()
    # a crafted `next` cannot send a fresh sign-in to another site
    crafted = f"api_key={dash.key('admin')}&next=//elsewhere.example/x"
    assert _request(dash, "POST", "/dashboard/sign-in", form=crafted).headers["location"] == (
        "/dashboard/forecast"
    )


@pytest.mark.parametrize(
    ("key", "status", "words"),
    [
        ("fk_nope_nope", 401, "not valid"),
        ("", 401, "not valid"),
        ("crm", 403, "A crm key cannot sign in"),
    ],
)
def test_bad_or_crm_keys_cannot_sign_in(dash: Api, key: str, status: int, words: str) -> None:
    key = dash.key("crm") if key == "crm" else key
    reply = _request(dash, "POST", "/dashboard/sign-in", form=f"api_key={quote(key)}")
    assert reply.status == status
    assert words in reply.text
    assert "set-cookie" not in reply.headers


def test_sign_out_and_revocation_end_the_session(dash: Api) -> None:
    token = _sign_in(dash, dash.key("admin"))
    assert _request(dash, "GET", "/dashboard/models", cookie=token).status == 200
    assert _request(dash, "POST", "/dashboard/sign-out", cookie=token).status == 303
    assert _request(dash, "GET", "/dashboard/models", cookie=token).status == 303

    key = dash.key("admin")
    token = _sign_in(dash, key)
    revoke_key(dash.state.engine, key.split("_")[1])
    assert _request(dash, "GET", "/dashboard/models", cookie=token).status == 303


def test_pages_show_exactly_the_api_reach(dash: Api) -> None:
    """Every role against deals, coaching and forecast nodes inside and outside its reach."""
    reps = dash.state.store().reps
    owners = _open_deals(dash)
    sellers = reps[reps["role"] == "rep"]
    manager = str(sellers["manager_id"].iloc[0])
    team = subtree(reps, manager)
    rep = next(r for r in sellers["rep_id"] if r in team and r in owners.values())
    outside = next(r for r in sellers["rep_id"] if r not in team and r in owners.values())
    callers = {
        "admin": dash.key("admin"),
        "manager": dash.key("manager", manager),
        "rep": dash.key("rep", rep),
    }
    leaks = []
    for role, key in callers.items():
        token = _sign_in(dash, key)
        within = reach_of(verify_key(dash.state.engine, key), dash.state)
        for deal_id, owner in list(owners.items())[:: max(1, len(owners) // 25)]:
            expected = 200 if within is None or owner in within else 404
            got = _request(dash, "GET", f"/dashboard/deals/{deal_id}", cookie=token).status
            if got != expected:
                leaks.append((role, "deal", deal_id, got, expected))
        for person in (rep, outside):
            expected = 200 if within is None or person in within else 404
            path = f"/dashboard/coaching/reps/{person}"
            got = _request(dash, "GET", path, cookie=token).status
            if got != expected:
                leaks.append((role, "coaching", person, got, expected))
        # the CSV holds every deal the page lists, over all its pages
        listed = _request(dash, "GET", "/dashboard/pipeline.csv", cookie=token).text
        shown = {row["deal_id"] for row in csv.DictReader(io.StringIO(listed))}
        in_reach = {d for d, o in owners.items() if within is None or o in within}
        if shown != in_reach:
            leaks.append((role, "pipeline", sorted(shown ^ in_reach)[:5], 200, None))
        company = _request(
            dash, "GET", "/dashboard/forecast?level=company&node=company", cookie=token
        )
        if company.status != (200 if role == "admin" else 404):
            leaks.append((role, "forecast", "company", company.status, None))
    assert leaks == []


def test_unknown_deal_and_scenario_outside_reach_are_404(dash: Api) -> None:
    owners = _open_deals(dash)
    rep = next(iter(owners.values()))
    other = next(d for d, o in owners.items() if o != rep)
    token = _sign_in(dash, dash.key("rep", rep))
    assert _request(dash, "GET", "/dashboard/deals/NOPE", cookie=token).status == 404
    reply = _request(
        dash, "POST", "/dashboard/forecast", cookie=token, form=f"remove={other}&level=&node="
    )
    assert reply.status == 422
    assert f"no deal &#39;{other}&#39;" in reply.text  # a scenario is scoped like a deal page
    mine = next(d for d, o in owners.items() if o == rep)
    for days, words in (("soon", "is not a whole number of days"), ("", "how many days")):
        form = f"slip={mine}&slip_days={days}&level=&node="
        reply = _request(dash, "POST", "/dashboard/forecast", cookie=token, form=form)
        assert reply.status == 422 and words in reply.text


def test_plotly_is_served_by_the_app_from_the_installed_package(dash: Api) -> None:
    reply = _request(dash, "GET", "/dashboard/assets/plotly.min.js")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/javascript")
    assert len(reply.text.encode()) == plotly_js().stat().st_size
    assert _request(dash, "GET", "/dashboard/static/dashboard.css").status == 200
    assert _request(dash, "GET", "/dashboard/static/..%2Fpages.py").status == 404


def test_page_reads_are_audit_logged(dash: Api) -> None:
    import sqlalchemy as sa

    from service.predlog import audit_log

    key = dash.key("admin")
    token = _sign_in(dash, key)
    reply = _request(dash, "GET", "/dashboard/churn", cookie=token)
    assert reply.status == 200
    request_id = reply.headers["x-request-id"]
    dash.state.logs.flush()  # rows are written in batches, off the request path
    with dash.state.engine.connect() as conn:
        rows = conn.execute(sa.select(audit_log).where(audit_log.c.request_id == request_id)).all()
    assert [(r.caller, r.role, r.path, r.status) for r in rows] == [
        (key.split("_")[1], "admin", "/dashboard/churn", 200)
    ]


def test_with_nothing_trained_pages_say_what_is_missing(tmp_path: Path) -> None:
    """No data, no champion: pages answer 503 pages that say why; the API keeps its JSON."""
    from service.app import create_app

    with home_env(tmp_path / "bare"), serve(create_app()) as bare:
        admin = _sign_in(bare, bare.key("admin"))
        page = _request(bare, "GET", "/dashboard/pipeline", cookie=admin)
        assert page.status == 503 and page.headers["content-type"].startswith("text/html")
        assert "deal-win has no champion" in page.text and "forecast train win" in page.text
        models = _request(bare, "GET", "/dashboard/models", cookie=admin)
        assert models.status == 200
        assert "not serving" in models.text and "forecast train churn" in models.text
        manager = _sign_in(bare, bare.key("manager", "M01"))
        closed = _request(bare, "GET", "/dashboard/forecast", cookie=manager)
        assert closed.status == 503 and "org tree" in closed.text  # fails closed
        api = bare.get("/v1/deals/D1", key=bare.key("admin"))
        assert api.status == 503 and isinstance(api.body, dict)


def test_a_reps_coaching_page_withholds_team_figures_of_a_small_team(dash: Api) -> None:
    token = _sign_in(dash, dash.key("rep", "R0001"))
    page = _request(dash, "GET", "/dashboard/coaching/reps/R0001", cookie=token)
    assert page.status == 200 and 'id="withheld"' in page.text
    assert "team moves on" not in page.text and '"name":"team"' not in page.text.replace(" ", "")
    manager = _sign_in(dash, dash.key("manager", "M001"))
    page = _request(dash, "GET", "/dashboard/coaching/reps/R0001", cookie=manager)
    assert page.status == 200 and "team moves on" in page.text
    assert "The team figures" not in page.text


ELSEWHERE = {"Origin": "http://127.0.0.1:9"}  # another port of the same host: the same site


def test_a_post_from_another_origin_is_refused_and_changes_nothing(dash: Api) -> None:
    key = dash.key("manager", "M001")
    signing_in = _request(dash, "POST", "/dashboard/sign-in", form=f"api_key={quote(key)}",
                          headers=ELSEWHERE)  # fmt: skip
    assert signing_in.status == 403 and "set-cookie" not in signing_in.headers
    assert "sent from http://127.0.0.1:9" in signing_in.text
    token = _sign_in(dash, key)
    referred = {"Referer": "http://127.0.0.1:9/attack.html"}
    for path, form in (("/dashboard/sign-out", ""), ("/dashboard/forecast", "remove=X")):
        for headers in (ELSEWHERE, referred):
            reply = _request(dash, "POST", path, cookie=token, form=form, headers=headers)
            assert reply.status == 403, (path, headers, reply.text[:200])
    assert _request(dash, "GET", "/dashboard/forecast", cookie=token).status == 200, (
        "the cross-origin sign-out did not end the session"
    )
    own = {"Origin": dash.base}
    assert _request(dash, "POST", "/dashboard/sign-out", cookie=token, headers=own).status == 303


def test_a_post_without_its_pages_form_token_is_refused(dash: Api) -> None:
    key = dash.key("manager", "M001")
    reply = _request(dash, "POST", "/dashboard/sign-in", form=f"api_key={quote(key)}",
                     token=False)  # fmt: skip
    assert reply.status == 403 and "token does not match" in reply.text
    token = _sign_in(dash, key)
    forged = f"remove=X&csrf={form_token('a guess')}"
    for path, form in (("/dashboard/forecast", forged), ("/dashboard/sign-out", "")):
        reply = _request(dash, "POST", path, cookie=token, form=form, token=False)
        assert reply.status == 403, path
    assert _request(dash, "GET", "/dashboard/forecast", cookie=token).status == 200


def test_every_page_carries_the_security_headers_and_private_ones_are_not_stored(
    dash: Api,
) -> None:
    token = _sign_in(dash, dash.key("admin"))
    for path in ("/dashboard/sign-in", "/dashboard/forecast", "/dashboard/pipeline",
                 "/dashboard/deals/NOPE", "/dashboard/static/dashboard.js"):  # fmt: skip
        headers = _request(dash, "GET", path, cookie=token).headers
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, path
        assert headers["x-content-type-options"] == "nosniff", path
        stored = headers.get("cache-control") != "no-store"
        assert stored is path.startswith("/dashboard/static/"), path


def test_a_node_that_does_not_exist_is_404_for_an_admin_too(dash: Api) -> None:
    token = _sign_in(dash, dash.key("admin"))
    for query in ("level=rep&node=R9999", "level=team&node=Nowhere", "level=galaxy&node=x"):
        page = _request(dash, "GET", f"/dashboard/forecast?{query}", cookie=token)
        assert page.status == 404, query
    assert (
        _request(dash, "GET", "/dashboard/forecast?level=rep&node=R0001", cookie=token).status
        == 200
    )


def test_a_champion_forced_over_the_gate_is_said_on_every_page(trained_home, tmp_path):
    """A version promoted by hand with --force although it ranks no better than a coin: the
    pages showing its scores say so, naming what it failed."""
    import json
    import shutil

    from forecast.training import registry
    from service.app import create_app

    home = tmp_path / "forced"
    shutil.copytree(trained_home, home, symlinks=True)
    coin = "AUC 0.4991 is not clearly above a coin (model minus base_rate: ...)"
    with home_env(home):
        c = registry.client()
        version = registry.champion_version("deal-win")
        tags = c.get_model_version("deal-win", version).tags
        evaluation = {**json.loads(tags["evaluation"]), "rule_failures": [coin]}
        c.set_model_version_tag("deal-win", version, "evaluation", json.dumps(evaluation))
        assert registry.served_below_bar("deal-win", version) == []  # the gate promoted it
        registry.promote("deal-win", version, force=True)
        assert registry.served_below_bar("deal-win", version) == [coin]
        with serve(create_app()) as api:
            cookie = _sign_in(api, api.key("admin"))
            for page in ("pipeline", "forecast", "models"):
                shown = _request(api, "GET", f"/dashboard/{page}", cookie=cookie)
                assert shown.status == 200, shown.text
                assert f"deal-win model in service (v{version}) was promoted by hand" in shown.text
                assert "not clearly above a coin" in shown.text
            # the CRM, which sees no page, is told in every answer, and /v1/models says so
            record = {"deal_id": "CRM-1", "stage": "proposal", "created_at": "2026-10-01T00:00:00Z"}
            scored = api.post("/v1/deals:score", {"as_of": "2026-11-15T00:00:00Z",
                                                  "deals": [record]}, api.key("crm"))  # fmt: skip
            assert scored.status == 200, scored.body
            forced = [w for w in scored.body["warnings"] if "promoted by hand" in w]
            assert forced and "not clearly above a coin" in forced[0]
            listed = {m["name"]: m for m in api.get("/v1/models", api.key("crm")).body["models"]}
            assert "promoted by hand over the gate" in listed["deal-win"]["detail"]
        # and the data scientist's commands, in the same words
        from typer.testing import CliRunner

        from forecast.cli import app

        deal_id = sorted(api.state.deal_scores(api.state.champion("deal-win")))[0]
        book = str(tmp_path / "book.parquet")
        score = ["score", "deals", "--all", "--no-log", "--out", book]
        commands = (["explain", "deal", deal_id], score)
        for command in (*commands, ["revenue", "--draws", "200"]):
            shown = CliRunner().invoke(app, command)
            assert shown.exit_code == 0, shown.output
            said = " ".join(shown.output.split())
            assert f"deal-win model in service (v{version}) was promoted by hand" in said, command
        as_json = json.loads(CliRunner().invoke(app, ["explain", "deal", deal_id, "--json"]).stdout)
        assert "not clearly above a coin" in as_json["warnings"][0]


def test_without_targets_the_forecast_page_shows_the_p50_and_no_target_line(trained_home, tmp_path):
    """An export without quotas: no "P(reach target) -", no target in the chart's legend."""
    import shutil

    import pandas as pd

    from forecast.data.store import read_store, write_store
    from service.app import create_app

    home = tmp_path / "no-targets"
    shutil.copytree(trained_home, home, symlinks=True)
    with home_env(home):
        tables = read_store()
        write_store(
            tables.replace(targets=tables.targets.iloc[:0]),
            source="no quotas",
            imported_at=pd.Timestamp("2026-11-16"),
        )
        with serve(create_app()) as api:
            cookie = _sign_in(api, api.key("admin"))
            page = _request(api, "GET", "/dashboard/forecast", cookie=cookie)
    assert page.status == 200, page.text
    assert "P50 (no target set)" in page.text and "P(reach target)" not in page.text
    assert "Fan chart</h2>" in page.text and '"name": "target"' not in page.text
    assert '"name":"target"' not in page.text


def test_a_deal_page_names_its_account(dash: Api) -> None:
    tables = dash.state.store()
    deals = tables.deals[tables.deals["account_id"].notna()]
    deal = deals.iloc[0]
    name = tables.accounts.set_index("account_id").loc[deal["account_id"], "name"]
    token = _sign_in(dash, dash.key("admin"))
    page = _request(dash, "GET", f"/dashboard/deals/{deal['deal_id']}", cookie=token)
    assert page.status == 200
    assert f"account {name}" in page.text and f"account {deal['account_id']}" not in page.text
