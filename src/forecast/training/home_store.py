"""Where a home's MLflow store keeps its artifacts, and a home that was copied or moved.

MLflow records absolute artifact paths: the experiment's root, each run's and each model's
folder. A `FORECAST_HOME` copied or moved to another folder (a backup restored, a home trained
on a laptop and shipped to a server, a volume mounted elsewhere) would read its models from the
folder it was made in, or, once that is gone, find none ("deal-win has no champion").
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

from forecast.settings import get_settings

log = logging.getLogger(__name__)

ARTIFACTS = "mlartifacts"
# (table, column) holding an artifact path in MLflow's SQL store
PATH_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
    ("logged_models", "artifact_location"),
)


def artifact_root() -> str | None:
    """`$FORECAST_HOME/mlartifacts` for a local (sqlite or file) store, else the server's choice.

    Without it MLflow puts a database-backed store's artifacts in `./mlruns` of whatever
    directory the command runs from.
    """
    settings = get_settings()
    if settings.mlflow_tracking_uri.startswith(("sqlite:", "file:", "/")):
        return (settings.home.expanduser().resolve() / ARTIFACTS).as_uri()
    return None


def follow_moved_home() -> None:
    """Point the home's own MLflow store at the home's own artifacts, if it was made elsewhere.

    Only the store `FORECAST_HOME` holds by default (`<home>/mlflow.db`) is rewritten, and only
    paths under an earlier home's `mlartifacts` whose folders this home holds; a store set with
    FORECAST_TRACKING_URI is the user's own and left alone. Checked once per home and process
    (until a check could run: a home without a store yet is looked at again).
    """
    home = get_settings().home.expanduser().resolve()
    if home in _CHECKED:
        return
    if get_settings().mlflow_tracking_uri == f"sqlite:///{(home / 'mlflow.db').as_posix()}":
        database, artifacts = home / "mlflow.db", home / ARTIFACTS
        if not database.is_file() or not artifacts.is_dir():
            return
        try:
            earlier = _moved(database, artifacts)
        except sqlite3.Error as err:  # a store MLflow has not set up yet, or a lock held long
            log.warning("could not check %s for a moved home: %s", database, err)
            return
        if earlier:
            log.info(
                "FORECAST_HOME was made in another folder (%s): its MLflow store now reads the "
                "artifacts under %s",
                ", ".join(earlier),
                artifacts,
            )
    _CHECKED.add(home)


_CHECKED: set[Path] = set()  # homes looked at by this process


def _moved(database: Path, artifacts: Path) -> list[str]:
    """Rewrite the paths under an earlier home's artifacts; returns the earlier roots whose
    paths this call moved (none when another process moved them first)."""
    root = artifacts.as_uri()
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db:
        roots = {
            location
            for (location,) in db.execute("SELECT artifact_location FROM experiments")
            if isinstance(location, str)
            and location.rstrip("/").endswith(f"/{ARTIFACTS}")
            and location.rstrip("/") != root
        }
        earlier = [r.rstrip("/") for r in roots if _holds_runs_of(db, r.rstrip("/"), artifacts)]
        if not earlier:
            return []
        before = db.total_changes
        with db:  # one transaction: every path moves, or none
            for old in earlier:
                for table, column in PATH_COLUMNS:
                    db.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, length(?) + 1) "
                        f"WHERE {column} = ? OR substr({column}, 1, length(?) + 1) = ? || '/'",
                        (root, old, old, old, old),
                    )
        return earlier if db.total_changes > before else []


def _holds_runs_of(db: sqlite3.Connection, old_root: str, artifacts: Path) -> bool:
    """Whether this home's artifacts folder holds the folders of the runs under `old_root`."""
    uris = [
        uri
        for (uri,) in db.execute("SELECT artifact_uri FROM runs WHERE artifact_uri LIKE 'file:%'")
        if uri.startswith(old_root + "/")
    ]
    if not uris:
        return False
    return any((artifacts / uri[len(old_root) + 1 :]).parent.is_dir() for uri in uris)
