"""The dashboard in a real Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Every page renders real data from a small generated world with trained champions; a drill-down
click and the scenario panel change what is shown, by the same figures the library computes; a
rep cannot open another rep's deal; no request leaves 127.0.0.1; nothing overflows a 390 px
phone screen. Screenshots of each page go to $FORECAST_SCREENSHOTS (default: screenshots/).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

from forecast.explain.scoring import open_deal_ids
from forecast.revenue import Scenario
from service.listing import PAGE_SIZE
from tests.conftest import skip_or_fail
from tests.service.conftest import Api, home_env, serve

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGES = ("forecast", "pipeline", "churn", "coaching", "models")
SHOTS = Path(os.environ.get("FORECAST_SCREENSHOTS", Path(__file__).parents[2] / "screenshots"))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        skip_or_fail(
            "browser tests need Debian's Chromium at /usr/bin/chromium: "
            "`apt-get install chromium` enables them"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("browser tests need the playwright package: `make venv` installs it")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Site:
    api: Api
    keys: dict[str, str]  # admin, manager, rep, other_rep
    people: dict[str, str]  # manager, rep, other_rep -> rep id

    def deals_of(self, rep_id: str) -> list[str]:
        tables = self.api.state.store()
        open_now = set(open_deal_ids(tables, tables.as_of))
        owned = tables.deals.loc[tables.deals["rep_id"] == rep_id, "deal_id"]
        return [d for d in owned if d in open_now]


@pytest.fixture(scope="module")
def site(trained_home: Path) -> Iterator[Site]:
    from service.app import create_app

    with home_env(trained_home), serve(create_app()) as api:
        reps = api.state.store().reps
        sellers = reps[reps["role"] == "rep"]
        manager = str(sellers["manager_id"].iloc[0])
        mine = sellers.loc[sellers["manager_id"] == manager, "rep_id"].tolist()
        others = sellers.loc[sellers["manager_id"] != manager, "rep_id"].tolist()
        people = {"manager": manager, "rep": mine[0], "other_rep": others[0]}
        keys = {
            "admin": api.key("admin"),
            "manager": api.key("manager", manager),
            "rep": api.key("rep", people["rep"]),
            "other_rep": api.key("rep", people["other_rep"]),
        }
        yield Site(api, keys, people)


@dataclass
class Visit:
    """A signed-in browser context that records every request its pages make."""

    page: object
    base: str
    requests: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # what the page's CSP blocked

    def go(self, path: str):
        response = self.page.goto(self.base + path)
        self.page.wait_for_load_state("load")
        for chart in self.page.locator(".chart").all():  # drawn by the served plotly.min.js
            chart.locator("xpath=self::*[@data-drawn='true']").wait_for(timeout=15_000)
        shown = self.page.inner_text("main")
        assert not re.search(r"\bnan\b|\binf\b|None", shown), f"{path} shows a raw value"
        assert not self.refused, f"{path}: the page's own CSP blocked {self.refused}"
        return response

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def outside(self) -> list[str]:
        return [u for u in self.requests if urlparse(u).hostname != "127.0.0.1"]


@pytest.fixture
def signed_in(browser, site: Site):
    contexts = []

    def open_as(who: str, width: int = 1366, height: int = 900) -> Visit:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        visit = Visit(page, site.api.base)
        page.on("request", lambda request: visit.requests.append(request.url))
        page.on(
            "console",
            lambda message: (
                "Content Security Policy" in message.text and visit.refused.append(message.text)
            ),
        )
        visit.go("/dashboard/pipeline")  # not signed in: sent to the sign-in form
        assert urlparse(page.url).path == "/dashboard/sign-in"
        page.fill("#api_key", site.keys[who])
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/dashboard/pipeline$"))
        return visit

    yield open_as
    for context in contexts:
        context.close()


def _money(text: str) -> float:
    return float(text.replace(",", "").strip())


def _quarters(site: Site) -> list[str]:
    quarter = site.api.state.store().as_of.to_period("Q")
    return [str(quarter), str(quarter + 1)]


def test_every_page_renders_real_data(signed_in, site: Site) -> None:
    visit = signed_in("admin")
    page = visit.page
    [cookie] = [c for c in page.context.cookies() if c["name"] == "forecast_session"]
    # the browser kept the Secure cookie on http://127.0.0.1 and sends it: pages load
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")

    state = site.api.state
    company = state.quarter_forecast(_quarters(site)[0]).level("company").iloc[0]
    visit.go("/dashboard/forecast")
    assert page.inner_text("#node-name") == "company"
    assert _money(page.inner_text("[data-testid=p50-0]")) == pytest.approx(company["p50"], abs=1)
    shown_reach = page.inner_text("[data-testid=p-reach-0]")
    assert shown_reach == f"{company['p_reach_target']:.0%}"
    assert page.locator("#fan .main-svg").count() > 0  # Plotly drew the fan chart
    assert page.locator("#drivers tr").count() > 1  # deals carrying the uncertainty
    shown_risk = _money(page.inner_text("[data-testid=at-risk]"))
    assert shown_risk == pytest.approx(company["revenue_at_risk"], abs=1)
    visit.shot("forecast")

    visit.go("/dashboard/pipeline")
    tables = state.store()
    open_now = set(open_deal_ids(tables, tables.as_of))
    shown = page.locator("#deals article").evaluate_all("els => els.map(e => e.dataset.deal)")
    assert len(shown) == min(PAGE_SIZE, len(open_now))
    visit.shot("pipeline")
    # page through every deal: each page in order of revenue at stake, all open deals once
    seen, stakes = [], []
    while True:
        seen += page.locator("#deals article").evaluate_all("els => els.map(e => e.dataset.deal)")
        stakes += [
            _money(s) for s in page.locator("#deals article .muted strong").all_inner_texts()
        ]
        following = page.locator("nav.pager a[rel=next]").first
        if not following.count():
            break
        following.click()
        page.wait_for_load_state("load")
    assert sorted(seen) == sorted(open_now) and len(seen) == len(set(seen))
    assert stakes == sorted(stakes, reverse=True)  # revenue at stake, largest first
    # both signs of reasons, marked: a deal's risks are seen, not only what helps it
    visit.go("/dashboard/pipeline")
    signs = page.locator("#deals ul.reasons li").evaluate_all("els => els.map(e => e.className)")
    assert {"raises", "lowers"} <= set(signs)
    # the CSV download holds what the page lists, every page of it
    with page.expect_download() as download:
        page.click("nav.pager a.csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert sorted(r["deal_id"] for r in rows) == sorted(open_now)
    assert [float(r["revenue_at_stake"]) for r in rows] == sorted(
        (float(r["revenue_at_stake"]) for r in rows), reverse=True
    )
    names = dict(zip(tables.products["product_id"], tables.products["name"], strict=True))
    assert set(r["product"] for r in rows) <= set(names.values()) | {""}
    # sort by any column: the win probability, smallest first
    page.select_option(".sort select[name=sort]", "probability")
    page.select_option(".sort select[name=order]", "asc")
    page.click(".sort button")
    page.wait_for_url(re.compile(r".*sort=probability.*"))
    chances = [float(t.rstrip("%")) for t in page.locator("#deals header > span:nth-of-type(2)")
               .all_inner_texts()]  # fmt: skip
    assert chances == sorted(chances)

    page.select_option("select[name=grade]", "A")
    page.click(".filters button")
    page.wait_for_url(re.compile(r".*grade=A.*"))
    grades = page.locator("#deals .grade").all_inner_texts()
    assert grades and set(grades) == {"A"}

    deal_id = shown[0]
    visit.go(f"/dashboard/deals/{deal_id}")
    assert page.inner_text("h1") == f"Deal {deal_id}"
    assert page.locator("#probability").inner_text().endswith("%")
    visit.shot("deal")

    visit.go("/dashboard/churn")
    assert 0 < page.locator("#accounts article").count() <= PAGE_SIZE
    assert page.locator("#accounts article ul.reasons li").count() > 0
    for level in ("region", "team", "rep"):
        assert page.locator(f"table.at-risk[data-level={level}] tbody tr").count() > 0
    visit.shot("churn")
    with page.expect_download() as download:
        page.click("nav.pager a.csv")
    accounts = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    billed = state.account_scores(state.champion("account-churn"))
    assert sorted(a["account_id"] for a in accounts) == sorted(billed)

    visit.go("/dashboard/coaching")
    assert page.locator("#team-reps tr").count() > 1
    visit.shot("coaching-team")
    page.click("#team-reps a >> nth=0")
    page.wait_for_url(re.compile(r".*/dashboard/coaching/reps/.+"))
    page.locator("#funnel[data-drawn=true]").wait_for()
    assert page.locator("#funnel .main-svg").count() > 0
    visit.shot("coaching-rep")

    visit.go("/dashboard/models")
    for name, serving in state.models.items():
        card = page.locator(f"section[data-model='{name}']")
        assert f"v{serving.version} serving" in card.inner_text()
        assert card.locator("table.metrics tr").count() >= 3  # the model and its baselines
        width = card.locator("img.reliability").evaluate("img => img.naturalWidth")
        assert width > 0  # the run's reliability diagram, served by the app
    assert "No outcomes yet" in page.inner_text("#live-deal-win")
    visit.shot("models")
    assert visit.outside() == []


def test_drill_down_click_updates_the_view(signed_in, site: Site) -> None:
    visit = signed_in("admin")
    page = visit.page
    visit.go("/dashboard/forecast")
    first = page.locator("#children a.drill").first
    region = first.inner_text()
    first.click()
    page.wait_for_url(re.compile(r".*level=region.*"))
    page.locator("#fan[data-drawn=true]").wait_for()
    assert page.inner_text("#node-name") == region
    nodes = site.api.state.quarter_forecast(_quarters(site)[0]).level("region")
    expected = nodes.loc[nodes["node"] == region, "p50"].iloc[0]
    assert _money(page.inner_text("[data-testid=p50-0]")) == pytest.approx(expected, abs=1)
    assert page.locator(".crumbs a", has_text="company").count() == 1
    page.click("#children a.drill >> nth=0")  # region -> team
    page.wait_for_url(re.compile(r".*level=team.*"))
    visit.shot("forecast-team")
    page.click(".crumbs a >> text=company")  # back up by the breadcrumbs
    page.wait_for_url(re.compile(r".*level=company.*"))
    assert page.inner_text("#node-name") == "company"
    assert visit.outside() == []


def test_scenario_panel_changes_the_forecast(signed_in, site: Site) -> None:
    visit = signed_in("admin")
    page = visit.page
    visit.go("/dashboard/forecast")
    before = _money(page.inner_text("[data-testid=p50-0]"))
    top = page.locator("#drivers a").first.inner_text()
    page.fill("#remove", top)
    page.click("#scenario button[type=submit]")
    page.wait_for_load_state("load")
    page.locator("#fan[data-drawn=true]").wait_for()
    after = _money(page.inner_text("[data-testid=p50-0]"))
    quarter = _quarters(site)[0]
    scenario = Scenario(name="what if", remove=(top,))
    company = site.api.state.quarter_forecast(quarter, scenario).level("company").iloc[0]
    assert after == pytest.approx(company["p50"], abs=1)
    assert after < before  # the deal carrying the most uncertainty is gone
    assert "before the scenario" in page.inner_text(".tiles")
    visit.shot("forecast-scenario")

    page.fill("#remove", "")
    page.fill("#slip", top)
    page.fill("#slip_days", "120")
    page.click("#scenario button[type=submit]")
    page.wait_for_load_state("load")
    slipped = site.api.state.quarter_forecast(
        quarter, Scenario(name="what if", slip_days={top: 120})
    )
    expected = slipped.level("company").iloc[0]["p50"]
    assert _money(page.inner_text("[data-testid=p50-0]")) == pytest.approx(expected, abs=1)
    assert visit.outside() == []


def test_a_rep_cannot_open_another_reps_deal(signed_in, site: Site) -> None:
    visit = signed_in("rep")
    page = visit.page
    own, theirs = site.deals_of(site.people["rep"]), site.deals_of(site.people["other_rep"])
    assert own and theirs, "the world should give both reps open deals"
    response = visit.go(f"/dashboard/deals/{own[0]}")
    assert response.status == 200
    response = visit.go(f"/dashboard/deals/{theirs[0]}")
    assert response.status == 404
    assert f"no deal '{theirs[0]}'" in page.inner_text(".error")
    visit.shot("deal-out-of-reach")
    visit.go("/dashboard/pipeline")
    shown = page.locator("#deals article").evaluate_all("els => els.map(e => e.dataset.deal)")
    assert set(shown) == set(own)  # only their own deals
    visit.go("/dashboard/forecast")
    assert page.inner_text("#node-name") != "company"  # their own node, nothing wider
    assert visit.outside() == []


def test_phone_width_has_no_horizontal_overflow(signed_in, site: Site) -> None:
    visit = signed_in("manager", width=390, height=844)
    page = visit.page
    for name in PAGES:
        visit.go(f"/dashboard/{name}")
        assert page.url.endswith(name) or name == "coaching"
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name}: {overflow} px wider than a 390 px screen"
        visit.shot(f"phone-{name}")
    assert visit.outside() == []
    assert len(visit.requests) > len(PAGES)  # pages, styles, scripts: all recorded
