"""`forecast notify`: digests for every node delivered to a real receiver on 127.0.0.1 (checked
against Slack's and Teams' schemas and limits), within each person's reach; retries on 429 and
5xx; each message sent once, a crash between recording and sending retried once, never twice."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.cli import app
from service.notify import outbox
from service.notify.book import nodes_of
from service.notify.deliver import post
from service.notify.outbox import send_key
from service.notify.run import open_state, run
from tests.pipelines.test_docs_commands import printed_commands
from tests.service.conftest import home_env
from tests.service.notify_receiver import DEAL_ID, receiver, violations

runner = CliRunner()


@pytest.fixture(scope="module")
def home(trained_home: Path, tmp_path_factory) -> Iterator[Path]:
    """A copy of the trained home (a test promotes a champion), its settings in force."""
    copy = tmp_path_factory.mktemp("notify") / "home"
    shutil.copytree(trained_home, copy, symlinks=True)
    with home_env(copy):
        yield copy


@pytest.fixture(autouse=True)
def at_home(home: Path, forecast_home: Path, monkeypatch) -> Path:
    """Each test's settings at the module's home (after the per-test home is set)."""
    from forecast.settings import get_settings

    monkeypatch.setenv("FORECAST_HOME", str(home))
    get_settings.cache_clear()
    return home


@pytest.fixture(scope="module")
def state(home):
    """The service's state as `forecast notify send` opens it (one for the module: the
    forecasts and scores it prepares are kept between runs)."""
    from forecast.settings import get_settings

    return open_state(get_settings())


def _forecast(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def _fast_post(url: str, payload: dict):
    return post(url, payload, tries=4, max_wait=1.5)


def test_every_node_gets_its_digest_within_its_reach_and_the_channels_limits(state):
    nodes = nodes_of(state.reps())
    with receiver() as got:
        for node in nodes:
            for channel in ("slack", "teams"):
                added = _forecast(
                    "notify", "add", "--node", node.name, "--level", node.level,
                    f"--{channel}", got.url(channel, f"{node.level}-{node.name}"),
                )  # fmt: skip
                assert added.exit_code == 0, added.output
        sent = _forecast("notify", "send", "--digest", "weekly", "--json")
        assert sent.exit_code == 0, sent.output
        again = _forecast("notify", "send", "--digest", "weekly", "--json")
    owners = state.store().deals.set_index("deal_id")["rep_id"]
    results = Counter(row["result"] for row in json.loads(sent.stdout))
    assert results == {"sent": 2 * len(nodes)}
    assert Counter(r["result"] for r in json.loads(again.stdout)) == {
        "already sent": 2 * len(nodes)
    }
    assert got.refused == []  # 0 payloads against the schemas or over the limits
    assert len(got.requests) == 2 * len(nodes)  # the second run sent nothing
    for node in nodes:
        for channel in ("slack", "teams"):
            payloads = got.received[got.path(channel, f"{node.level}-{node.name}")]
            assert len(payloads) == 1, (node, channel)
            assert violations(state, node, payloads[0]) == [], node
            if node.level == "rep":  # a rep's digest names their own deals only
                named = set(DEAL_ID.findall(json.dumps(payloads[0])))
                assert {owners[d] for d in named} <= {node.name}


def test_a_429_then_a_500_are_tried_again_and_the_digest_arrives_once(state):
    with receiver() as got:
        target = outbox.add_target(state.engine, "team", "NA 1", "slack", got.url("slack", "busy"))
        got.script["/slack/busy"] = [429, 500]
        outcomes = list(run(state, "digest", _fast_post, only="NA 1"))
        assert [(o.target.id, o.result) for o in outcomes if o.target.id == target.id] == [
            (target.id, "sent")
        ]
        assert got.requests.count("/slack/busy") == 3
        assert len(got.received["/slack/busy"]) == 1
        again = [o for o in run(state, "digest", _fast_post, only="NA 1") if o.target == target]
        assert [o.result for o in again] == ["already sent"]
        assert got.requests.count("/slack/busy") == 3


def test_a_refused_message_fails_is_recorded_and_goes_next_run(state):
    with receiver() as got:
        target = outbox.add_target(
            state.engine, "team", "EMEA 1", "teams", got.url("teams", "gone")
        )
        got.script["/teams/gone"] = [404]
        first = [o for o in run(state, "digest", _fast_post, only="EMEA 1") if o.target == target]
        assert [o.result for o in first] == ["failed"] and "HTTP 404" in first[0].detail
        assert got.requests.count("/teams/gone") == 1  # a 404 is final: not tried again
        second = [o for o in run(state, "digest", _fast_post, only="EMEA 1") if o.target == target]
        assert [o.result for o in second] == ["sent"]
        assert len(got.received["/teams/gone"]) == 1


def test_a_crash_after_recording_is_sent_once_and_one_while_sending_never_again(state):
    book_message = next(iter(_messages(state, "APAC 1")))
    with receiver() as got:
        recorded = outbox.add_target(state.engine, "team", "APAC 1", "slack", got.url("slack", "a"))
        sending = outbox.add_target(state.engine, "team", "APAC 1", "slack", got.url("slack", "b"))
        for target in (recorded, sending):  # what a run that stopped left
            key = send_key(book_message.key, target)
            outbox.record(state.engine, key, target, "digest", {"text": "recorded before a crash"})
        assert outbox.claim(state.engine, send_key(book_message.key, sending))  # then it stopped
        outcomes = list(run(state, "digest", _fast_post, only="APAC 1"))
        mine = Counter((o.target.id, o.result) for o in outcomes if o.target in (recorded, sending))
        # the recorded one goes first, as recorded; this run's own digest finds it sent
        expected = {(recorded.id, "sent"): 1, (recorded.id, "already sent"): 1}
        assert mine == expected | {(sending.id, "unknown"): 1}, mine
        assert got.received["/slack/a"] == [{"text": "recorded before a crash"}]  # as recorded
        assert got.received["/slack/b"] == []  # it may have arrived before the crash
        list(run(state, "digest", _fast_post, only="APAC 1"))
        assert len(got.received["/slack/a"]) == 1 and got.received["/slack/b"] == []


def _messages(state, team: str):
    from service.notify.book import read_book
    from service.notify.digest import digest

    book = read_book(state)
    node = next(n for n in nodes_of(book.reps) if n.name == team)
    return [digest(book, node, min_others=state.settings.coaching_min_others)]


def test_no_output_shows_a_webhooks_secret_and_a_dry_run_sends_nothing(state, monkeypatch):
    from forecast.settings import get_settings

    secret = "T0SECRET/B0SECRET/xoxoSECRETtoken"
    with receiver() as got:
        url = got.url("slack", secret)
        added = _forecast("notify", "add", "--node", "LATAM 1", "--slack", url)
        listed = _forecast("notify", "list")
        dry = _forecast("notify", "send", "--digest", "weekly", "--node", "LATAM 1", "--dry-run")
        assert got.requests == []
    mine = next(t for t in outbox.targets(state.engine) if t.url == url)
    assert not any(r["key"].endswith(f"|target:{mine.id}") for r in outbox.sends(state.engine))
    monkeypatch.setenv("FORECAST_NOTIFY_TRIES", "2")
    get_settings.cache_clear()
    refused = _forecast("notify", "send", "--digest", "weekly", "--node", "LATAM 1")  # gone
    status = _forecast("notify", "status")
    for result in (added, listed, dry, refused, status):
        assert "SECRET" not in result.output, result.output
    assert added.exit_code == 0 and "127.0.0.1" in listed.output
    assert dry.exit_code == 0 and "would send to team LATAM 1" in dry.output
    assert "Weekly forecast · team LATAM 1" in dry.output
    assert refused.exit_code == 1 and "failed: LATAM 1 slack" in refused.output
    assert "no answer: ConnectionRefusedError, 2 tries" in refused.output


def test_bad_channels_are_refused_with_the_reason(state):
    wrong_node = _forecast("notify", "add", "--node", "EMEA1", "--slack", "https://hooks.example/x")
    assert wrong_node.exit_code == 2 and "did you mean EMEA 1" in wrong_node.output
    plain_http = _forecast("notify", "add", "--node", "EMEA 1", "--teams", "http://example.com/x")
    assert plain_http.exit_code == 2 and "https://" in plain_http.output
    both = _forecast("notify", "send", "--digest", "weekly", "--alerts")
    assert both.exit_code == 2 and "--digest weekly or --alerts" in both.output
    nobody = _forecast("notify", "send", "--alerts", "--node", "nobody")
    assert nobody.exit_code == 0 and "nothing to send: no channel for that node" in nobody.output


def test_alerts_fire_exactly_where_the_book_crossed_a_threshold(state):
    """Over the whole book: an alert for every big deal that dropped past the line and every
    key account whose churn risk jumped past it, none for anything else, none that rose."""
    from service.notify.alerts import alerts
    from service.notify.book import read_book

    book = read_book(state)
    amounts = book.deals.set_index("deal_id")["amount"]
    # lines in the middle of what this book holds: both sides of each rule are exercised
    drops = sorted(-s.trend_points for s in book.scores.values() if (s.trend_points or 0) < 0)
    rises = sorted(
        s.churn_probability - book.churn_week_ago[s.account_id]
        for s in book.churn
        if s.account_id in book.churn_week_ago
        and s.churn_probability > book.churn_week_ago[s.account_id]
    )
    big, key_arr = float(amounts.median()), float(pd.Series([s.arr for s in book.churn]).median())
    drop_line, jump_line = drops[len(drops) // 2], rises[len(rises) // 2]
    settings = state.settings.model_copy(
        update={
            "notify_big_deal_amount": big,
            "notify_deal_drop_points": drop_line,
            "notify_key_account_arr": key_arr,
            "notify_churn_jump_points": 100 * jump_line,
        }
    )
    company = nodes_of(book.reps)[0]
    found = alerts(book, company, settings)
    dropped = {
        d
        for d, s in book.scores.items()
        if s.trend_points is not None and s.trend_points < -drop_line and amounts[d] >= big
    }
    jumped = {
        s.account_id
        for s in book.churn
        if s.arr >= key_arr
        and s.account_id in book.churn_week_ago
        and s.churn_probability - book.churn_week_ago[s.account_id] > jump_line + 1e-12
    }
    assert dropped and jumped  # the small world has both: the rule is exercised
    said: dict[str, set[str]] = {}
    for m in found:
        said.setdefault(m.key.split(":")[1], set()).add(m.key.split(":")[2])
    assert said.get("deal-drop", set()) == dropped
    assert said.get("churn-jump", set()) == jumped
    for m in found:
        if m.key.startswith("alert:deal-drop:"):
            score = book.scores[m.key.split(":")[2]]
            assert score.probability < score.previous_probability  # a drop, said as one
            assert f"{score.previous_probability:.0%} → {score.probability:.0%}" in m.summary
            assert m.link.endswith(f"/dashboard/deals/{score.deal_id}")
    rep = next(
        n for n in nodes_of(book.reps) if n.level == "rep" and n.name in book.reps["rep_id"].values
    )
    owners = book.deals.set_index("deal_id")["rep_id"]
    for m in alerts(book, rep, settings):  # a rep's alerts: their own deals only
        if m.key.startswith("alert:deal-drop:"):
            assert owners[m.key.split(":")[2]] == rep.name


def test_a_node_falling_below_the_target_line_is_alerted_and_no_other(state):
    """Over every node, with the week as it was and turned around (every rise a fall): an
    alert exactly where the chance to reach target crossed the line downwards."""
    from dataclasses import replace

    from service.notify.alerts import alerts
    from service.notify.book import read_book

    book = read_book(state)
    nodes = nodes_of(book.reps)
    alerted = 0
    for seen in (book, replace(book, now=book.week_ago, week_ago=book.now)):
        now = seen.now.nodes.set_index(["level", "node"])["p_reach_target"]
        then = seen.week_ago.nodes.set_index(["level", "node"])["p_reach_target"]
        pairs = {
            (n.level, n.name): (then[k], now[k])
            for n in nodes
            if (k := (n.level, n.name)) in now.index and k in then.index
        }
        falls = [(b, a) for b, a in pairs.values() if b - a > 0.02]
        line = (falls[0][0] + falls[0][1]) / 2 if falls else 0.5
        settings = state.settings.model_copy(update={"notify_reach_target_below": line})
        for node in nodes:
            before, after = pairs.get((node.level, node.name), (None, None))
            crossed = before is not None and after < line <= before
            said = [m for m in alerts(seen, node, settings) if ":reach-target:" in m.key]
            assert len(said) == int(crossed), (node, before, after, line)
            if said:
                assert f"fell from {before:.0%} to {after:.0%}" in said[0].summary
                alerted += 1
    assert alerted  # the turned-around week has falls: the rule is exercised


def test_a_new_champion_and_a_refused_one_are_told_to_the_company_channel(
    home, tmp_path, monkeypatch
):
    from forecast.settings import get_settings
    from forecast.training.registry import client

    monkeypatch.setenv("FORECAST_DATABASE_URL", f"sqlite:///{tmp_path / 'service.db'}")
    get_settings.cache_clear()  # a database of its own: only this test's channel
    registry = client()
    with receiver() as got:
        added = _forecast("notify", "add", "--node", "company", "--slack", got.url("slack", "ops"))
        assert added.exit_code == 0
        first = _forecast("notify", "send", "--alerts", "--json")  # remembers what serves
        assert first.exit_code == 0, first.output
        champion = registry.get_model_version_by_alias("deal-win", "champion")
        again = registry.create_model_version("deal-win", champion.source, champion.run_id)
        registry.set_registered_model_alias("deal-win", "champion", again.version)
        try:
            second = _forecast("notify", "send", "--alerts", "--json")
            churn = registry.get_model_version_by_alias("account-churn", "champion")
            wrong = registry.create_model_version("deal-win", churn.source, churn.run_id)
            registry.set_registered_model_alias("deal-win", "champion", wrong.version)
            third = _forecast("notify", "send", "--alerts", "--json")
        finally:
            registry.set_registered_model_alias("deal-win", "champion", champion.version)
    titles = [p["blocks"][0]["text"]["text"] for p in got.received[got.path("slack", "ops")]]
    assert f"deal-win: version {again.version} is the champion" in titles
    assert "deal-win: a new champion was refused" in titles
    assert titles.count(f"deal-win: version {again.version} is the champion") == 1
    assert second.exit_code == 0 and third.exit_code == 0, third.output


DOCS = ("README.md", "docs/deploy.md")
# these call the webhooks printed (Slack's and Microsoft's hosts): nothing here leaves 127.0.0.1
REACH_OUT = {"forecast notify send --alerts"}


def printed_notify_commands(doc: str) -> list[str]:
    return printed_commands(doc, re.compile(r"^forecast notify \S.*$"))


@pytest.mark.parametrize("doc", DOCS)
def test_the_notify_commands_the_docs_print_run_as_printed(doc, tmp_path, monkeypatch):
    from forecast.settings import get_settings

    monkeypatch.setenv("FORECAST_DATABASE_URL", f"sqlite:///{tmp_path / 'service.db'}")
    monkeypatch.chdir(tmp_path)  # a preview folder lands here, not in the repository
    get_settings.cache_clear()
    commands = printed_notify_commands(doc)
    assert commands, f"{doc} prints no forecast notify command"
    ran = 0
    for command in commands:
        if command in REACH_OUT:
            continue
        result = _forecast(*shlex.split(command)[1:])
        assert result.exit_code == 0, f"{doc}: {command}\n{result.output}"
        ran += 1
    assert ran >= 2
    if "--preview previews/" in " ".join(commands):
        assert list((tmp_path / "previews").glob("digest-*.html"))


def test_the_commands_left_out_are_still_printed():
    assert {c for doc in DOCS for c in printed_notify_commands(doc)} >= REACH_OUT
