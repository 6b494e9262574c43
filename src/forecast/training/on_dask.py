"""LightGBM trained by a Dask cluster's workers (`lightgbm.dask`), the rest of the pipeline as
in one process (docs/scale.md).

On a cluster the LightGBM candidate's pipeline ends in a `DaskLGBMClassifier`. Fitting it
(`fit_on_cluster`) fits the steps before it here, sends the coded rows to the workers (one
part per worker: every n-th row), trains data-parallel there, and puts the booster back as a
plain `LGBMClassifier`: what is logged, served and explained is a model like the one one
process would hold, trained on every worker. The logistic candidate and the calibration maps
fit in the calling process (the calibration slice and the coefficients are small).

Not bit for bit the single-process model: in data-parallel LightGBM each worker finds the bins
of its share of the features from its own rows, and lightgbm.dask hands out the workers' ranks
in an order that changes from run to run. Parts that are each a sample of the whole keep the
difference small (docs/scale.md gives the measured tolerance).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)
ON_CLUSTER = "lightgbm.dask"  # the module of the estimator that trains on the workers


def on_cluster(model: object) -> bool:
    """True when `model` is a pipeline whose last step trains on a Dask cluster."""
    return isinstance(model, Pipeline) and type(model.steps[-1][1]).__module__ == ON_CLUSTER


def trained_on(client: Client | None) -> str:
    """Where a run's LightGBM is trained, as its MLflow tag says it."""
    if client is None:
        return "one process"
    workers = len(client.scheduler_info()["workers"])
    return f"Dask cluster of {workers} workers (LightGBM by lightgbm.dask)"


def lightgbm_on(client: Client, make: Callable[[], Pipeline]) -> Callable[[], Pipeline]:
    """A maker of `make()`'s pipeline with its LightGBM step trained by `client`'s workers."""

    def made() -> Pipeline:
        from lightgbm.dask import DaskLGBMClassifier

        pipeline = make()
        name, booster = pipeline.steps[-1]
        params = booster.get_params()
        params.pop("n_jobs", None)  # each worker uses its own threads (lightgbm.dask sets them)
        pipeline.steps[-1] = (name, DaskLGBMClassifier(client=client, **params))
        return pipeline

    return made


def fit_on_cluster(
    pipeline: Pipeline, x: pd.DataFrame, y: np.ndarray, weights: np.ndarray | None
) -> Pipeline:
    """Fit `pipeline` (see `lightgbm_on`): the coding steps here, the booster on the workers,
    then the booster back in the pipeline as a plain `LGBMClassifier`."""
    import dask.dataframe as dd

    name, booster = pipeline.steps[-1]
    client = booster.client
    coding = pipeline[:-1].fit(x, y)
    coded = coding.transform(x).reset_index(drop=True)
    # a categorical column with no value at all (stage on an export without history) kills
    # LightGBM's data-parallel learner with a segfault (4.7.0; maven-crm): declared numeric, it
    # is the same never-split column
    empty = {i for i, column in enumerate(coded.columns) if coded[column].isna().all()}
    declared = booster.get_params().get("categorical_column") or []
    booster.set_params(categorical_column=[i for i in declared if i not in empty])
    workers = sorted(client.scheduler_info()["workers"])
    columns: dict[str, list] = {"x": [], "y": [], "w": []}
    for number, worker in enumerate(workers):
        # every n-th row: each worker's part is a sample of the whole, so the bins each one
        # finds for its share of the features are nearly the bins of all rows
        rows = slice(number, None, len(workers))
        label = pd.Series(y[rows], index=coded.index[rows], name="label")
        weight = pd.Series(
            np.ones(len(label)) if weights is None else weights[rows],
            index=coded.index[rows], name="weight",
        )  # fmt: skip
        parts = client.scatter([coded.iloc[rows], label, weight], workers=[worker])
        for key, part in zip(columns, parts, strict=True):
            columns[key].append(part)
    collections = {
        key: dd.from_delayed(parts, meta=meta, verify_meta=False)
        for (key, parts), meta in zip(
            columns.items(), (coded.iloc[:0], label.iloc[:0], weight.iloc[:0]), strict=True
        )
    }
    _quiet()
    booster.fit(
        collections["x"],
        collections["y"],
        sample_weight=None if weights is None else collections["w"],
    )
    pipeline.steps[-1] = (name, booster.to_local())
    return pipeline


def _quiet() -> None:
    """lightgbm.dask prints its port search on every fit, and warns that it sets the threads
    itself (as asked): the first through our logger at debug (heard with --verbose), the
    second not at all."""
    import lightgbm

    lightgbm.register_logger(log, info_method_name="debug")
    if _THREADS_SET_BY_DASK not in log.filters:
        log.addFilter(_THREADS_SET_BY_DASK)


def _not_about_threads(record: logging.LogRecord) -> bool:
    return not record.getMessage().endswith(
        ("n_jobs will be ignored.", "num_threads will be ignored.")
    )


_THREADS_SET_BY_DASK = _not_about_threads
