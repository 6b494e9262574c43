"""Benchmark: the pipeline end to end at scale, in one process and on a Dask LocalCluster.

Runs the commands a user runs, each in a fresh process, in fresh FORECAST_HOMEs, and prints per
stage the wall time, the calling process's peak memory and the largest worker's peak (its
processes sampled every 0.2 s), and whether the two paths agree; asserts nothing. A process
whose memory passes `--cap-gb` is stopped and reported as such (the machine is not run out of
memory). docs/scale.md shows the figures.

    python benchmarks/scale.py --deals 1000000 --parts 20 --workers 2 --memory-limit 6GB

Stages: a world generated whole (`forecast data generate`) and in parts (`--partitions`, the
checks across parts on the cluster); the world's stored files imported as a CRM's export in
chunks (`forecast data import`, whole in one process and `--partitions` on the cluster;
compared by the rows stored per table); the point-in-time features and labels of every weekly
snapshot of every deal (`training_frame` on the store read whole, and `deal_frames_of_parts`
with the workers reading their parts; compared by a digest of every row's every column); the
deal win model on a stated sample of snapshots (`forecast train win --snapshots month`;
`--train-snapshots`); the account churn model on every monthly account snapshot (`forecast
train churn`, compared by the references on its card); every open deal scored with reasons
(`forecast score deals --all`).
Training and scoring read the world stored in parts: in one process read whole, on the
cluster each worker its own parts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
FEATURES = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np
    import pandas as pd
    from forecast.data.store import current_path, read_store, read_version
    from forecast.features.deals import snapshot_dates, training_frame

    def row_hashes(frame, part=None):  # one hash per row, every column: order-free digest
        return pd.util.hash_pandas_object(frame, index=False).to_numpy()

    def main():
        folder = current_path()
        deals = read_version(folder, ["deals"]).deals
        dates = snapshot_dates(deals["created_at"].min(), read_store(tables=[]).as_of)
        if sys.argv[1] == "0":
            hashes = [row_hashes(training_frame(read_store(), dates, labelled_only=False))]
        else:  # the workers read their parts; this process only the context's tables
            from forecast.cluster import dask_client
            from forecast.features.on_dask import CONTEXT_TABLES, deal_frames_of_parts
            shared = read_version(folder, CONTEXT_TABLES)
            with dask_client(local_cluster=int(sys.argv[1]), memory_limit=sys.argv[2]) as client:
                _, hashes = deal_frames_of_parts(client, folder, shared, dates, row_hashes)
        rows = np.sort(np.concatenate(hashes))
        print(len(rows), hashlib.sha256(rows.tobytes()).hexdigest())

    if __name__ == "__main__":
        main()
    """
)


@dataclass(frozen=True)
class Run:
    seconds: float
    caller_gb: float
    worker_gb: float  # the largest single descendant process (0 without a cluster)
    stopped: bool  # passed the cap and was stopped
    returncode: int
    stdout: str

    def cells(self) -> str:
        if self.stopped:
            return f"stopped at {self.caller_gb:.1f} GB after {self.seconds:.0f} s"
        if self.returncode:
            return f"failed (exit {self.returncode}) after {self.seconds:.0f} s"
        workers = f", workers {self.worker_gb:.2f} GB each at most" if self.worker_gb else ""
        return f"{self.seconds:.0f} s, caller {self.caller_gb:.2f} GB{workers}"


