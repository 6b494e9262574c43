"""The data stage: generate a world or import a source, validate it, and store it atomically."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from forecast.data.sources import RawTable
from forecast.data.store import (
    StorePart,
    StoreWrite,
    current_path,
    read_frame,
    read_version,
    write_store,
)
from forecast.data.tables import CrmTables
from forecast.data.validate import LEARNED_FROM, Checked, check, nothing_to_learn, validate
from forecast.data.violations import ValidationError, Violation
from forecast.data.world import CrmWorld, WorldTruth, make_crm

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

TRUTH_DIR = "truth"


@dataclass(frozen=True)
class ImportResult:
    """What an import did: the stored version and whether anything changed; the tables (None
    for an import in parts: never whole in memory)."""

    write: StoreWrite
    tables: CrmTables | None
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
    translations = {name: table.translated for name, table in raw.items() if table.translated}
    tables = checked.tables.replace(translations=translations)
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


def import_in_parts(
    folder: Path,
    parts: int,
    *,
    as_of: pd.Timestamp,
    imported_at: pd.Timestamp,
    store: Path | None = None,
    bad_rows: str = "refuse",
    client: Client | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ImportResult:
    """Import a folder of canonical files (`read_folder`'s, a table's rows in one file or in a
    folder of them) a part at a time, for exports larger than memory: the files split by
    account into `parts` (`forecast.data.split`, on `client`'s workers when given), each part
    checked against the contract as `import_raw` checks a whole export and stored as a part of
    the store (`write_store_parts`); keys and references across parts checked by Dask before
    the version becomes current. Memory holds one file or one part at a time.

    Raises:
        forecast.data.validate.ValidationError: every problem of every part (each row located
            in its file); nothing stored.
        forecast.data.parts.PartsError: the parts together break the contract; nothing stored.
    """
    import tempfile

    from forecast.data.parts import check_across_parts
    from forecast.data.sources.files import read_table, table_files
    from forecast.data.split import WHOLE, checked_parts, split_export
    from forecast.data.store import scratch_folder, write_store_parts

    step = on_step or (lambda name: None)
    files = table_files(folder)
    whole = {name: read_table(files[name], name) for name in WHOLE if name in files}
    check(whole, as_of=as_of)  # alone first: their problems said once, not by every part
    noted = _Noted(given={n: str(files[n]) for n in LEARNED_FROM if n in files})
    with tempfile.TemporaryDirectory(dir=scratch_folder(store=store)) as split:
        step("splitting the files by account")
        split_export(files, parts, Path(split), client=client)
        each = checked_parts(
            Path(split), parts, whole, files, as_of=as_of, bad_rows=bad_rows, client=client
        )
        write = write_store_parts(
            noted.stored(each, step),
            as_of=as_of,
            source=f"{Path(folder).resolve()} ({parts} parts)",
            imported_at=imported_at,
            store=store,
            check=partial(check_across_parts, client=client),
        )
    return ImportResult(write, None, tuple(noted.set_aside), tuple(sorted(noted.derived)))


@dataclass
class _Noted:
    """What the checked parts of an import in parts set aside and derived, as they are stored."""

    given: dict[str, str] = field(default_factory=dict)  # learned-from tables: their files
    set_aside: list[Violation] = field(default_factory=list)
    derived: set[str] = field(default_factory=set)

    def stored(
        self, checked: Iterable[Checked | ValidationError], step: Callable[[str], None]
    ) -> Iterator[StorePart]:
        """Each checked part as a part of the store (the tables every part refers to in the
        first only); every part's problems in one error after the last."""
        from forecast.data.split import WHOLE

        errors, learned = [], 0
        for number, part in enumerate(checked):
            step(f"checked part {number + 1}")
            if isinstance(part, ValidationError):
                errors.append(part)
                continue
            self.set_aside.extend(part.set_aside)
            self.derived.update(part.derived)
            learned += sum(len(part.tables[name]) for name in LEARNED_FROM)
            tables = part.tables.items()
            yield StorePart({n: f for n, f in tables if number == 0 or n not in WHOLE})
        if errors:
            raise ValidationError.merge(errors)
        if self.given and not learned:  # as `check` refuses it whole: never made current
            set_aside = len(self.set_aside)
            raise ValidationError(
                nothing_to_learn(name, source, set_aside=set_aside)
                for name, source in self.given.items()
            )


def validate_in_parts(folder: Path, parts: int, **options: Any) -> ImportResult:
    """`import_in_parts` into a store of its own, removed after: the whole check of an export
    larger than memory (the checks across parts read the parts as stored), nothing kept.
    `options`: `import_in_parts`'s but `store`."""
    import tempfile

    from forecast.data.store import scratch_folder

    with tempfile.TemporaryDirectory(dir=scratch_folder(), prefix="validate-") as store:
        return import_in_parts(folder, parts, store=Path(store), **options)


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


def generate_in_parts(
    n_deals: int,
    parts: int,
    *,
    seed: int,
    imported_at: pd.Timestamp,
    as_of: str = "2026-11-15",
    store: Path | None = None,
    client: Client | None = None,
    on_step: Callable[[str], None] | None = None,
) -> StoreWrite:
    """Generate a world in `parts` parts (`make_crm_parts`) and store it part by part: memory
    holds one part, whatever `n_deals`. Each part is checked against the contract as it is
    made; keys and references across parts by Dask (`forecast.data.parts`, on `client`'s
    cluster when given) before the version becomes current.

    Raises:
        forecast.data.validate.ValidationError: a part breaks the contract; nothing stored.
        forecast.data.parts.PartsError: the parts together do; nothing stored.
    """
    from forecast.data.parts import check_across_parts
    from forecast.data.store import write_store_parts
    from forecast.data.world import make_crm_parts

    worlds = make_crm_parts(n_deals, parts, seed=seed, as_of=as_of, on_step=on_step)
    source = (
        f"generated: make_crm_parts(n_deals={n_deals}, parts={parts}, seed={seed}, as_of={as_of})"
    )
    return write_store_parts(
        _store_parts(worlds), as_of=pd.Timestamp(as_of), source=source,
        imported_at=imported_at, store=store, check=partial(check_across_parts, client=client),
    )  # fmt: skip


ONCE = ("reps", "products")  # the same in every part of a generated world: stored from the first
SUMMED = "targets"  # each part's share of the quotas: stored once, summed


def _store_parts(worlds: Iterable[CrmWorld]) -> Iterator[StorePart]:
    """Each generated part, checked against the contract, as a part of the store; the quotas
    summed over the parts as a last part."""
    targets = []
    for number, world in enumerate(worlds):
        tables = world.tables
        validate(
            {n: RawTable(n, f, f"part {number}") for n, f in tables.items()}, as_of=tables.as_of
        )
        kept = {n: f for n, f in tables.items() if n != SUMMED and (number == 0 or n not in ONCE)}
        truth = {f"{TRUTH_DIR}/deal_advance": world.truth.deal_advance,
                 f"{TRUTH_DIR}/account_months": world.truth.account_months}  # fmt: skip
        if number == 0:
            truth[f"{TRUTH_DIR}/reps"] = world.truth.reps
        targets.append(tables.targets)
        yield StorePart(kept, truth)
    summed = pd.concat(targets).groupby(["level", "owner", "period"], sort=False, as_index=False)
    yield StorePart({SUMMED: summed["amount"].sum()})


def read_world(store: Path | None = None, tables: Sequence[str] | None = None) -> CrmWorld | None:
    """The stored tables (only `tables` when given, the others empty) with their truth, or None
    when the store holds imported (real) data."""
    folder = current_path(store)
    crm = read_version(folder, tables)
    truth_dir = folder / TRUTH_DIR
    if not truth_dir.is_dir():
        return None
    truth = WorldTruth(
        deal_advance=read_frame(truth_dir / "deal_advance.parquet"),
        reps=read_frame(truth_dir / "reps.parquet"),
        account_months=read_frame(truth_dir / "account_months.parquet"),
    )
    return CrmWorld(tables=crm, truth=truth)
