"""Scores in bulk for a CRM to re-import, and the prediction log exported by date range."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest
from typer.testing import CliRunner

from forecast.cli import app

runner = CliRunner()


@pytest.fixture
def own_log(at_trained_home, tmp_path, monkeypatch):
    """The trained home's store and models, with a service database of this test's own."""
    from forecast.settings import get_settings

    monkeypatch.setenv("FORECAST_DATABASE_URL", f"sqlite:///{tmp_path / 'service.db'}")
    get_settings.cache_clear()
    return tmp_path


def _todays_log(folder) -> list[dict]:
    """The prediction log's rows of today, through `forecast log export`."""
    today = datetime.now(UTC).date().isoformat()
    exported = folder / "log.jsonl"
    done = runner.invoke(
        app, ["log", "export", "--from", today, "--to", today, "--out", str(exported)]
    )
    assert done.exit_code == 0, done.output
    return [json.loads(line) for line in exported.read_text().splitlines()]


def test_score_deals_all_writes_every_open_deal_with_version_and_logs_it(own_log):
    from forecast.data.store import read_store
    from forecast.explain.scoring import load_deal_explainer, score_deals

    out = own_log / "scores.parquet"
    done = runner.invoke(app, ["score", "deals", "--all", "--out", str(out)])
    assert done.exit_code == 0, done.output
    book = pd.read_parquet(out)
    tables = read_store()
    explainer = load_deal_explainer(tables, as_of=tables.as_of)
    scores = score_deals(tables, explainer.scorer, typical=explainer.typical)
    expected = {s.deal_id: s for s in scores}
    assert sorted(book["deal_id"]) == sorted(expected)
    for row in book.head(50).itertuples():
        assert row.probability == pytest.approx(expected[row.deal_id].probability, abs=1e-12)
        assert row.reasons.splitlines() == [
            f"{'+' if r.direction == 'raises' else '-'} {r.text}"
            for r in expected[row.deal_id].explanation.reasons
        ]
    assert set(book["model_version"]) == {"1"} and set(book["model"]) == {"deal-win"}
    assert book["data_fingerprint"].nunique() == 1 and len(book["data_fingerprint"].iloc[0]) == 64
    assert (book["as_of"] == tables.as_of).all()

    rows = _todays_log(own_log)
    assert len(rows) == len(book)
    by_deal = {r["subject"]: r for r in rows}
    first = book.iloc[0]
    assert by_deal[first["deal_id"]]["output"]["reasons"] == first["reasons"].splitlines()
    assert by_deal[first["deal_id"]]["model_version"] == "1"


