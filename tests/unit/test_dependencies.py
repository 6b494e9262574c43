"""What the library and the service import is what pyproject.toml declares for them at run time:
no package that only arrives through another one, and no test-only package in the runtime."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_CODE = (ROOT / "src" / "forecast", ROOT / "service")
OWN = {"forecast", "service"}


def _declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return {_normal(re.match(r"[A-Za-z0-9_.\-]+", spec).group(0)) for spec in specs}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(path: Path) -> list[str]:
    """The top-level modules a file imports (absolute imports, wherever they are written)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return [name.split(".")[0] for name in names]


def _imported_modules() -> dict[str, str]:
    """Top-level module -> the first file importing it, over the runtime code."""
    found: dict[str, str] = {}
    for folder in RUNTIME_CODE:
        for path in sorted(folder.rglob("*.py")):
            for name in _imports(path):
                found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def _third_party() -> dict[str, tuple[set[str], str]]:
    """Top-level module -> (the distributions that provide it, where it is imported)."""
    providers = packages_distributions()
    out = {}
    for module, where in _imported_modules().items():
        if module in OWN or module in sys.stdlib_module_names or module == "__future__":
            continue
        out[module] = ({_normal(d) for d in providers.get(module, [])}, where)
    return out


def test_every_package_the_runtime_imports_is_a_declared_dependency():
    declared = _declared()
    undeclared = {
        module: (dists, where)
        for module, (dists, where) in _third_party().items()
        if not dists & declared
    }
    assert undeclared == {}, "imported at run time but not in [project] dependencies"


def test_no_declared_runtime_dependency_is_left_unused():
    used = set().union(*(dists for dists, _ in _third_party().values()))
    # run-time parts used without an import by name: uvicorn's fast loop and parser,
    # SQLAlchemy's PostgreSQL driver, MLflow's model format, FastAPI's page templates, the
    # Dask dashboard
    not_imported = {"uvloop", "httptools", "psycopg", "skops", "jinja2", "bokeh"}
    assert _declared() - used - not_imported == set()


def test_test_only_packages_stay_out_of_the_runtime():
    dev = _declared("dev")
    leaked = {m: w for m, (dists, w) in _third_party().items() if dists & dev}
    assert leaked == {}, "the runtime imports a dev-only package"
    assert "shap" in dev and "shap" not in _declared()


def test_the_library_never_imports_the_service():
    # the service adds its commands and its prediction log through entry points instead
    library = ROOT / "src" / "forecast"
    found = [p.name for p in sorted(library.rglob("*.py")) if "service" in _imports(p)]
    assert found == []


def test_the_service_adds_its_commands_to_the_cli():
    from typer.testing import CliRunner

    from forecast.cli import app

    shown = CliRunner().invoke(app, ["--help"])
    assert shown.exit_code == 0
    for command in ("keys", "log", "serve"):
        assert command in shown.output
    serve = CliRunner().invoke(app, ["serve", "--help"])
    assert serve.exit_code == 0 and "--workers" in serve.output


def _pins(lock: str) -> dict[str, str]:
    text = (ROOT / "requirements" / lock).read_text()
    return {
        _normal(name): version for name, version in re.findall(r"^([^\s#=]+)==(\S+)", text, re.M)
    }


def test_the_locks_pin_every_dependency_with_hashes_and_agree():
    dev, runtime = _pins("dev.lock"), _pins("runtime.lock")
    assert _declared() <= set(runtime) and _declared("dev") <= set(dev)
    assert {name: dev.get(name) for name in runtime} == runtime, "runtime pins what dev pins"
    for lock in ("dev.lock", "runtime.lock"):
        text = (ROOT / "requirements" / lock).read_text()
        pinned = re.findall(r"^\S+==\S+ \\\n    --hash=sha256:[0-9a-f]{64}", text, re.M)
        assert len(pinned) == text.count("=="), f"{lock}: a pin without its hashes"


def test_import_forecast_gives_the_notebook_calls_and_loads_nothing_else():
    code = (
        "import sys, forecast; heavy = {'pandas', 'numpy', 'mlflow', 'lightgbm', 'sklearn'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.stdout.strip() == "[]", loaded.stderr
    import forecast

    for name in forecast.__all__:
        assert callable(getattr(forecast, name)), name
        assert importlib.util.find_spec(f"forecast.{name}") is None, f"{name} is a module's name"
    assert forecast.load_store.__name__ == "read_store"
