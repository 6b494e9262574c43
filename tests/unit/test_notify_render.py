"""Digests and alerts as Slack, Teams and plain text: within each channel's limits whatever the
size of the book (lines left out are counted, never cut mid-word); webhook retries as the
receivers ask (Retry-After, doubling pauses, final answers not repeated)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from service.notify.deliver import post, retry_after
from service.notify.message import Line, Message, Section, money, points
from service.notify.render import plain_text, slack_payload, teams_payload


def _message(lines: int, width: int = 80, facts: int = 4) -> Message:
    words = ("word " * (width // 5)).strip()
    section = Section(
        "A long section",
        facts=tuple((f"Figure {i}", f"{i:,}") for i in range(facts)),
        lines=tuple(Line(f"line {i}: {words}", f"http://127.0.0.1/d/{i}") for i in range(lines)),
        more=3,
    )
    return Message(
        key="digest:test",
        kind="digest",
        level="team",
        node="EMEA 1 <&>",
        title="Weekly forecast · " + "x" * 300,
        summary="A summary with <angle> & ampersand.",
        sections=(section,) * 30,
        link="http://127.0.0.1:8000/dashboard/forecast",
    )


@pytest.mark.parametrize("lines", [0, 1, 40, 400])
def test_slack_stays_within_block_kit_limits_and_counts_what_it_leaves_out(lines):
    payload = slack_payload(_message(lines, facts=14))
    blocks = payload["blocks"]
    assert len(blocks) <= 50 and blocks[-1]["type"] == "actions"
    assert len(blocks[0]["text"]["text"]) <= 150 and blocks[0]["text"]["text"].endswith("…")
    for block in blocks:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
            assert len(block.get("fields", [])) <= 10
    texts = [
        b["text"]["text"] for b in blocks if b["type"] == "section" and "more" in b["text"]["text"]
    ]
    if lines:
        assert texts and all(t.rstrip().split("\n")[-1].startswith("… and ") for t in texts)
    assert "&lt;angle&gt; &amp; ampersand" in blocks[1]["text"]["text"]  # mrkdwn escaped


def test_a_left_out_count_adds_the_lines_that_did_not_fit():
    payload = slack_payload(_message(400, width=95))
    text = next(
        b["text"]["text"] for b in payload["blocks"] if "line 0:" in b["text"].get("text", "")
    )
    shown = text.count("• <")
    said = int(text.rsplit("… and ", 1)[1].split()[0])
    assert shown + said == 400 + 3  # the lines shown, and those left out here and before


@pytest.mark.parametrize("lines", [0, 40, 400])
def test_teams_is_an_adaptive_card_message_within_28_kb(lines):
    payload = teams_payload(_message(lines))
    assert len(json.dumps(payload, ensure_ascii=False).encode()) <= 28_000
    card = payload["attachments"][0]["content"]
    assert payload["type"] == "message" and card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4" and card["actions"][0]["type"] == "Action.OpenUrl"
    assert card["body"][0]["text"].startswith("Weekly forecast")
    if lines == 400:  # cut: and said to be
        assert card["body"][-1]["text"] == "… the rest is in the dashboard"


def test_plain_text_writes_every_line_and_link():
    text = plain_text(_message(2))
    assert "- line 1: word" in text and "(http://127.0.0.1/d/1)" in text
    assert text.rstrip().endswith("Open in the dashboard: http://127.0.0.1:8000/dashboard/forecast")


def test_figures_read_as_a_manager_reads_them():
    assert [money(v) for v in (1_250_000, 48_200, 900, -2_000)] == [
        "$1.25M",
        "$48k",
        "$900",
        "-$2k",
    ]
    assert [points(v) for v in (0.123, -0.03, -0.001)] == ["+12 pts", "-3 pts", "±0 pts"]


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after("3") == 3.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after(later) or 0) <= 31
    assert retry_after(None) is None and retry_after("soon") is None


def test_post_waits_as_asked_doubles_otherwise_and_stops_on_a_final_answer(monkeypatch):
    from service.notify import deliver

    answers = iter(
        [(429, "slow down", 7.0), (503, "busy", None), (500, "oops", None), (200, "ok", None)]
    )
    monkeypatch.setattr(deliver, "_post_once", lambda url, body, timeout: next(answers))
    waits: list[float] = []
    done = post(
        "https://example.invalid/x", {"text": "hi"}, tries=5, max_wait=5.0, sleep=waits.append
    )
    assert done.ok and done.attempts == 4 and waits == [5.0, 2.0, 4.0]  # capped, then 2, 4

    answers = iter([(404, "no_service", None), (200, "ok", None)])
    waits.clear()
    done = post("https://example.invalid/x", {"text": "hi"}, tries=5, sleep=waits.append)
    assert not done.ok and done.status == 404 and done.attempts == 1 and waits == []