def test_a_book_with_no_open_deal_is_written_empty(own_log):
    """Before the first deal was created nothing is open: an empty book, not an error."""
    from forecast.data.store import read_store

    first = read_store().deals["created_at"].min()
    out = own_log / "none.parquet"
    done = runner.invoke(
        app,
        ["score", "deals", "--all", "--as-of", f"{first - pd.Timedelta(days=1):%Y-%m-%d}",
         "--out", str(out)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "0 open deals scored" in done.output
    assert pd.read_parquet(out).empty


def test_score_accounts_all_writes_the_services_drivers_and_logs_them(own_log, api):
    """Every account's churn risk with its drivers and top retention action, as the service
    explains the same account, and each row in the prediction log."""
    out = own_log / "accounts.parquet"
    done = runner.invoke(app, ["score", "accounts", "--all", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "logged as request accounts-" in done.output
    book = pd.read_parquet(out)
    assert len(book) > 50 and book["reasons"].str.len().gt(0).all()
    assert book["top_action"].notna().any() and book["churn_probability"].between(0, 1).all()
    admin = api.key("admin")
    for row in book.iloc[:: max(1, len(book) // 12)].itertuples():
        served = api.get(f"/v1/accounts/{row.account_id}", key=admin)
        assert served.status == 200, served.body
        assert row.churn_probability == pytest.approx(served.body["churn_probability"], abs=1e-9)
        assert row.reasons.splitlines() == [
            f"{'+' if d['direction'] == 'raises' else '-'} {d['text']}"
            for d in served.body["drivers"]
        ]
        actions = served.body["retention_actions"]
        assert row.top_action == (actions[0]["text"] if actions else None)

    rows = _todays_log(own_log)
    by_account = {r["subject"]: r for r in rows if r["model"] == "account-churn"}
    assert len(by_account) == len(book)
    first = book.iloc[0]
    logged = by_account[first["account_id"]]["output"]
    assert logged["reasons"] == first["reasons"].splitlines()
    assert logged["churn_probability"] == pytest.approx(first["churn_probability"])


def test_the_revenue_forecast_reads_the_scored_book(own_log):
    """`forecast revenue --scores`: the open deals' chances from the book, the same forecast as
    scoring them again; a book of another moment, data or model, or one missing an open deal,
    is refused by name."""
    book_file = own_log / "scores.parquet"
    done = runner.invoke(app, ["score", "deals", "--all", "--out", str(book_file), "--no-log"])
    assert done.exit_code == 0, done.output
    asked = ["revenue", "--level", "rep", "--json", "--draws", "500", "--no-lean"]
    fresh = json.loads(runner.invoke(app, asked).stdout)
    read = runner.invoke(app, [*asked, "--scores", str(book_file)])
    assert read.exit_code == 0, read.output
    from_book = json.loads(read.stdout)
    assert from_book["nodes"] and len(from_book["nodes"]) == len(fresh["nodes"])
    for ours, theirs in zip(from_book["nodes"], fresh["nodes"], strict=True):
        assert ours["node"] == theirs["node"]
        assert ours["mean"] == pytest.approx(theirs["mean"], rel=1e-9, abs=1e-6)
    as_csv = own_log / "scores.csv"
    pd.read_parquet(book_file).to_csv(as_csv, index=False)  # as `--out scores.csv` writes it
    read = runner.invoke(app, [*asked, "--scores", str(as_csv)])
    assert read.exit_code == 0, read.output
    assert [n["mean"] for n in json.loads(read.stdout)["nodes"]] == [
        n["mean"] for n in from_book["nodes"]
    ]

    book = pd.read_parquet(book_file)
    nothing = own_log / "nothing-wins.parquet"
    book.assign(probability=0.0).to_parquet(nothing)
    lower = json.loads(runner.invoke(app, [*asked, "--scores", str(nothing)]).stdout)
    company = [n["mean"] for n in lower["nodes"]]
    assert sum(company) < sum(n["mean"] for n in fresh["nodes"]), "the book's chances are used"

    def refused(frame: pd.DataFrame, name: str, *more: str) -> str:
        path = own_log / name
        frame.to_parquet(path)
        done = runner.invoke(app, [*asked, "--scores", str(path), *more])
        assert done.exit_code == 1 and str(path) in done.output, done.output
        return " ".join(done.output.split())  # rich wraps lines

    assert "scored as of" in refused(book, "same.parquet", "--as-of", "2026-11-01")
    # the book's moment is the forecast's: the deals open a week earlier are not all in it
    earlier = book["as_of"] - pd.Timedelta(days=7)
    assert "have no score in the book" in refused(book.assign(as_of=earlier), "earlier.parquet")
    assert "other data" in refused(book.assign(data_fingerprint="0" * 64), "other.parquet")
    assert "version 99" in refused(book.assign(model_version="99"), "v99.parquet")
    assert "1 of the" in refused(book.iloc[1:], "short.parquet")
    assert "no column probability" in refused(book.drop(columns="probability"), "cols.parquet")
    wrong = book.assign(probability=book["probability"].where(book.index != 2, 1.5))
    assert "row 3, column probability: 1.5" in refused(wrong, "p.parquet")
    done = runner.invoke(app, [*asked, "--scores", str(own_log / "absent.parquet")])
    assert done.exit_code == 1 and "no such file" in " ".join(done.output.split())


def test_bad_options_are_refused_and_write_nothing(own_log):
    done = runner.invoke(app, ["score", "deals", "--all", "--out", str(own_log / "s.txt")])
    assert done.exit_code == 2 and ".parquet or .csv" in done.output
    assert not (own_log / "s.txt").exists()
    done = runner.invoke(app, ["score", "deals"])
    assert done.exit_code == 2 and "--all" in done.output
    done = runner.invoke(app, ["log", "export", "--from", "last week", "--to", "2026-12-01"])
    assert done.exit_code == 2 and "--from" in done.output
    done = runner.invoke(app, ["log", "export", "--from", "2026-12-02", "--to", "2026-12-01"])
    assert done.exit_code == 2 and "before" in done.output


def test_admins_page_through_the_prediction_log(api):
    record = {
        "deal_id": "LOG-1",
        "stage": "proposal",
        "amount": 1000,
        "created_at": "2026-10-01T00:00:00Z",
    }
    key = api.key("crm")
    ids = []
    for i in range(3):
        answer = api.post("/v1/deals:score", {"deals": [{**record, "deal_id": f"LOG-{i}"}]}, key)
        ids.append(answer.body["request_id"])
    api.state.logs.flush()
    today = datetime.now(UTC).date().isoformat()
    path = f"/v1/admin/predictions?from={today}&to={today}"
    assert api.get(path, key).status == 403
    admin = api.key("admin")
    seen, after = [], 0
    while True:
        page = api.get(f"{path}&limit=2&after_id={after}", admin)
        assert page.status == 200, page.detail
        seen += page.body["predictions"]
        if page.body["next_after_id"] is None:
            break
        after = page.body["next_after_id"]
    mine = [p for p in seen if p["request_id"] in ids]
    assert [p["subject"] for p in mine] == ["LOG-0", "LOG-1", "LOG-2"]
    assert all(p["output"]["reasons"] for p in mine)
    assert api.get(f"{path.replace(today, '1800-01-01', 1)}", admin).status == 422


def test_the_readme_bulk_commands_run_as_printed(own_log, monkeypatch):
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    printed = [
        line.split("  #")[0].strip()
        for line in readme.splitlines()
        if line.startswith(("forecast score ", "forecast revenue --scores", "forecast log "))
    ]
    assert len(printed) >= 3 and any(c.startswith("forecast log ") for c in printed)
    monkeypatch.chdir(own_log)
    for command in printed:
        done = runner.invoke(app, shlex.split(command)[1:])
        assert done.exit_code == 0, (command, done.output)
    assert Path("deal-scores.parquet").exists() and Path("predictions.jsonl").exists()


def test_the_readme_curl_body_scores(api):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    (line,) = [x for x in readme.splitlines() if x.startswith("try: curl")]
    body = json.loads(line.split("-d '")[1].split("'")[0])
    answer = api.post("/v1/deals:score", body, api.key("crm"))
    assert answer.status == 200, answer.detail
    assert answer.body["scores"][0]["new_to_store"] == ["deal_id"]
