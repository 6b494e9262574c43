"""Each stage package names its public calls: every name resolves, none hides a module, and
importing a package loads none of its modules until a name is used."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

STAGES = ("forecast", "forecast.data", "forecast.features", "forecast.training", "forecast.explain")


@pytest.mark.parametrize("name", STAGES)
def test_every_public_name_resolves_to_what_its_module_defines(name):
    package = importlib.import_module(name)
    assert sorted(package.__all__) == sorted(package._PUBLIC), name
    for public, where in package._PUBLIC.items():
        module, _, attribute = where.partition(":")
        defined = getattr(importlib.import_module(module), attribute or public)
        assert getattr(package, public) is defined, public


@pytest.mark.parametrize("name", STAGES[1:])
def test_no_public_name_is_also_a_module_of_the_package(name):
    package = importlib.import_module(name)
    modules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    assert modules & set(package.__all__) == set()


def test_importing_the_stages_loads_none_of_their_modules():
    code = (
        "import sys, forecast, forecast.data, forecast.features, forecast.training, "
        "forecast.explain; "
        "print(sorted(m for m in sys.modules if m.startswith('forecast.') and m.count('.') > 1))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
