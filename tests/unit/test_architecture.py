"""docs/architecture.md stays true: every module its diagram names exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def test_every_module_the_diagram_names_exists():
    diagram = DOC.read_text().split("```mermaid", 1)[1].split("```", 1)[0]
    named = set(re.findall(r'"((?:forecast|service)(?:\.[a-z_]+)+)"', diagram))
    assert len(named) >= 25, named
    missing = sorted(m for m in named if importlib.util.find_spec(m) is None)
    assert missing == []
