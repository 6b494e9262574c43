"""The data stage: generate a world or import a source, validate it, and store it atomically."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from forecast.data.sources import RawTable
from forecast.data.store import StoreWrite, current_path, read_store, write_store
from forecast.data.tables import CrmTables
from forecast.data.validate import check
from forecast.data.violations import Violation
from forecast.data.world import CrmWorld, WorldTruth, make_crm

log = logging.getLogger(__name__)

TRUTH_DIR = "truth"


@dataclass(frozen=True)
class ImportResult:
    """What an import did: the stored version and whether anything changed."""

    write: StoreWrite
    tables: CrmTables
    set_aside: tuple[Violation, ...] = ()
    derived: tuple[str, ...] = ()


def import_raw(
    raw: Mapping[str, RawTable],
    *,
    as_of: pd.Timestamp,
    source: str,
    imported_at: pd.Timestamp,
    store: Path | None = None,
    bad_rows: str = "refuse",
    on_step: Callable[[str], None] | None = None,
) -> ImportResult:
    """Validate raw tables and store them; on any violation nothing is written.

    `bad_rows` says what happens to rows out of time order (see `forecast.data.validate.check`).

    Raises:
        forecast.data.validate.ValidationError: with every violation found.
    """
    step = on_step or (lambda name: None)
    step("validating")
    checked = check(raw, as_of=as_of, bad_rows=bad_rows)
    tables = checked.tables
    step("writing the store")
    result = write_store(tables, source=source, imported_at=imported_at, store=store)
    log.info(
        "%s %s as version %s (%s)",
        "stored" if result.changed else "unchanged:",
        source,
        result.version,
        ", ".join(f"{k} {v:,}" for k, v in result.rows.items()),
    )
    return ImportResult(result, tables, checked.set_aside, checked.derived)


def store_world(
    world: CrmWorld, *, source: str, imported_at: pd.Timestamp, store: Path | None = None
) -> StoreWrite:
    """Store a generated world with its latent truth beside the tables, in one atomic write."""
    truth = world.truth
    attachments = {
        f"{TRUTH_DIR}/deal_advance": truth.deal_advance,
        f"{TRUTH_DIR}/reps": truth.reps,
        f"{TRUTH_DIR}/account_months": truth.account_months,
    }
    return write_store(
        world.tables, source=source, imported_at=imported_at, store=store, attachments=attachments
    )


def generate(
    n_deals: int,
    *,
    seed: int,
    imported_at: pd.Timestamp,
    as_of: str = "2026-11-15",
    dirt: float = 0.0,
    store: Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> tuple[CrmWorld, StoreWrite]:
    """Generate the world for `seed` and store it (the same seed stores the same bytes)."""
    world = make_crm(n_deals, seed=seed, as_of=as_of, dirt=dirt, on_step=on_step)
    if on_step:
        on_step("writing the store")
    source = f"generated: make_crm(n_deals={n_deals}, seed={seed}, as_of={as_of}, dirt={dirt})"
    return world, store_world(world, source=source, imported_at=imported_at, store=store)


def read_world(store: Path | None = None) -> CrmWorld | None:
    """The stored tables with their truth, or None when the store holds imported (real) data."""
    tables = read_store(store)
    truth_dir = current_path(store) / TRUTH_DIR
    if not truth_dir.is_dir():
        return None
    truth = WorldTruth(
        deal_advance=pd.read_parquet(truth_dir / "deal_advance.parquet"),
        reps=pd.read_parquet(truth_dir / "reps.parquet"),
        account_months=pd.read_parquet(truth_dir / "account_months.parquet"),
    )
    return CrmWorld(tables=tables, truth=truth)
