"""Model health for the dashboard: how a serving version was trained and how it does live.

`model_report` reads the registry and the version's training run (data window, fingerprint,
out-of-time metrics against the baselines, gate verdict); `live_accuracy` joins the service's
prediction log with the outcomes of deals that closed after they were scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from forecast.data.tables import CrmTables
from forecast.training.evaluate import METRICS
from service.predlog import prediction_log

SHOWN_METRICS = ("auc", "log_loss", "brier", "ece")
RELIABILITY_ARTIFACT = "evaluation/reliability.png"
LABELS = {"test": "model (this version)", "truth": "truth (the generator's probability)"}


@dataclass(frozen=True)
class ModelReport:
    """One registered version and the run that trained it."""

    name: str
    version: str
    run_id: str | None
    trained_at: pd.Timestamp | None
    windows: dict[str, str]  # train / calibration / test / export_as_of -> "start .. end"
    fingerprint: str | None
    candidate: str | None
    calibration: str | None
    gate: str | None
    metrics: pd.DataFrame  # contender (model, baselines, truth) x auc, log_loss, brier, ece
    test_rows: float | None = None
    params: dict[str, str] = field(default_factory=dict)
    half_life: str | None = None  # days of the recency weights ("none": equal weights)


def _contender(key: str) -> tuple[str, str] | None:
    """`baseline_stage_fixed_log_loss` -> ("baseline_stage_fixed", "log_loss")."""
    for metric in sorted(METRICS, key=len, reverse=True):  # pr_auc before auc
        if key.endswith("_" + metric):
            prefix = key[: -len(metric) - 1]
            if prefix == "test" or prefix.startswith("baseline_") or prefix == "truth":
                return prefix, metric
            return None
    return None


def metrics_table(metrics: dict[str, float]) -> pd.DataFrame:
    """The run's flat metrics as a contender x metric table, the model first."""
    cells: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        found = _contender(key)
        if found is not None and found[1] in SHOWN_METRICS:
            cells.setdefault(found[0], {})[found[1]] = float(value)
    frame = pd.DataFrame.from_dict(cells, orient="index").reindex(columns=list(SHOWN_METRICS))
    order = sorted(frame.index, key=lambda c: (c != "test", c == "truth", c))
    frame = frame.loc[order]
    frame.index = [LABELS.get(c, c.replace("_", " ")) for c in order]
    return frame


def _client(tracking_uri: str | None):
    """A client on `tracking_uri` (the serving process's store), else the settings' store."""
    import mlflow

    from forecast.settings import disable_telemetry, get_settings

    disable_telemetry()
    uri = tracking_uri or get_settings().mlflow_tracking_uri
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def model_report(name: str, version: str, *, tracking_uri: str | None = None) -> ModelReport:
    """The version's training run, read from the MLflow store at `tracking_uri`."""
    from forecast.training.registry import GATE_TAG

    c = _client(tracking_uri)
    mv = c.get_model_version(name, version)
    run = c.get_run(mv.run_id) if mv.run_id else None
    if run is None:
        return ModelReport(name, version, None, None, {}, None, None, None, None, pd.DataFrame())
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    windows = {k[len("window_") :]: v for k, v in params.items() if k.startswith("window_")}
    return ModelReport(
        name=name,
        version=version,
        run_id=run.info.run_id,
        trained_at=pd.Timestamp(run.info.start_time, unit="ms", tz="UTC").floor("s"),
        windows=windows,
        fingerprint=tags.get("data_fingerprint"),
        candidate=tags.get("candidate"),
        calibration=tags.get("calibration"),
        gate=mv.tags.get(GATE_TAG) or tags.get("gate_reason"),
        metrics=metrics_table(metrics),
        test_rows=metrics.get("test_rows"),
        params={k: v for k, v in params.items() if k.endswith("_rows")},
        half_life=tags.get("half_life_days"),
    )


def reliability_image(run_id: str, into: Path, *, tracking_uri: str | None = None) -> Path | None:
    """The run's logged reliability diagram (PNG) downloaded into `into`, or None."""
    try:
        client = _client(tracking_uri)
        return Path(client.download_artifacts(run_id, RELIABILITY_ARTIFACT, str(into)))
    except Exception:  # an older run without the diagram: the page says so
        return None


@dataclass(frozen=True)
class LiveAccuracy:
    """Logged deal scores whose deals closed after they were scored."""

    outcomes: int  # deals with an outcome since their last logged score
    logged: int  # logged scores of deals in the store
    won_rate: float | None
    mean_predicted: float | None
    log_loss: float | None
    brier: float | None
    auc: float | None


def live_accuracy(engine: sa.Engine, tables: CrmTables, model: str) -> LiveAccuracy:
    """Each deal's last logged score before it closed, against how it closed.

    Only deals scored while open and closed later count: a score logged after the close would
    be judged on an outcome it could have seen.
    """
    query = sa.select(prediction_log.c.subject, prediction_log.c.at, prediction_log.c.output).where(
        prediction_log.c.model == model, prediction_log.c.subject.is_not(None)
    )
    with engine.connect() as conn:
        rows = pd.DataFrame(conn.execute(query).all(), columns=["deal_id", "at", "output"])
    deals = tables.deals[["deal_id", "closed_at", "outcome"]]
    logged = rows.merge(deals, on="deal_id", how="inner")
    if logged.empty:
        return LiveAccuracy(0, 0, None, None, None, None, None)
    at = pd.to_datetime(logged["at"], utc=True).dt.tz_localize(None)
    closed_at = pd.to_datetime(logged["closed_at"])
    if closed_at.dt.tz is not None:
        closed_at = closed_at.dt.tz_convert("UTC").dt.tz_localize(None)
    logged = logged.assign(at=at, closed_at=closed_at)
    judged = logged[logged["outcome"].isin(["won", "lost"]) & (logged["closed_at"] > logged["at"])]
    judged = judged.sort_values("at").drop_duplicates("deal_id", keep="last")
    if judged.empty:
        return LiveAccuracy(0, len(logged), None, None, None, None, None)
    p = np.clip(judged["output"].map(lambda o: float(o["probability"])).to_numpy(), 1e-6, 1 - 1e-6)
    y = (judged["outcome"] == "won").to_numpy(dtype=float)
    auc = None
    if 0 < y.sum() < len(y):
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(y, p))
    return LiveAccuracy(
        outcomes=len(judged),
        logged=len(logged),
        won_rate=float(y.mean()),
        mean_predicted=float(p.mean()),
        log_loss=float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        brier=float(np.mean((p - y) ** 2)),
        auc=auc,
    )
