"""The commands' progress bar: a step per name, and a second bar for a cluster's parts that
follows them as they finish and goes when the next step starts."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from forecast.cli.common import Steps


def _bars(progress: Progress) -> dict[str, tuple[float, float | None]]:
    return {t.description: (t.completed, t.total) for t in progress.tasks}


def test_the_parts_bar_follows_the_cluster_and_goes_with_its_step():
    with Progress(console=Console(file=io.StringIO())) as progress:
        bar = Steps(progress, "training win", total=3)
        bar("snapshots and features")
        for done in (1, 2, 3):
            bar.parts(done, 8)
        assert _bars(progress) == {
            "training win: snapshots and features": (0, 3),
            "  parts done on the cluster": (3, 8),
        }
        bar("leak guard")
        assert _bars(progress) == {"training win: leak guard": (1, 3)}
        bar.finish()
        assert _bars(progress) == {"training win: leak guard": (3, 3)}
