"""`make team`: the service as a team runs it, on this machine (docs/deploy.md).

- an MLflow tracking server (`mlflow server`) whose runs and registry live in PostgreSQL and
  whose artifacts it serves itself from an artifact root;
- two service instances on their own ports (each its own FORECAST_HOME, so its own log spool),
  sharing the PostgreSQL service database (keys, sessions, prediction and audit logs, reload
  requests), the MLflow server and the CRM store;
- models trained against the server and promoted through its registry; then the champion
  alias moved by hand and one instance asked to reload: both serve the new version.

Every step prints what it did; the end prints a table of what each instance served. It exits 0
when both instances switched, 1 otherwise (with what was seen).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, suppress
from pathlib import Path

import sqlalchemy as sa

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def say(text: str) -> None:
    print(f"[team] {text}", flush=True)


def fresh_database(admin_url: str, name: str) -> str:
    """An empty PostgreSQL database `name` (dropped first if it exists); its URL."""
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def add_postgres_argument(parser: argparse.ArgumentParser) -> None:
    default = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    parser.add_argument(
        "--postgres",
        default=os.environ.get("FORECAST_TEAM_POSTGRES", default),
        help="a PostgreSQL URL allowed to create databases (FORECAST_TEAM_POSTGRES)",
    )


def get(url: str, key: str | None = None, data: bytes | None = None) -> tuple[int, dict]:
    headers = {"X-API-Key": key} if key else {}
    method = "POST" if data is not None else "GET"
    request = urllib.request.Request(url, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait(what: str, check, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"[team] {what}: not within {seconds:.0f} s")
        time.sleep(0.5)


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    say(f"$ {' '.join(command)}  (log: {log})")
    out = log.open("w")
    # its own process group: `mlflow server` runs uvicorn and job consumers as children,
    # which a signal to the launcher alone can leave behind
    return subprocess.Popen(
        command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def run(command: list[str], env: dict[str, str], seconds: float = 300) -> str:
    """The command's output; it fails the team run when it fails or takes over `seconds`.

    Output goes to files, not pipes: a pipe would keep us waiting on any process the command
    left behind holding it."""
    say(f"$ {' '.join(command)}")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            code: int | str = subprocess.run(
                command, env=env, stdout=out, stderr=err, timeout=seconds
            ).returncode
        except subprocess.TimeoutExpired:
            code = f"not done within {seconds:.0f} s"
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        raise SystemExit(f"[team] failed ({code}):\n{stdout}\n{stderr}")
    return stdout


def log_tails(root: Path, lines: int = 40) -> None:
    """The end of every server log, so a failed run says what the servers saw."""
    for log in sorted(root.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"\n[team] last {len(tail)} lines of {log.name}:", *tail, sep="\n", flush=True)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM and up to a minute to finish; then nothing of its group is left running."""
    if process.poll() is None:
        process.terminate()
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def serving_version(port: int) -> str | None:
    try:
        return get(f"http://127.0.0.1:{port}/readyz")[1]["models"].get("deal-win")
    except (OSError, KeyError, ValueError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_postgres_argument(parser)
    parser.add_argument("--deals", type=int, default=3000, help="size of the generated world")
    parser.add_argument("--workdir", type=Path, help="where to keep homes and logs (default: temp)")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="forecast-team-"))
    root.mkdir(parents=True, exist_ok=True)
    say(f"working in {root}")
    mlflow_db = fresh_database(args.postgres, "forecast_team_mlflow")
    service_db = fresh_database(args.postgres, "forecast_team_service")
    say("PostgreSQL: databases forecast_team_mlflow (MLflow) and forecast_team_service (service)")
    mlflow_port = free_port()
    base = team_environment(root, f"http://127.0.0.1:{mlflow_port}", service_db)
    try:
        team(root, base, mlflow_port, mlflow_db, args.deals)
    except (SystemExit, Exception):
        log_tails(root)
        raise
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def team(root: Path, base: dict[str, str], mlflow_port: int, mlflow_db: str, deals: int) -> None:
    with ExitStack() as stack:
        stack.callback(stop, mlflow_server(root, mlflow_port, mlflow_db, base))
        trainer = base | {"FORECAST_HOME": str(root / "trainer")}
        first = train_champion(trainer, deals)
        ports = [free_port(), free_port()]
        for i, port in enumerate(ports, 1):
            env = base | {"FORECAST_HOME": str(root / f"instance-{i}")}
            command = [sys.executable, "-m", "service.serve", "--port", str(port)]
            stack.callback(stop, start(command, env, root / f"instance-{i}.log"))
        for port in ports:
            wait(f"instance on {port}", lambda p=port: serving_version(p) == first)
        say(f"both instances serve deal-win version {first}")
        switch_champion(trainer, base, ports, first)


