"""`make drill`: every fault the service must survive, under load, with the figures that say so.

Each fault runs against a fresh service (`python -m service.serve`) whose PostgreSQL service
database is reached through a TCP proxy the drill can cut (every connection dropped, new ones
refused: what the service sees when PostgreSQL stops), while callers score deals over
keep-alive connections. Afterwards the drill counts, in PostgreSQL itself, the prediction rows
of the answered requests, and prints one line per fault:

    fault | sent | answered | failed | rows answered | rows in the log | lost | recovered in

`lost` must be 0 except for kill -9 (at most about a second of requests, README) and a full
spool (counted in /metrics, never silent); a shutdown must end within its bound. The exit
status is 1 when any line breaks its rule.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from deploy.tcp_proxy import CuttableProxy
from deploy.team import add_postgres_argument, free_port, fresh_database

RECORD = {
    "stage": "proposal",
    "amount": 48000,
    "created_at": "2026-10-01T09:00:00Z",
    "expected_close": "2026-12-18",
}
STOP_BOUND = 20.0  # seconds a SIGTERM may take, whatever the database does


@dataclass
class Load:
    """Callers scoring one deal each request, over keep-alive connections, until stopped."""

    port: int
    key: str
    callers: int = 4
    answers: list[tuple[float, int]] = field(default_factory=list)  # (time, status); 0: failed
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.threads = [
            threading.Thread(target=self._call, args=(i,), daemon=True) for i in range(self.callers)
        ]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def seconds(self) -> float:
        times = [t for t, _ in self.answers]
        return max(times) - min(times) if len(times) > 1 else 1.0

    def _call(self, caller: int) -> None:
        connection = None
        n = 0
        while not self.stopping.is_set():
            n += 1
            body = json.dumps({"deals": [{"deal_id": f"DRILL-{caller}-{n}", **RECORD}]})
            headers = {"Content-Type": "application/json", "X-API-Key": self.key}
            try:
                connection = connection or http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=30
                )
                connection.request("POST", "/v1/deals:score", body, headers)
                answer = connection.getresponse()
                answer.read()
                status = answer.status
            except (OSError, http.client.HTTPException):  # reset, refused, cut short
                status, connection = 0, None
                time.sleep(0.05)
            self.answers.append((time.monotonic(), status))

    def figures(self, since: float) -> dict:
        statuses = [s for _, s in self.answers]
        failures = [t for t, s in self.answers if s != 200 and t >= since]
        last_failure = max(failures) if failures else since
        return {
            "sent": len(statuses),
            "answered": statuses.count(200),
            "failed": len(statuses) - statuses.count(200),
            "recovered": last_failure - since if failures else 0.0,
        }


@dataclass
class Drill:
    home: Path
    postgres: str  # the service database's real URL (counted there, not through the proxy)
    seconds: float
    work: Path
    results: list[dict] = field(default_factory=list)

    def service(
        self, proxy: CuttableProxy, *, workers: int = 1, **settings: str
    ) -> tuple[subprocess.Popen, int]:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORECAST_")}
        env |= {
            "FORECAST_HOME": str(self.home),
            "FORECAST_DATABASE_URL": proxy.url(self.postgres),
            "FORECAST_LOG_SPOOL_DIR": str(self.work / "spool"),
            "FORECAST_SHUTDOWN_GRACE_SECONDS": "0.5",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        } | {f"FORECAST_{k.upper()}": v for k, v in settings.items()}
        command = [
            sys.executable,
            "-m",
            "service.serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ]
        log = (self.work / f"service-{port}.log").open("w")
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: _status(f"http://127.0.0.1:{port}/readyz") == 200, 180, "the service")
        return server, port

    def key(self, proxy: CuttableProxy) -> str:
        from service.keys import create_key, engine_for

        return create_key(engine_for(self.postgres), "crm", label="drill")

    def record(self, fault: str, load: Load, since: float, rule: str, **extra: object) -> None:
        figures = load.figures(since) | extra
        # every answered score is two rows: its prediction and its read in the audit log
        figures["rows_answered"] = 2 * figures["answered"]
        figures["rows_logged"] = self.rows(load.key)
        figures["lost"] = figures["rows_answered"] - figures["rows_logged"]
        figures |= {"fault": fault, "rule": rule, "rate": figures["answered"] / load.seconds()}
        self.results.append(figures)
        print(_line(figures), flush=True)

    def rows(self, key: str, settle: float = 30.0) -> int:
        """This key's prediction and audit rows in the database, once the spool is empty and
        they stop growing (a restarted service's writer may take seconds to start replaying,
        on a busy machine: a count that merely holds still for a moment is not enough)."""
        from service.keys import engine_for
        from service.logsink import spooled_rows
        from service.predlog import audit_log, prediction_log

        caller = key.split("_")[1]
        queries = [
            sa.select(sa.func.count()).select_from(table).where(table.c.caller == caller)
            for table in (prediction_log, audit_log)
        ]
        last, deadline = -1, time.monotonic() + settle
        while time.monotonic() < deadline:
            with engine_for(self.postgres).connect() as conn:
                count = sum(int(conn.execute(q).scalar() or 0) for q in queries)
            if count == last and spooled_rows(self.work / "spool") == 0:
                return count
            last = count
            time.sleep(1.5)
        return last


# --- the faults ----------------------------------------------------------------------------------


def kill_a_worker(drill: Drill, proxy: CuttableProxy) -> None:
    server, port = drill.service(proxy, workers=2)
    load = Load(port, drill.key(proxy))
    time.sleep(drill.seconds / 3)
    worker = _children(server.pid)[0]
    at = time.monotonic()
    os.kill(worker, signal.SIGKILL)
    _wait(
        lambda: len(_children(server.pid)) == 2 and worker not in _children(server.pid),
        60,
        "a new worker",
    )
    time.sleep(drill.seconds / 2)
    load.stop()
    _stop(server)
    drill.record("kill -9 a worker under load", load, at, "lost <= one flush window")


def database_away(drill: Drill, proxy: CuttableProxy) -> None:
    server, port = drill.service(proxy)
    load = Load(port, drill.key(proxy))
    time.sleep(drill.seconds / 3)
    proxy.cut()
    time.sleep(max(2.0, drill.seconds / 3))
    proxy.restore()
    at = time.monotonic()
    _wait(lambda: _status(f"http://127.0.0.1:{port}/readyz") == 200, 60, "readiness")
    time.sleep(drill.seconds / 3)
    load.stop()
    _stop(server)
    drill.record("PostgreSQL away, then back, under load", load, at, "lost 0")


def nul_rows(drill: Drill, proxy: CuttableProxy) -> None:
    server, port = drill.service(proxy)
    load = Load(port, drill.key(proxy))
    at = time.monotonic()
    refused = [_status(f"http://127.0.0.1:{port}/v1/deals/%00", load.key) for _ in range(20)]
    time.sleep(drill.seconds)
    load.stop()
    _stop(server)
    drill.record(
        "NUL in a path, 20 times, under load", load, at, "lost 0", nul_answers=sorted(set(refused))
    )


def sigterm_under_load(drill: Drill, proxy: CuttableProxy) -> None:
    server, port = drill.service(proxy)
    load = Load(port, drill.key(proxy))
    time.sleep(drill.seconds / 2)
    at = time.monotonic()
    server.send_signal(signal.SIGTERM)
    code = server.wait(timeout=STOP_BOUND)
    stopped = time.monotonic() - at
    load.stop()
    drill.record(
        "SIGTERM under load", load, at, "lost 0", exit=code, stopped_in=stopped, recovered="-"
    )


def sigterm_during_outage(drill: Drill, proxy: CuttableProxy) -> None:
    server, port = drill.service(proxy)
    load = Load(port, drill.key(proxy))
    time.sleep(drill.seconds / 2)
    proxy.cut()
    time.sleep(1.0)
    at = time.monotonic()
    server.send_signal(signal.SIGTERM)
    code = server.wait(timeout=STOP_BOUND)
    stopped = time.monotonic() - at
    load.stop()
    proxy.restore()
    again, _ = drill.service(proxy)  # the next start writes what the spool kept
    drill.record(
        "SIGTERM while PostgreSQL is away, then a restart",
        load,
        at,
        "lost 0",
        exit=code,
        stopped_in=stopped,
        recovered="-",
    )
    _stop(again)


def corrupt_champion(drill: Drill, proxy: CuttableProxy) -> None:
    from forecast.training.registry import champion_version, client

    server, port = drill.service(proxy)
    load = Load(port, drill.key(proxy))
    before = champion_version("deal-win")
    registry = client()
    churn = registry.get_model_version_by_alias("account-churn", "champion")
    wrong = registry.create_model_version("deal-win", churn.source, churn.run_id)  # churn's model
    registry.set_registered_model_alias("deal-win", "champion", wrong.version)
    at = time.monotonic()
    try:
        admin = _admin_key(drill)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/admin/reload", b"", {"X-API-Key": admin}, method="POST"
        )
        urllib.request.urlopen(request, timeout=60).read()
        ready = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").read())
        time.sleep(drill.seconds / 2)
    finally:
        registry.set_registered_model_alias("deal-win", "champion", before)
    load.stop()
    _stop(server)
    drill.record(
        "a wrong model promoted (churn's, as deal-win)",
        load,
        at,
        "lost 0",
        serving=ready["models"]["deal-win"],
        refused=len(ready["refused"]),
    )


def spool_full(drill: Drill, proxy: CuttableProxy) -> None:
    server, port = drill.service(proxy, log_spool_max_mb="0.005", key_cache_seconds="600")
    load = Load(port, drill.key(proxy))
    time.sleep(1.0)
    proxy.cut()
    at = time.monotonic()
    time.sleep(drill.seconds / 2)
    proxy.restore()
    time.sleep(drill.seconds / 3)
    load.stop()
    time.sleep(2.0)  # the last rows written (the database is back: none lost after the count)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    _stop(server)
    counted = _counted(metrics, "lost")
    drill.record(
        "the spool full while PostgreSQL is away",
        load,
        at,
        "lost = counted lost",
        counted_lost=counted,
    )


FAULTS: dict[str, Callable[[Drill, CuttableProxy], None]] = {
    "kill-worker": kill_a_worker,
    "database-away": database_away,
    "nul": nul_rows,
    "sigterm": sigterm_under_load,
    "sigterm-outage": sigterm_during_outage,
    "wrong-model": corrupt_champion,
    "spool-full": spool_full,
}


def broken(f: dict) -> str | None:
    """Why a result breaks its rule, or None."""
    # a kill -9 may take what the dead worker had not handed to its writer: one flush window
    # (0.2 s) when the writer keeps up; on a saturated machine measured up to about a second
    # (CI, 2 cores: 1.1 s). Two rows per request, at the whole service's rate: with room.
    flush_rows = max(20, int(2 * f["rate"] * 1.5))
    if f.get("stopped_in", 0) > STOP_BOUND or f.get("exit", 0) != 0:
        return f"the shutdown took {f.get('stopped_in', 0):.1f} s, exit {f.get('exit')}"
    if f["rule"] == "lost 0" and f["lost"] != 0:
        return f"{f['lost']} rows lost"
    if f["rule"].startswith("lost <=") and not 0 <= f["lost"] <= flush_rows:
        return f"{f['lost']} rows lost (allowed {flush_rows})"
    if f["rule"] == "lost = counted lost" and f["lost"] != f["counted_lost"]:
        return f"{f['lost']} rows lost but {f['counted_lost']} counted"
    if "serving" in f and not f["refused"]:
        return "the wrong model was not refused"
    if "nul_answers" in f and f["nul_answers"] != [422]:
        return f"a NUL path answered {f['nul_answers']}"
    return None


# --- helpers --------------------------------------------------------------------------------------


def _line(f: dict) -> str:
    extra = {
        k: v
        for k, v in f.items()
        if k
        not in {
            "fault",
            "rule",
            "sent",
            "answered",
            "failed",
            "rows_answered",
            "rows_logged",
            "lost",
            "recovered",
            "rate",
        }
    }
    shown = ", ".join(
        f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in extra.items()
    )
    return (
        f"| {f['fault']} | {f['sent']:,} | {f['answered']:,} | {f['failed']:,} | "
        f"{f['rows_answered']:,} | {f['rows_logged']:,} | {f['lost']:,} | "
        f"{_seconds(f['recovered'])} | {shown} |"
    )


def _seconds(value: object) -> str:
    return f"{value:.1f} s" if isinstance(value, float) else str(value)


def _status(url: str, key: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def _wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"drill: {what} not ready within {seconds:.0f} s")
        time.sleep(0.2)


def _children(pid: int) -> list[int]:
    """The service workers under a supervisor (not multiprocessing's resource tracker)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = path.read_text().split() if path.exists() else []
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=STOP_BOUND)
        except subprocess.TimeoutExpired:
            server.kill()


