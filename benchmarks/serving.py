"""Benchmark: the service scoring one deal with reasons, against `mlflow models serve` (the peer).

Two forms of ours: a CRM's record (`/v1/deals:score`: the features computed from the stored CRM
per request, with the training code) and the model's own features (`/v1/deals:scoreFeatures`,
the form the peer takes).

One run: a small world is generated and the deal-win model trained in the benchmark's own
FORECAST_HOME (or `--home` is used as it is), then each server is started as a subprocess on
127.0.0.1 and loaded by a separate client process (asyncio, one keep-alive connection per
concurrent caller, pre-built request bytes) so the load generator costs little of the 2 cores
it shares with the server; its own CPU time is printed beside the figures.

    python benchmarks/serving.py                      # ours vs the peer, concurrency 8
    python benchmarks/serving.py --soak               # 300 requests/s for 60 s, RSS over time
    python benchmarks/serving.py --soak --soak-minutes 10

Prints figures; asserts nothing (the goals are printed beside them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

GOAL_RATIO = 5.0
GOAL_P99_MS = 20.0
GOAL_RSS_MB = 20.0


# --- the load client (runs in its own process) ---------------------------------------------


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one request on a keep-alive connection and read the whole answer; its status."""
    writer.write(request)
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    status = int(head.split(None, 2)[1])
    length, chunked = 0, "transfer-encoding: chunked" in head
    if not chunked and (at := head.find("content-length:")) >= 0:
        length = int(head[at + 15 : head.index("\r\n", at)])
    if chunked:
        while (size := int((await reader.readline()).strip(), 16)) > 0:
            await reader.readexactly(size + 2)
        await reader.readline()
    else:
        await reader.readexactly(length)
    return status


