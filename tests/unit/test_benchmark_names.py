"""A benchmark script runs with its own folder first on sys.path: one named like a package it
imports would import itself instead (`benchmarks/service.py` could not import `service.keys`)."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
PACKAGES = {"forecast", "service", "tests", "mlflow", "lightgbm", "shap", "sklearn", "pandas"}


def test_no_benchmark_script_is_named_like_a_package_it_may_import():
    scripts = {path.stem for path in BENCHMARKS.glob("*.py")}
    assert scripts, BENCHMARKS
    assert scripts & PACKAGES == set()