def _counted(metrics: str, outcome: str) -> int:
    line = f'forecast_log_rows_total{{outcome="{outcome}"}} '
    return next((int(float(x.split()[-1])) for x in metrics.splitlines() if x.startswith(line)), 0)


def _admin_key(drill: Drill) -> str:
    from service.keys import create_key, engine_for

    return create_key(engine_for(drill.postgres), "admin", label="drill")


def _train(home: Path, deals: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORECAST_")}
    env |= {"FORECAST_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    forecast = str(Path(sys.executable).parent / "forecast")
    for command in (
        ["data", "generate", "--deals", str(deals), "--quiet"],
        ["train", "win"],
        ["train", "churn"],
    ):
        print(f"drill: forecast {' '.join(command)}", flush=True)
        subprocess.run([forecast, *command], env=env, check=True, capture_output=True)
    for model in ("deal-win", "account-churn"):  # the gate may keep one a challenger here
        subprocess.run(
            [forecast, "models", "promote", model, "1", "--force"], env=env, capture_output=True
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home",
        type=Path,
        help="a FORECAST_HOME with both champions (default: a small world trained here)",
    )
    add_postgres_argument(parser)
    parser.add_argument("--seconds", type=float, default=12.0, help="load per fault")
    parser.add_argument("--faults", nargs="*", default=list(FAULTS), choices=list(FAULTS))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="forecast-drill-"))
    home = args.home
    if home is None:
        home = work / "home"
        _train(home, 2000)
    os.environ.update({"FORECAST_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"})
    service_db = fresh_database(args.postgres, "forecast_drill")
    from service.keys import engine_for, ensure_tables

    ensure_tables(engine_for(service_db))
    real = sa.engine.make_url(service_db)
    print(
        "| fault | sent | answered | failed | rows answered | rows in the log | lost | "
        "recovered in | more |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    drill = Drill(home, service_db, args.seconds, work)
    for name in args.faults:
        proxy = CuttableProxy((real.host or "127.0.0.1", real.port or 5432))
        try:
            FAULTS[name](drill, proxy)
        finally:
            proxy.cut()
    problems = [(f["fault"], why) for f in drill.results if (why := broken(f))]
    for fault, why in problems:
        print(f"drill: FAILED {fault}: {why}")
    print(f"drill: {len(drill.results) - len(problems)} of {len(drill.results)} faults held")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