def measure(command: list[str], home: Path, cap_gb: float, env: dict[str, str]) -> Run:
    """Run `command` with FORECAST_HOME=`home`, sampling its process tree's memory; its stderr
    to `<home>.stderr.log`, whose end is printed when it fails."""
    started = time.perf_counter()
    errors = home.with_name(f"{home.name}.stderr.log")
    errors.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        command, env=os.environ | env | {"FORECAST_HOME": str(home)},
        stdout=subprocess.PIPE, stderr=errors.open("w"), text=True,
    )  # fmt: skip
    root = psutil.Process(process.pid)
    caller = worker = 0.0
    stopped = False
    output: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)
    reader.start()
    while process.poll() is None:
        try:
            caller = max(caller, root.memory_info().rss / 2**30)
            for child in root.children(recursive=True):
                worker = max(worker, child.memory_info().rss / 2**30)
        except psutil.Error:
            pass
        if caller > cap_gb:
            for child in root.children(recursive=True):
                child.kill()
            process.kill()
            stopped = True
            break
        time.sleep(0.2)
    process.wait()
    reader.join(timeout=10)
    seconds = time.perf_counter() - started
    if process.returncode and not stopped:
        tail = errors.read_text(errors="replace").splitlines()[-15:]
        print(f"{' '.join(command[:4])}... failed:", *tail, sep="\n  ", flush=True)
    return Run(seconds, caller, worker, stopped, process.returncode, "".join(output))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="6GB", help="per worker")
    parser.add_argument("--cap-gb", type=float, default=16.0, help="stop a process beyond this")
    parser.add_argument("--stages", default="generate,import,features,train,churn,score")
    parser.add_argument(
        "--train-snapshots", default="month", choices=("week", "month", "quarter"),
        help="the sample of snapshots trained on (features and scores cover every row)",
    )  # fmt: skip
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "scale")
    args = parser.parse_args()
    stages = args.stages.split(",")
    forecast = str(BIN / "forecast")
    cluster = ["--local-cluster", str(args.workers)]
    env = {"FORECAST_DASK_WORKER_MEMORY": args.memory_limit, "MLFLOW_DISABLE_TELEMETRY": "true"}
    home = args.scratch / f"{args.deals}"
    rows: list[tuple[str, str, str, str]] = []

    def both(stage: str, alone: Run, clustered: Run, same: str) -> None:
        rows.append((stage, alone.cells(), clustered.cells(), same))
        print(f"{stage}: one process {alone.cells()}; cluster {clustered.cells()}; {same}",
              flush=True)  # fmt: skip

    n = str(args.deals)
    if "generate" in stages:
        whole = measure([forecast, "data", "generate", "--deals", n, "--quiet"],
                        args.scratch / f"{n}-whole", args.cap_gb, env)  # fmt: skip
        parts = measure(
            [forecast, "data", "generate", "--deals", n, "--partitions", str(args.parts), *cluster],
            home, args.cap_gb, env,
        )  # fmt: skip
        both("generate", whole, parts, f"in parts: {args.parts} parts, one in memory at a time")
    if "import" in stages:
        both("import", *_imports(home, args, forecast, cluster, env))
    if "features" in stages:
        runs = [
            measure(
                [sys.executable, "-c", FEATURES, str(w), args.memory_limit], home, args.cap_gb, env
            )
            for w in (0, args.workers)
        ]
        outs = [r.stdout.split() for r in runs]
        same = (
            "not compared: a side did not finish"
            if not all(outs)
            else "every column and row the same"
            if outs[0] == outs[1]
            else "DIFFERENT"
        )
        counted = next((out[0] for out in outs if out), "?")  # the side that finished
        both(f"features ({counted} snapshots)", *runs, same)
    if "train" in stages:
        command = [forecast, "train", "win", "--snapshots", args.train_snapshots, "--json"]
        runs = [measure(command + more, home, args.cap_gb, env) for more in ([], cluster)]
        metrics = [json.loads(r.stdout)["metrics"] if r.returncode == 0 else {} for r in runs]
        same = _compare_training(*metrics)
        both(f"train win ({args.train_snapshots}ly snapshots)", *runs, same)
        if runs[0].returncode == 0:  # score with the one-process model, whatever the gate said
            version = json.loads(runs[0].stdout)["version"]
            subprocess.run([forecast, "models", "promote", "deal-win", str(version), "--force"],
                           env=os.environ | env | {"FORECAST_HOME": str(home)},
                           capture_output=True, check=True)  # fmt: skip
    if "churn" in stages:
        command = [forecast, "train", "churn", "--json"]
        runs = [measure(command + more, home, args.cap_gb, env) for more in ([], cluster)]
        metrics = [json.loads(r.stdout)["metrics"] if r.returncode == 0 else {} for r in runs]
        both("train churn (monthly account snapshots)", *runs, _compare_training(*metrics))
    if "score" in stages:
        outs = [home / f"scores-{name}.parquet" for name in ("alone", "cluster")]
        runs = [
            measure(
                [forecast, "score", "deals", "--all", "--no-log", "--out", str(out), *more],
                home,
                args.cap_gb,
                env,
            )
            for out, more in zip(outs, ([], cluster), strict=True)
        ]
        both("score every open deal", *runs, _compare_files(*outs))

    print(
        f"\n{args.deals:,} deals; LocalCluster of {args.workers} workers, {args.memory_limit} each"
    )
    print("| stage | one process | LocalCluster | agreement |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def _imports(
    home: Path, args: argparse.Namespace, forecast: str, cluster: list[str], env: dict
) -> tuple[Run, Run, str]:
    """The generated world's stored files imported as a CRM's export in chunks: whole in one
    process, and `--partitions` on the cluster; compared by the rows stored per table."""
    source = (home / "store" / "current").resolve()
    as_of = json.loads((source / "manifest.json").read_text())["as_of"]
    command = [forecast, "data", "import", str(source), "--as-of", as_of]
    homes = [args.scratch / f"{args.deals}-import-{side}" for side in ("whole", "parts")]
    more = ([], ["--partitions", str(args.parts), *cluster])
    for h in homes:
        shutil.rmtree(h, ignore_errors=True)
    runs = [measure(command + m, h, args.cap_gb, env) for m, h in zip(more, homes, strict=True)]
    rows = [
        json.loads((h / "store" / "current" / "manifest.json").read_text())["rows"]
        if r.returncode == 0
        else None
        for r, h in zip(runs, homes, strict=True)
    ]
    if None in rows:
        same = "not compared: a side did not finish"
    else:
        same = "the same rows in every table" if rows[0] == rows[1] else "DIFFERENT rows"
    return runs[0], runs[1], same


def _compare_training(alone: dict, clustered: dict) -> str:
    if not alone or not clustered:
        return "one side failed"
    gaps = {
        name: abs(alone["lightgbm"][name] - clustered["lightgbm"][name])
        for name in ("auc", "log_loss")
    }
    same = [k for k in alone if k not in ("lightgbm", "model", "model_uncalibrated")]
    equal = all(alone[k] == clustered[k] for k in same)
    return (
        f"references {'the same' if equal else 'DIFFERENT'}; LightGBM AUC "
        f"{alone['lightgbm']['auc']:.4f} vs {clustered['lightgbm']['auc']:.4f}, log loss "
        f"{alone['lightgbm']['log_loss']:.4f} vs {clustered['lightgbm']['log_loss']:.4f} "
        f"(gaps {gaps['auc']:.4f}, {gaps['log_loss']:.4f})"
    )


def _compare_files(alone: Path, clustered: Path) -> str:
    import pandas as pd

    if not alone.is_file() or not clustered.is_file():
        return "one side failed"
    a, b = pd.read_parquet(alone), pd.read_parquet(clustered)
    try:
        pd.testing.assert_frame_equal(a, b)
    except AssertionError as err:
        return f"DIFFERENT: {str(err).splitlines()[0]}"
    return f"the same {len(a):,} rows"


if __name__ == "__main__":
    main()
