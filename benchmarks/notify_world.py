"""Benchmark: every node's weekly digest, on a trained world, delivered to a local receiver.

The way a user runs it: a Slack and a Teams channel added for every node of the org tree with
`forecast notify add`, then `forecast notify send --digest weekly` (a subprocess, the CLI as
cron runs it). The receiver (tests/service/notify_receiver.py) checks each payload against
Slack's and Teams' schemas and limits; every deal a payload names is checked against the reach
of the person heading its node (`reach_of`, the API's rule). A second send must send nothing.

    FORECAST_HOME=~/.forecast python benchmarks/notify_world.py   # after `make run`'s training

Prints figures (counts per level, sizes, violations, time); exits 1 when a check fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from forecast.settings import get_settings
    from service.notify.book import nodes_of
    from service.notify.run import open_state
    from tests.service.notify_receiver import receiver, violations

    work = Path(tempfile.mkdtemp(prefix="forecast-notify-"))
    env = os.environ | {"FORECAST_DATABASE_URL": f"sqlite:///{work / 'service.db'}"}
    os.environ.update(env)
    get_settings.cache_clear()
    state = open_state(get_settings())
    nodes = nodes_of(state.reps())
    forecast = str(Path(sys.executable).parent / "forecast")
    with receiver() as got:
        for node in nodes:
            for channel in ("slack", "teams"):
                url = got.url(channel, f"{node.level}-{node.name}")
                add = [
                    "notify",
                    "add",
                    "--node",
                    node.name,
                    "--level",
                    node.level,
                    f"--{channel}",
                    url,
                ]
                subprocess.run([forecast, *add], env=env, check=True, capture_output=True)
        started = time.perf_counter()
        sent = subprocess.run(
            [forecast, "notify", "send", "--digest", "weekly", "--json"],
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
        again = subprocess.run(
            [forecast, "notify", "send", "--digest", "weekly", "--json"],
            env=env,
            capture_output=True,
            text=True,
        )
    results = Counter(r["result"] for r in json.loads(sent.stdout or "[]"))
    repeated = Counter(r["result"] for r in json.loads(again.stdout or "[]"))
    by_level: Counter = Counter()
    sizes: dict[str, list[int]] = {"slack": [], "teams": []}
    broken = []
    for node in nodes:
        for channel in ("slack", "teams"):
            payloads = got.received[got.path(channel, f"{node.level}-{node.name}")]
            by_level[(node.level, channel, len(payloads))] += 1
            sizes[channel] += [len(json.dumps(p)) for p in payloads]
            broken += [(node.name, d) for p in payloads for d in violations(state, node, p)]
    tables = state.store()
    print(f"world: {len(tables.deals):,} deals, {len(nodes)} nodes, as of {tables.as_of:%Y-%m-%d}")
    print(f"send: {dict(results)} in {seconds:.1f} s; again: {dict(repeated)}")
    print("| level | channel | nodes | payloads each |\n| --- | --- | --- | --- |")
    for (level, channel, count), n in sorted(by_level.items()):
        print(f"| {level} | {channel} | {n} | {count} |")
    for channel, values in sizes.items():
        if values:
            median = sorted(values)[len(values) // 2]
            print(f"{channel}: payload bytes median {median:,}, max {max(values):,}")
    slack_blocks = [len(p["blocks"]) for ps in got.received.values() for p in ps if "blocks" in p]
    print(f"slack blocks per message: max {max(slack_blocks, default=0)} (limit 50)")
    print(f"payloads refused by the receiver (schema or limits): {len(got.refused)}")
    print(f"access violations (deals outside the head's reach): {len(broken)}")
    ok = (
        sent.returncode == 0
        and results == {"sent": 2 * len(nodes)}
        and repeated == {"already sent": 2 * len(nodes)}
        and not got.refused
        and not broken
    )
    if not ok:
        print(sent.stderr[-2000:], got.refused[:5], broken[:5])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