def team_environment(root: Path, tracking: str, service_db: str) -> dict[str, str]:
    """What every process of the team shares: the server, the service database, the store."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FORECAST_", "MLFLOW_"))}
    return base | {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # a server that stops answering fails the step in about a minute, not after the
        # client's default retries (about four minutes per request)
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
        "FORECAST_TRACKING_URI": tracking,
        "FORECAST_DATABASE_URL": service_db,
        "FORECAST_STORE_DIR": str(root / "store"),  # in a team: a volume every instance mounts
        "FORECAST_SYNC_SECONDS": "1",
        "FORECAST_MODEL_POLL_SECONDS": "600",  # the switch below comes from the reload
    }


def mlflow_server(root: Path, port: int, backend: str, env: dict[str, str]) -> subprocess.Popen:
    """`mlflow server` with its runs in PostgreSQL and artifacts it serves itself, once up.

    Without its job execution: on a database backend the server otherwise starts seven job
    consumer processes (MLflow's GenAI jobs and periodic tasks), which this project never asks
    for and which compete with everything else on a small machine."""
    env = env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    artifacts = (root / "artifacts").as_uri()
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", backend, "--artifacts-destination", artifacts]
    command += ["--serve-artifacts", "--workers", "1"]
    server = start(command, env, root / "mlflow-server.log")
    tracking = f"http://127.0.0.1:{port}"
    wait("the MLflow server", lambda: _answers(f"{tracking}/health"), seconds=120)
    say(f"MLflow server up at {tracking} (runs in PostgreSQL, artifacts in {root}/artifacts)")
    return server


def train_champion(trainer: dict[str, str], deals: int) -> str:
    """A world in the shared store, both models trained against the server; the deal-win
    champion's version."""
    forecast = str(BIN / "forecast")
    run([forecast, "data", "generate", "--deals", str(deals), "--quiet"], trainer)
    run([forecast, "train", "win"], trainer)
    run([forecast, "train", "churn"], trainer)
    first = _champion(trainer)
    if first is None:  # a small world: the gate may keep it a challenger (its card says why)
        first = max(_versions(trainer), key=int)
        run([forecast, "models", "promote", "deal-win", first, "--force"], trainer)
        say(f"deal-win version {first} lost to a baseline on this small world: promoted by hand")
    say(f"deal-win version {first} is champion in the server's registry")
    return first


def switch_champion(
    trainer: dict[str, str], base: dict[str, str], ports: list[int], first: str
) -> None:
    """A second version promoted by hand, one instance asked to reload, both switched."""
    forecast = str(BIN / "forecast")
    run([forecast, "train", "win", "--seed", "1"], trainer)
    second = max(_versions(trainer), key=int)
    run([forecast, "models", "promote", "deal-win", second, "--force"], trainer)
    say(f"deal-win version {second} promoted by hand (the alias moved in the server)")
    key = run([forecast, "keys", "create", "--role", "admin", "--label", "team"], base).strip()
    status, body = get(f"http://127.0.0.1:{ports[0]}/v1/admin/reload", key, b"")
    say(f"POST /v1/admin/reload on instance 1 only: {status}, changed {body.get('changed')}")
    started = time.monotonic()

    def both_switched() -> bool:
        return all(serving_version(p) == second for p in ports)

    wait("both instances on the new version", both_switched, seconds=30)
    took = time.monotonic() - started
    print("\n| instance | port | deal-win before | deal-win after |")
    print("| --- | --- | --- | --- |")
    for i, port in enumerate(ports, 1):
        print(f"| {i} | {port} | {first} | {serving_version(port)} |")
    say(f"both instances switched to version {second} within {took:.1f} s of the reload")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _registry(env: dict[str, str]) -> list[dict]:
    text = run([str(BIN / "forecast"), "models", "list", "--json"], env)
    return [m for m in json.loads(text) if m.get("name") == "deal-win"]


def _versions(env: dict[str, str]) -> list[str]:
    return [str(m["version"]) for m in _registry(env)]


def _champion(env: dict[str, str]) -> str | None:
    aliased = (str(m["version"]) for m in _registry(env) if "champion" in str(m.get("aliases")))
    return next(aliased, None)


if __name__ == "__main__":
    sys.exit(main())
