"""The `forecast` script's edge: what no command names still ends in a message, never a
traceback, and a tracking server that does not answer is named as such."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def test_a_tracking_server_that_does_not_answer_is_named_not_a_traceback(forecast_home):
    forecast = str(BIN / "forecast")
    subprocess.run([forecast, "data", "generate", "--deals", "300", "--quiet"], check=True)
    env = os.environ | {
        "FORECAST_TRACKING_URI": f"http://127.0.0.1:{_closed_port()}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    done = subprocess.run([forecast, "train", "win"], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert "The MLflow tracking server did not answer" in done.stderr
    assert "FORECAST_TRACKING_URI" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr

    verbose = subprocess.run(
        [forecast, "--verbose", "train", "win"], env=env, capture_output=True, text=True
    )
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr, "--verbose shows it"
