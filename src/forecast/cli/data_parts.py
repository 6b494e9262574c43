"""`forecast data` on exports and worlds larger than memory: a world generated in parts, an
export imported or validated a part at a time (docs/scale.md)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

from forecast.cli.common import cluster, console, fail, now, steps
from forecast.cli.data_views import print_set_aside, print_violations


def generate_in_parts(
    deals: int, partitions: int, seed: int, as_of: str, dirt: float, where: tuple
) -> None:
    """`data generate --partitions`: the world made and stored part by part."""
    from forecast.data.ingest import generate_in_parts
    from forecast.data.parts import PartsError
    from forecast.data.validate import ValidationError

    if dirt:
        raise fail("--dirt: a world made in parts is clean (generate it whole for untidy rows)", 2)
    if not 1 <= partitions <= deals // 50:
        raise fail(f"--partitions {partitions}: give 1 to {deals // 50} (50 deals a part)", 2)
    try:
        with cluster(*where) as client, steps(partitions + 1, "generating") as on_step:
            result = generate_in_parts(
                deals, partitions, seed=seed, as_of=as_of, imported_at=now(), client=client,
                on_step=on_step,
            )  # fmt: skip
    except (ValidationError, PartsError) as err:
        raise fail(f"the generated world broke the contract, nothing stored: {err}") from None
    verb = "stored" if result.changed else "already stored (unchanged)"
    console.print(f"[green]{verb}[/] version {result.version} in {result.path}")
    rows = ", ".join(f"{name} {count:,}" for name, count in result.rows.items() if count)
    console.print(f"{partitions} parts: {rows}", highlight=False)


def ran_in_parts(
    source: Path | None,
    partitions: int | None,
    other_sources: tuple,
    as_of: str | None,
    bad_rows: str,
    where: tuple,
    *,
    store: bool,
) -> bool:
    """`data import` or `data validate` with `--partitions`: a folder of canonical files, split
    by account, checked a part at a time (and stored so, or into a store removed after); False
    without `--partitions` (a cluster is then refused: a whole export is read here)."""
    from forecast.data.ingest import import_in_parts, validate_in_parts
    from forecast.data.parts import PartsError
    from forecast.data.violations import ValidationError

    if partitions is None:
        if any(where):
            raise fail("an export is read on a cluster a part at a time: give --partitions N", 2)
        return False
    if any(x is not None for x in other_sources):
        only = "a folder of canonical files (one file or one folder of files per table)"
        raise fail(f"--partitions reads {only}, not --mapping, --sql or --adapter", 2)
    if source is None or not source.is_dir():
        raise fail(f"{source or 'the folder'}: give the folder of canonical files", 2)
    run = import_in_parts if store else validate_in_parts
    try:
        with cluster(*where) as client, steps(partitions + 2, "checking") as on_step:
            result = run(
                source, partitions, as_of=pd.Timestamp(as_of) if as_of else now(),
                imported_at=now(), bad_rows=bad_rows, client=client, on_step=on_step,
            )  # fmt: skip
    except ValidationError as err:
        print_violations(err)
        raise typer.Exit(1) from None
    except PartsError as err:
        raise fail(f"the parts together break the contract, nothing stored: {err}") from None
    print_set_aside(result.set_aside, result.derived)
    write = result.write
    rows = ", ".join(f"{name} {count:,}" for name, count in write.rows.items() if count)
    if not store:
        console.print(f"[green]valid[/] ({partitions} parts): {rows}", highlight=False)
        return True
    verb = "imported" if write.changed else "unchanged (same data already stored)"
    console.print(f"[green]{verb}[/]: version {write.version} in {write.path}")
    console.print(f"{partitions} parts: {rows}", highlight=False)
    return True
