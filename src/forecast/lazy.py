"""Public names of a package, each imported from its module on first use.

A stage's `__init__` names what a caller needs without importing its modules: `import
forecast.data` stays cheap for a command that reads one table, and the stages can import each
other's modules without cycles through their packages. A public name is never a submodule's own
name: importing that submodule would replace the function on the package.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_names(
    package: str, public: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose `public` maps a name to its module
    ("forecast.data.store"), or to a module and the name there
    ("forecast.data.store:read_store")."""
    namespace = import_module(package).__dict__

    def public_attribute(name: str) -> Any:
        if name not in public:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = public[name].partition(":")
        value = getattr(import_module(module), attribute or name)
        namespace[name] = value  # found once: later lookups are plain attribute reads
        return value

    def public_names() -> list[str]:
        return sorted(public)

    return public_attribute, public_names