async def _caller(
    port: int, request: bytes, stop: float, rate: float | None, start: float, out: dict
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    while True:
        # open loop (a rate): latency counts from the scheduled moment, so a stall is not hidden
        due = start + n / rate if rate else time.perf_counter()
        if due >= stop:
            break
        if rate and (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        try:
            status = await _exchange(reader, writer, request)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            IndexError,
        ):
            status = 0
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        out["latencies"].append(time.perf_counter() - due)
        if status != 200:
            out["errors"] += 1
        n += 1
    writer.close()


async def _load(port: int, request: bytes, concurrency: int, seconds: float, rate: float | None):
    out: dict = {"latencies": [], "errors": 0}
    start = time.perf_counter()
    stop = start + seconds
    per_caller = rate / concurrency if rate else None
    offsets = [start + i / rate if rate else start for i in range(concurrency)]
    await asyncio.gather(
        *(_caller(port, request, stop, per_caller, o, out) for o in offsets),
        return_exceptions=False,
    )
    return out, time.perf_counter() - start


def _event_loop_runner():
    """uvloop's (a dependency of the service: it cuts the client's own CPU time), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def client_main(spec: dict) -> None:
    """The client process: prints one JSON line of figures."""
    request = spec["request"].encode("latin-1")
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    load = _load(spec["port"], request, spec["concurrency"], spec["seconds"], spec.get("rate"))
    out, elapsed = _event_loop_runner()(load)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    lat = sorted(out["latencies"])
    print(
        json.dumps(
            {
                "requests": len(lat),
                "errors": out["errors"],
                "seconds": elapsed,
                "p50_ms": 1000 * _quantile(lat, 0.50),
                "p99_ms": 1000 * _quantile(lat, 0.99),
                "client_cpu_share": cpu / elapsed,
            }
        )
    )


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, int(q * len(values)))]


def _http_request(port: int, path: str, body: bytes, headers: dict[str, str]) -> str:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode().decode("latin-1") + body.decode("latin-1")


def run_client(spec: dict, timeout: float) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--client", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the servers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {seconds:.0f} s")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the peer's CLI starts the server as a child)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo += [int(c) for c in task.read_text().split()]
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process tree has used so far."""
    total = 0
    for p in process_tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _spawned(pid: int) -> bool:
    return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def spawned_workers(pid: int) -> list[int]:
    """The server's worker processes: those it spawned, not theirs (each of our workers spawns
    its log writer, counted in the worker's CPU as part of its tree)."""
    return [p for p in process_tree(pid)[1:] if _spawned(p) and not _spawned(_parent(p))]


def worker_pids(pid: int, workers: int) -> list[int]:
    """The service processes: the server itself, or its spawned workers."""
    if workers <= 1:
        return [pid]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = spawned_workers(pid)
        if len(found) == workers:
            return found
        time.sleep(0.2)
    raise RuntimeError(f"expected {workers} workers under {pid}")


def _mbs(values: list[float]) -> str:
    return " ".join(f"{v:7.1f}" for v in values)


def rss_mb(pid: int) -> float:
    """Resident memory of a worker and what it started (its log writer), in MB."""
    total = 0.0
    for p in process_tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def environment(home: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "FORECAST_HOME": str(home),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
    }


def start_ours(home: Path, port: int, args: argparse.Namespace) -> subprocess.Popen:
    command = [sys.executable, "-m", "service.serve", "--port", str(port)]
    command += ["--workers", str(args.workers), "--log-level", "warning"]
    if args.uvicorn_cli:  # how the service was started before `service.serve` existed
        command = [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    env = {**environment(home), "FORECAST_MODEL_POLL_SECONDS": "0"}
    return _start(command, env, home / "bench-service.log")


def start_peer(home: Path, port: int, version: str, workers: int) -> subprocess.Popen:
    """The peer with as many worker processes as ours: the same machine for both."""
    from forecast.settings import get_settings

    env = {**environment(home), "MLFLOW_TRACKING_URI": get_settings().mlflow_tracking_uri}
    command = ["mlflow", "models", "serve", "-m", f"models:/deal-win/{version}"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]
    return _start(command, env, home / "bench-peer.log")


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A server whose output goes to `log` (a pipe nobody reads would stall it once full)."""
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=out)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- the model and the request -------------------------------------------------------------


def prepare(home: Path, deals: int, trees: int) -> None:
    """A generated world and a deal-win champion in `home` (skipped when one is there)."""
    import pandas as pd

    from forecast.data.ingest import generate
    from forecast.model import TreeParams
    from forecast.training.registry import champion_version, promote, register_and_gate
    from forecast.training.win import train_win
    from forecast.training.win_task import MODEL_NAME, WinParams

    if champion_version(MODEL_NAME) is not None:
        return
    print(f"training deal-win on a generated world of {deals:,} deals in {home} ...", flush=True)
    world, _ = generate(deals, seed=0, imported_at=pd.Timestamp("2026-11-15"))
    params = WinParams(tree=TreeParams(n_estimators=trees, n_jobs=2))
    result = train_win(world.tables, truth=world.truth, params=params, card_dir=home / "card")
    decision = register_and_gate(MODEL_NAME, result.model_uri, result.run_id, result.evaluation())
    if not decision.promoted:
        promote(MODEL_NAME, decision.version, force=True)


def one_open_deal() -> dict:
    """Model features of one open deal of the stored world, as JSON-ready values."""
    import pandas as pd

    from forecast.data.store import read_store
    from forecast.explain.scoring import open_deal_ids
    from forecast.features.deal_schema import DEAL_FEATURES
    from forecast.features.deals import deal_features

    tables = read_store()
    deal_id = open_deal_ids(tables, tables.as_of).iloc[0]
    row = deal_features(tables, pd.DataFrame({"deal_id": [deal_id], "as_of": [tables.as_of]}))
    out = {}
    for f in DEAL_FEATURES:
        value = row[f.name].iloc[0]
        if pd.isna(value):
            out[f.name] = None
        elif f.kind == "categorical":
            out[f.name] = str(value)
        else:
            out[f.name] = float(value)
    return out


def one_open_deal_record() -> dict:
    """The same open deal as its CRM holds it: ids, stage, amount, dates, next step."""
    import pandas as pd

    from forecast.data.store import read_store
    from forecast.explain.scoring import open_deal_ids

    tables = read_store()
    deal_id = open_deal_ids(tables, tables.as_of).iloc[0]
    deal = tables.deals.set_index("deal_id").loc[deal_id]
    history = tables.deal_history
    last = history[history["deal_id"] == deal_id].sort_values("changed_at").iloc[-1]

    def text(value: object) -> str | None:
        return None if pd.isna(value) else str(value)

    return {
        "deal_id": str(deal_id),
        "rep_id": text(deal["rep_id"]),
        "account_id": text(deal["account_id"]),
        "product_id": text(deal["product_id"]),
        "stage": str(last["stage"]),
        "amount": None if pd.isna(last["amount"]) else float(last["amount"]),
        "created_at": deal["created_at"].isoformat(),
        "expected_close": None
        if pd.isna(last["expected_close"])
        else last["expected_close"].date().isoformat(),
        "next_step": text(last["next_step"]),
    }


def peer_body(deal: dict) -> bytes:
    from forecast.features.deal_schema import DEAL_FEATURES

    # the peer's schema wants every numeric column as a double: missing ones as NaN
    columns = [f.name for f in DEAL_FEATURES]
    row = [
        deal[c] if deal[c] is not None or f.kind == "categorical" else math.nan
        for c, f in zip(columns, DEAL_FEATURES, strict=True)
    ]
    return json.dumps({"dataframe_split": {"columns": columns, "data": [row]}}).encode()


# --- the runs ------------------------------------------------------------------------------


def measure(name: str, port: int, request: str, pid: int, args: argparse.Namespace) -> dict:
    warm = {"port": port, "request": request, "concurrency": args.concurrency, "seconds": 2}
    run_client(warm, timeout=60)
    spec = {**warm, "seconds": args.seconds}
    workers = spawned_workers(pid)
    if args.workers > 1 and len(workers) != args.workers:
        raise RuntimeError(f"{name}: {len(workers)} of {args.workers} workers running (see logs)")
    cpu = cpu_seconds(pid)
    each = [cpu_seconds(p) for p in workers]
    figures = run_client(spec, timeout=args.seconds + 60)
    figures["name"] = name
    figures["rps"] = figures["requests"] / figures["seconds"]
    # the server's own CPU per request: a figure the other load on the machine moves less
    figures["cpu_ms"] = 1000 * (cpu_seconds(pid) - cpu) / max(figures["requests"], 1)
    # how the connections were spread: a worker with more of them makes the p99
    used = [cpu_seconds(p) - c for p, c in zip(workers, each, strict=True)]
    figures["split"] = "/".join(f"{100 * u / max(sum(used), 1e-9):.0f}" for u in used) or "-"
    return figures


class HeavyScenarios:
    """`count` callers each asking a scenario that adds 1,000 deals, over and over, while the
    scoring load is measured (issue 18: scoring keeps its p99 with heavy scenarios running)."""

    def __init__(self, port: int, keys: list[str], body: bytes, quarter: str):
        self.url = f"http://127.0.0.1:{port}/v1/forecast/{quarter}:scenario"
        self.keys, self.body = keys, body
        self.stopping = threading.Event()
        self.seconds: list[float] = []
        self.statuses: dict[int, int] = {}
        self.threads = [threading.Thread(target=self._ask, args=(k,)) for k in keys]

    def __enter__(self) -> HeavyScenarios:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def _ask(self, key: str) -> None:
        headers = {"Content-Type": "application/json", "X-API-Key": key}
        while not self.stopping.is_set():
            request = urllib.request.Request(self.url, self.body, headers, method="POST")
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=300) as answer:
                    status = answer.status
            except urllib.error.HTTPError as err:
                status = err.code
                time.sleep(float(err.headers.get("Retry-After", 1)))
            if status == 200:
                self.seconds.append(time.perf_counter() - start)
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def summary(self) -> str:
        done = sorted(self.seconds)
        median = f"{done[len(done) // 2]:.2f} s" if done else "-"
        return (
            f"{len(self.keys)} callers asking scenarios that add 1,000 deals: answers by status "
            f"{dict(sorted(self.statuses.items()))}, median {median} each"
        )


def machine_speed_ms() -> float:
    """Milliseconds a fixed pure-Python loop takes (best of 5): the same code measures faster
    or slower as the host's other tenants allow, so each run prints it beside its figures."""
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        sum(i * i for i in range(1_000_000))
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def row(f: dict) -> str:
    return (
        f"{f['name']:<44} {f['rps']:>8.0f} {f['p50_ms']:>8.1f} {f['p99_ms']:>8.1f} "
        f"{f['errors']:>7d} {f['cpu_ms']:>13.2f} {100 * f['client_cpu_share']:>10.0f}% "
        f"{f['split']:>13}"
    )


def header() -> str:
    return (
        f"{'server':<44} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'server CPU/req':>13} {'client CPU':>11} {'worker CPU %':>13}"
    )


def compare(home: Path, ours: dict[str, str], deal: dict, args: argparse.Namespace) -> None:
    from forecast.training.registry import champion_version

    version = champion_version("deal-win")
    speed = machine_speed_ms()
    results = []
    port = free_port()
    server = start_ours(home, port, args)
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", server)
        _wait_model(port, server)
        for name, request in ours.items():
            results.append(
                measure(name, port, request.replace("PORT", str(port)), server.pid, args)
            )
        if args.heavy:
            name, request = next(iter(ours.items()))
            with HeavyScenarios(port, *args.heavy) as heavy:
                time.sleep(2)  # the scenarios under way
                loaded = measure(name, port, request.replace("PORT", str(port)), server.pid, args)
            loaded["name"] = f"{name.split(' (')[0]}, {len(args.heavy[0])} scenarios running"
            results.append(loaded)
            print(heavy.summary())
    finally:
        stop(server)
    if not args.no_peer:
        port = free_port()
        peer = start_peer(home, port, version, args.workers)
        try:
            wait_for(f"http://127.0.0.1:{port}/ping", peer, seconds=180)
            body = peer_body(deal)
            request = _http_request(
                port, "/invocations", body, {"Content-Type": "application/json"}
            )
            results.append(
                measure(
                    f"mlflow models serve deal-win/{version} (bare)", port, request, peer.pid, args
                )
            )
        finally:
            stop(peer)
    print(
        f"\nconcurrency {args.concurrency}, {args.seconds:.0f} s each, 127.0.0.1, "
        f"{os.cpu_count()} cores; machine speed {speed:.0f} ms (a fixed Python loop, lower is "
        "faster)"
    )
    print(header())
    for f in results:
        print(row(f))
    if not args.no_peer:
        peer = results[-1]
        for f in results[:-1]:
            print(
                f"{f['name']}: throughput {f['rps'] / peer['rps']:.1f}x the peer's (goal >= "
                f"{GOAL_RATIO:.0f}x); p99 {f['p99_ms']:.1f} ms (goal < {GOAL_P99_MS:.0f} ms)"
            )


def _wait_model(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as a:
                body = json.loads(a.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read())
        if body["models"].get("deal-win"):
            return
        if server.poll() is not None:
            raise RuntimeError("the service exited")
        time.sleep(0.2)
    raise RuntimeError("deal-win did not load")


def soak(home: Path, request: str, args: argparse.Namespace) -> None:
    port = free_port()
    server = start_ours(home, port, args)
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", server)
        _wait_model(port, server)
        request = request.replace("PORT", str(port))
        run_client({"port": port, "request": request, "concurrency": 8, "seconds": 3}, timeout=60)
        seconds = 60 * args.soak_minutes
        spec = {
            "port": port,
            "request": request,
            "concurrency": args.concurrency,
            "seconds": seconds,
            "rate": args.rate,
        }
        client = subprocess.Popen(
            [sys.executable, __file__, "--client", json.dumps(spec)],
            stdout=subprocess.PIPE,
            text=True,
        )
        started = time.monotonic()
        workers = worker_pids(server.pid, args.workers)
        print(
            f"soak: {args.rate:.0f} requests/s for {seconds:.0f} s; "
            f"RSS (MB) of each of {len(workers)} worker(s), with its log writer, every "
            f"{args.rss_every:.0f} s"
        )
        samples = [[rss_mb(p) for p in workers]]
        print(f"  t={0:>5.0f} s  rss={_mbs(samples[-1])}", flush=True)
        for k in range(1, math.ceil(seconds / args.rss_every) + 1):
            time.sleep(max(0.0, started + min(k * args.rss_every, seconds) - time.monotonic()))
            samples.append([rss_mb(p) for p in workers])
            print(f"  t={time.monotonic() - started:>5.0f} s  rss={_mbs(samples[-1])}", flush=True)
        client.wait()  # the requests still due finish
        figures = json.loads(client.stdout.read().strip().splitlines()[-1])
        rate = figures["requests"] / figures["seconds"]
        growth = [end - start for start, end in zip(samples[0], samples[-1], strict=True)]
        print(
            f"soak: {figures['requests']} requests, {rate:.0f}/s, errors {figures['errors']}, "
            f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
            f"client CPU {100 * figures['client_cpu_share']:.0f}%"
        )
        print(
            f"RSS growth per worker over {seconds:.0f} s (after a 3 s warm-up): "
            f"{', '.join(f'{g:+.1f}' for g in growth)} MB (goal < {GOAL_RSS_MB:.0f} MB)"
        )
    finally:
        stop(server)


def _heavy(count: int) -> tuple[list[str], bytes, str]:
    """Admin keys of `count` callers, and a scenario body adding 1,000 deals to this quarter."""
    from forecast.data.store import read_store
    from forecast.settings import get_settings
    from service.keys import create_key, engine_for

    tables = read_store()
    engine = engine_for(get_settings().service_database_url)
    keys = [create_key(engine, "admin", label=f"bench heavy {i}") for i in range(count)]
    reps = tables.reps.loc[tables.reps["role"] == "rep", "rep_id"].tolist()
    close = (tables.as_of + pd.Timedelta(days=20)).date().isoformat()
    added = [
        {"deal_id": f"BENCH-{i}", "rep_id": reps[i % len(reps)], "amount": 25_000.0,
         "stage": "proposal", "expected_close": close}
        for i in range(1000)
    ]  # fmt: skip
    body = json.dumps({"name": "bench", "add": added}).encode()
    return keys, body, str(tables.as_of.to_period("Q"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a FORECAST_HOME with a deal-win champion")
    parser.add_argument("--deals", type=int, default=5000, help="world size when training")
    parser.add_argument("--trees", type=int, default=400, help="trees when training")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15, help="measured seconds per server")
    parser.add_argument("--workers", type=int, default=1, help="service processes")
    parser.add_argument("--no-peer", action="store_true", help="measure only the service")
    parser.add_argument(
        "--uvicorn-cli", action="store_true", help="start ours with the uvicorn CLI"
    )
    parser.add_argument(
        "--soak", action="store_true", help="open-loop soak instead of the comparison"
    )
    parser.add_argument("--rate", type=float, default=300.0, help="soak requests/s")
    parser.add_argument("--soak-minutes", type=float, default=1.0)
    parser.add_argument("--rss-every", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument(
        "--records-only", action="store_true", help="measure the record form only (not features)"
    )
    parser.add_argument(
        "--heavy-scenarios",
        type=int,
        default=0,
        help="also measure scoring while N callers ask scenarios adding 1,000 deals each",
    )
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(json.loads(args.client))
        return

    home = args.home or Path(tempfile.mkdtemp(prefix="bench-service-"))
    os.environ.update({"FORECAST_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"})
    for name in ("FORECAST_TRACKING_URI", "FORECAST_DATABASE_URL", "FORECAST_STORE_DIR"):
        os.environ.pop(name, None)
    from forecast.settings import get_settings
    from service.keys import create_key, engine_for

    prepare(home, args.deals, args.trees)
    key = create_key(engine_for(get_settings().service_database_url), "crm", label="bench")
    deal = one_open_deal()
    headers = {"Content-Type": "application/json", "X-API-Key": key}

    def ours(path: str, body: dict) -> str:
        request = _http_request(0, path, json.dumps(body).encode(), headers)
        return request.replace("127.0.0.1:0", "127.0.0.1:PORT")

    # the record form (features computed from the store per request) is what a CRM sends
    as_of = "2026-11-15T00:00:00Z"
    record = ours("/v1/deals:score", {"as_of": as_of, "deals": [one_open_deal_record()]})
    args.heavy = _heavy(args.heavy_scenarios) if args.heavy_scenarios else None
    if args.soak:
        soak(home, record, args)
    else:
        forms = {"forecast record (1 deal, features from the store)": record}
        if not args.records_only:
            forms["forecast features (1 deal, reasons + actions)"] = ours(
                "/v1/deals:scoreFeatures", {"deals": [deal]}
            )
        compare(home, forms, deal, args)


if __name__ == "__main__":
    main()
