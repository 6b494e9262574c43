"""`python -m forecast.cli`: the `forecast` command (MLproject runs it so)."""

from forecast.cli import run

run()
