"""Read a CRM export of any shape, described by a small YAML mapping file.

The mapping says, per canonical table, which file holds it and which source column feeds each
canonical column; it can also translate values (`Closed Won` -> `closed_won`), fill constants,
convert dates and numbers written in a local format, and derive `deals.outcome` from the stage.
The reader only renames and reshapes: what it produces is still text with the user's line
numbers, and `forecast.data.validate` decides what is acceptable. Problems in the mapping file
itself are raised as `forecast.data.validate.ValidationError` with table `mapping`, so the CLI
reports them like data errors.

The format (only `tables` and each table's `file` are required; docs/importing.md walks through
an example)::

    as_of: 2024-06-30                  # the export's as-of; else the caller decides
    defaults:                          # for every table that does not say otherwise
      delimiter: ","
      encoding: utf-8
      date_format: "%m/%d/%Y"          # strptime format of date, datetime and month columns
      decimal: "."                     # decimal mark of number columns
      thousands: ""                    # thousands separator of number columns, if any
    tables:
      deals:                           # a canonical table name
        file: Opportunities.csv        # relative to the export folder, else the mapping's folder
        delimiter: ";"                 # any default, overridden for this table
        date_formats: {closed_at: "%d.%m.%Y %H:%M"}   # per-column date format
        columns: {deal_id: Opportunity ID, amount: Amount (EUR)}  # canonical: source column
        constants: {discount: "0"}     # one value for every row
        values:                        # per canonical column: source value -> canonical value
          stage: {Closed Won: closed_won, Closed Lost: closed_lost}
        derive: {outcome: from_stage}  # closed_won -> won, closed_lost -> lost, else open

A source column whose header already is the canonical name needs no entry. Dates that do not
parse in the given format and values missing from a value map are passed on unchanged, so
`validate` reports them with their file and line. The mapping file is read with YAML's
text-only loader, so `Yes`, `No`, `01` or `1,5` stay exactly as written.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from forecast.data.contract import Table
from forecast.data.schema import TABLES
from forecast.data.sources import RawTable
from forecast.data.sources.conversions import (
    column_plan,
    convert_formats,
    derive_columns,
    translate,
)
from forecast.data.sources.files import read_csv
from forecast.data.sources.spec import (
    DATE_TYPES,
    DERIVE_RULES,
    UNMAP,
    MappingFile,
    ReadOptions,
    SpecProblems,
    TableMapping,
    check_names,
    load_spec,
)
from forecast.data.violations import ValidationError, Violation

PRESET_DIR = Path(__file__).resolve().parent / "presets"

ATTRIBUTES = "deal_attributes"

CORRECTING_RULES = frozenset({"closed_from_outcome", "when_closed"})  # they read the column itself

ATTRIBUTE_KEY = ".attributes"  # soft[table + this]: the attributes a preset (not the mapping) gives


def read_with_columns(path: Path, table: str, columns: Sequence[str], *, what: str) -> RawTable:
    """Read a CSV that a built-in adapter expects, refusing it clearly if it is not that file.

    Args:
        path: the file.
        table: the canonical table it feeds (names the problems).
        columns: header names the adapter reads.
        what: how to name the expected file in messages, e.g. "the maven-crm dataset".

    Raises:
        ValidationError: the file is missing, unreadable, or lacks some of `columns`.
    """
    if not Path(path).is_file():
        raise ValidationError(
            [
                Violation(
                    table, str(path), "", "", "", f"the file {Path(path).name} of {what}", "file"
                )
            ]
        )
    raw = read_csv(path, table)
    missing = [c for c in columns if c not in raw.frame.columns]
    if missing:
        found = ", ".join(map(str, raw.frame.columns))
        raise ValidationError(
            [
                Violation(
                    table,
                    str(path),
                    "line 1",
                    column,
                    "",
                    f"a column {column!r} as in {what}; the header has: {found}",
                    "missing_column",
                )
                for column in missing
            ]
        )
    return raw


def read_mapped(
    export_dir: Path,
    mapping_file: Path,
    *,
    as_of: pd.Timestamp | None = None,
    now: pd.Timestamp | None = None,
) -> tuple[dict[str, RawTable], pd.Timestamp | None]:
    """Read the export in `export_dir` as the mapping file describes.

    Args:
        export_dir: the folder holding the exported files.
        mapping_file: the YAML mapping (format in the module docstring and docs/importing.md).
        as_of: the export's as-of when the caller sets it (it wins over the mapping's); a close
            kept as a whole day (`when_closed`) never lies after the as-of in force.
        now: the as-of in force when neither the caller nor the mapping gives one.

    Returns:
        The canonical raw tables (text values with the export's line numbers) and the mapping's
        `as_of`, or None when it gives none.

    Raises:
        ValidationError: the mapping file is unreadable or wrong (unknown table or column, a
            missing file or source column, a required column left unmapped, ...). Every
            problem is listed with its key path and line in the mapping file.
    """
    export_dir, mapping_file = Path(export_dir), Path(mapping_file)
    mapping, problems = load_spec(mapping_file, MappingFile)
    tables, soft = _with_preset(mapping, export_dir, mapping_file.parent, problems)
    raw: dict[str, RawTable] = {}
    for name, table_map in tables.items():
        # A table whose names are wrong is not read, but the others are: one run lists all.
        if not check_names(name, table_map, problems):
            continue
        options = ReadOptions.resolve(table_map, mapping.defaults)
        table = _read_table(
            name,
            table_map,
            options,
            export_dir=export_dir,
            mapping_dir=mapping_file.parent,
            problems=problems,
            soft=soft.get(name),
            as_of=as_of or mapping.as_of or now,
            soft_attributes=soft.get(f"{name}{ATTRIBUTE_KEY}", set()),
        )
        if table is not None:
            raw[name], attributes = table
            if attributes is not None:
                raw[ATTRIBUTES] = attributes
    problems.raise_if_any()
    return raw, mapping.as_of


def preset_mapping(name: str) -> MappingFile:
    """A built-in preset (src/forecast/sources/presets/NAME.yaml), itself a mapping file."""
    mapping, _ = load_spec(PRESET_DIR / f"{name}.yaml", MappingFile)
    return mapping


def _with_preset(
    mapping: MappingFile, export_dir: Path, mapping_dir: Path, problems: SpecProblems
) -> tuple[dict[str, TableMapping], dict[str, set[str]]]:
    """The tables to read: the preset's under the mapping's own, and the preset's columns.

    The mapping's keys win; `columns`, `constants`, `values`, `date_formats` and `derive` merge
    key by key, and a column mapped to `-` is dropped. A preset table whose file is not in the
    export is skipped (deals excepted); a column the preset maps that the file lacks is skipped
    unless the contract requires it. Returns the tables and, per table, the preset's columns.
    """
    if mapping.preset is None:
        if not mapping.tables:
            problems.add(("tables",), "", "at least one table (or a `preset`)", "format")
        for name, table_map in mapping.tables.items():
            if table_map.file is None:
                problems.add(
                    ("tables", name, "file"), "", "the key 'file', which is required", "format"
                )
        problems.raise_if_any()
        # `-` leaves a column out with or without a preset (the leak guard's fix says so)
        return {name: _drop_unmapped(t) for name, t in mapping.tables.items()}, {}
    preset = preset_mapping(mapping.preset)
    tables: dict[str, TableMapping] = {}
    soft: dict[str, set[str]] = {}
    for name in dict.fromkeys([*preset.tables, *mapping.tables]):
        base, own = preset.tables.get(name), mapping.tables.get(name)
        merged = _merge(base, own)
        if merged.file is None:
            problems.add(
                ("tables", name, "file"), "", "the key 'file', which is required", "format"
            )
            continue
        if (
            own is None
            and name != "deals"
            and _find_file(merged.file, export_dir, mapping_dir) is None
        ):
            continue  # the export does not hold this table: it is optional
        tables[name] = merged
        soft[name] = set(base.columns) - set(own.columns if own else ()) if base else set()
        preset_attributes = (
            set(base.attributes) - set(own.attributes if own else ()) if base else set()
        )
        soft[f"{name}{ATTRIBUTE_KEY}"] = preset_attributes
    problems.raise_if_any()
    return tables, soft


def _merge(base: TableMapping | None, own: TableMapping | None) -> TableMapping:
    if base is None or own is None:
        chosen = base or own
        assert chosen is not None
        return _drop_unmapped(chosen)
    merged = base.model_dump()
    for key, value in own.model_dump().items():
        if isinstance(value, dict):
            if key == "values":
                for column, translation in value.items():
                    merged[key][column] = {**merged[key].get(column, {}), **translation}
            else:
                merged[key] = {**merged[key], **value}
        elif value is not None:
            merged[key] = value
    # the mapping's own column replaces a preset's constant, and its constant a preset's column
    merged["constants"] = {
        c: v for c, v in merged["constants"].items() if c not in own.columns or c in own.constants
    }
    merged["columns"] = {c: v for c, v in merged["columns"].items() if c not in own.constants}
    # a column the mapping maps itself is not derived the preset's way (unless it says so),
    # but a rule that only corrects the mapped column (a closed deal's stage from its outcome,
    # a close date kept for closed deals) still applies to the column mapped in its place
    merged["derive"] = {
        c: rule
        for c, rule in merged["derive"].items()
        if c in own.derive
        or (c not in own.constants and (c not in own.columns or rule in CORRECTING_RULES))
    }
    return _drop_unmapped(TableMapping.model_validate(merged))


def _drop_unmapped(table_map: TableMapping) -> TableMapping:
    """`column: "-"` removes a column (and its derive rule) that a preset maps."""
    dropped = {c for c, v in table_map.columns.items() if v == UNMAP}
    if not dropped:
        return table_map
    return table_map.model_copy(
        update={
            "columns": {c: v for c, v in table_map.columns.items() if c not in dropped},
            "derive": {
                c: rule
                for c, rule in table_map.derive.items()
                if DERIVE_RULES.get(("deals", c), ("", ""))[1] not in dropped
            },
        }
    )


def _read_table(
    name: str,
    table_map: TableMapping,
    options: ReadOptions,
    *,
    export_dir: Path,
    mapping_dir: Path,
    problems: SpecProblems,
    soft: set[str] | None = None,
    as_of: pd.Timestamp | None = None,
    soft_attributes: set[str] | frozenset[str] = frozenset(),
) -> tuple[RawTable, RawTable | None] | None:
    """Read one table's file, then rename, translate and convert its columns.

    `soft` columns (a preset's) are skipped when the file lacks them and they are not required.
    """
    table = TABLES[name]
    assert table_map.file is not None, "every table's file is checked with the mapping"
    path = _find_file(table_map.file, export_dir, mapping_dir)
    if path is None:
        where = export_dir if export_dir == mapping_dir else f"{export_dir} or {mapping_dir}"
        problems.add(
            ("tables", name, "file"), table_map.file, f"a file that exists in {where}", "file"
        )
        return None
    try:
        source = read_csv(path, name, delimiter=options.delimiter, encoding=options.encoding)
    except ValidationError as exc:
        # The file itself is unreadable (encoding, ragged rows, ...): as the file reader says,
        # an empty file's header named as the export's (the mapping's columns), not the contract's
        mapped = ", ".join(dict.fromkeys(v for v in table_map.columns.values() if v != UNMAP))
        problems.violations.extend(
            dataclasses.replace(
                v, expected=f"a header line with the columns {mapped}: the file is empty"
            )
            if v.check == "empty" and mapped
            else v
            for v in exc.violations
        )
        return None
    header = [str(c) for c in source.frame.columns]
    if soft:
        table_map = _without_absent(table_map, table, soft, header)
    plan = column_plan(name, table, table_map, header, path, problems)
    if plan is None:
        return None
    frame = pd.DataFrame(
        {canonical: source.frame[src].to_numpy() for canonical, src in plan.items()},
        index=pd.RangeIndex(len(source.frame)),
    )
    for column, value in table_map.constants.items():
        frame[column] = value
    for column, value_map in table_map.values.items():
        if column in frame:
            frame[column] = translate(frame[column], value_map)
    if not convert_formats(frame, table, table_map, options, name, problems):
        return None
    derive_columns(frame, table_map.derive, as_of)
    lines = source.lines
    if table_map.one_row_per is not None:
        frame, lines = _one_row_per(frame, lines, table_map.one_row_per, table)
    translated = {column: dict(m) for column, m in table_map.values.items() if column in frame}
    raw = RawTable(name=name, frame=frame, source=source.source, lines=lines, translated=translated)
    attributes = _attributes(frame, source, table_map, soft_attributes, problems)
    return raw, attributes


def _one_row_per(
    frame: pd.DataFrame, lines: np.ndarray | None, key: str, table: Table
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """One row per `key`: the earliest by the table's first date column (an account's first
    order gives its created_at), else the first in the file; rows without a key are dropped
    (an order line without a customer belongs to no account)."""
    dated = next((c.name for c in table.columns if c.type in DATE_TYPES and c.name in frame), None)
    order = np.arange(len(frame))
    if dated is not None:
        # dates are ISO text or timestamps here: both sort as time; a blank one sorts last
        when = frame[dated].astype("string").fillna("\uffff").to_numpy()
        order = np.lexsort((order, when))
    keys = frame[key].astype("string").str.strip().replace("", pd.NA).iloc[order]
    kept = np.sort(order[keys.notna().to_numpy() & ~keys.duplicated().to_numpy()])
    return frame.iloc[kept].reset_index(drop=True), None if lines is None else lines[kept]


def _without_absent(
    table_map: TableMapping, table: Table, soft: set[str], header: list[str]
) -> TableMapping:
    """`table_map` without the `soft` columns (a preset's) that the file lacks and the table
    does not require."""
    absent = {c for c in soft if table_map.columns.get(c) not in header}
    optional = {c for c in absent if not table.column(c).required or c in table_map.derive}
    columns = {c: (UNMAP if c in optional else v) for c, v in table_map.columns.items()}
    return _drop_unmapped(table_map.model_copy(update={"columns": columns}))


def _attributes(
    deals: pd.DataFrame,
    source: RawTable,
    table_map: TableMapping,
    from_preset: set[str] | frozenset[str],
    problems: SpecProblems,
) -> RawTable | None:
    """The deals' extra columns as long `deal_attributes` rows, each with the file's line.

    A preset's attribute whose column the file lacks is skipped; the mapping's own is an error.
    """
    header = [str(c) for c in source.frame.columns]
    rows = []
    for name, attribute in table_map.attributes.items():
        if attribute.column not in header:
            if name not in from_preset:
                close = difflib.get_close_matches(attribute.column, header, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                problems.add(
                    ("tables", "deals", "attributes", name, "column"),
                    attribute.column,
                    f"a column of the deals' file; {hint}its columns are: {', '.join(header)}",
                    "source_column",
                )
            continue
        rows.append(
            pd.DataFrame(
                {
                    "deal_id": deals["deal_id"].to_numpy(),
                    "name": name,
                    "value": source.frame[attribute.column].to_numpy(),
                    "known_at": attribute.known_at,
                    "line": np.arange(len(deals)) if source.lines is None else source.lines,
                }
            )
        )
    if not rows:
        return None
    frame = pd.concat(rows, ignore_index=True)
    lines = frame.pop("line").to_numpy()
    return RawTable(ATTRIBUTES, frame, source.source, None if source.lines is None else lines)


def _find_file(file: str, export_dir: Path, mapping_dir: Path) -> Path | None:
    """The export folder first: one mapping may serve many exports of the same CRM."""
    candidate = Path(file)
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for folder in (export_dir, mapping_dir):
        if (folder / candidate).is_file():
            return folder / candidate
    return None
