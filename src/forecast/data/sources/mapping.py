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

import codecs
import difflib
import re
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import pandas as pd
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticError

from forecast.data.schema import CLOSED_STAGES, TABLES, Table
from forecast.data.sources import RawTable
from forecast.data.sources.files import read_csv
from forecast.data.violations import ValidationError, Violation

MAPPING_TABLE = "mapping"
"""The `table` of every violation about a mapping or spec file (not about the data)."""

DATE_TYPES = ("date", "datetime", "month")
NUMBER_TYPES = ("float", "int")
OUTCOME_OF_STAGE = dict(zip(CLOSED_STAGES, ("won", "lost"), strict=True))
STAGE_OF_OUTCOME = {outcome: stage for stage, outcome in OUTCOME_OF_STAGE.items()}
# (table, column) -> the derive rule it allows, and what the rule needs mapped
DERIVE_RULES: dict[tuple[str, str], tuple[str, str]] = {
    ("deals", "outcome"): ("from_stage", "stage"),
    ("deals", "closed_at"): ("when_closed", "closed_at"),
    ("deals", "stage"): ("closed_from_outcome", "outcome"),
}
PRESET_DIR = Path(__file__).resolve().parent / "presets"
ATTRIBUTES = "deal_attributes"
ATTRIBUTE_KEY = ".attributes"  # soft[table + this]: the attributes a preset (not the mapping) gives
UNMAP = "-"
"""A column mapped to `-` is left out (to drop a column a preset maps)."""
_TIME_DIRECTIVES = ("%H", "%I", "%M", "%S", "%X", "%c", "%T")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
M = TypeVar("M", bound=BaseModel)


# --- the mapping file's format -------------------------------------------------------------------


class StrictModel(BaseModel):
    """Unknown keys are errors: a misspelt option must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


def _check_encoding(value: str) -> str:
    try:
        codecs.lookup(value)
    except LookupError as exc:
        raise ValueError(f"a known encoding such as utf-8 or cp1252, not {value!r}") from exc
    return value


def _check_one_char(value: str) -> str:
    if len(value) != 1:
        raise ValueError(f"one character, not {value!r}")
    return value


Encoding = Annotated[str, AfterValidator(_check_encoding)]
OneChar = Annotated[str, AfterValidator(_check_one_char)]


class FileOptions(StrictModel):
    """How files are written; `None` means "as in `defaults`", else the built-in default."""

    delimiter: OneChar | None = None
    encoding: Encoding | None = None
    date_format: str | None = None
    decimal: OneChar | None = None
    thousands: str | None = None


class AttributeMapping(StrictModel):
    """An export column with no home in the contract, kept as a deal attribute."""

    column: str = Field(min_length=1)
    known_at: Literal["created", "closed"]


class TableMapping(FileOptions):
    """Where one canonical table comes from and how its columns and values translate."""

    file: str | None = Field(default=None, min_length=1)  # required unless a preset names it
    date_formats: dict[str, str] = Field(default_factory=dict)
    columns: dict[str, str] = Field(default_factory=dict)
    constants: dict[str, str] = Field(default_factory=dict)
    values: dict[str, dict[str, str]] = Field(default_factory=dict)
    derive: dict[str, Literal["from_stage", "when_closed", "closed_from_outcome"]] = Field(
        default_factory=dict
    )
    attributes: dict[str, AttributeMapping] = Field(default_factory=dict)  # deals only


class MappingFile(StrictModel):
    """The whole mapping file."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    preset: Literal["salesforce", "hubspot", "zoho", "dynamics"] | None = None
    as_of: pd.Timestamp | None = None
    defaults: FileOptions = Field(default_factory=FileOptions)
    tables: dict[str, TableMapping] = Field(default_factory=dict)

    @field_validator("as_of", mode="before")
    @classmethod
    def _parse_as_of(cls, value: Any) -> pd.Timestamp | None:
        if value in (None, "", "null", "~"):
            return None
        try:
            return pd.Timestamp(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a date like 2024-06-30, not {value!r}") from exc


@dataclass(frozen=True)
class _Options:
    """A table's effective file options: its own, else the defaults, else the built-ins."""

    delimiter: str
    encoding: str
    date_format: str | None
    decimal: str
    thousands: str

    @classmethod
    def resolve(cls, table: TableMapping, defaults: FileOptions) -> _Options:
        def pick(name: str, builtin: str | None) -> Any:
            own = getattr(table, name)
            if own is not None:
                return own
            default = getattr(defaults, name)
            return default if default is not None else builtin

        return cls(
            delimiter=pick("delimiter", ","),
            encoding=pick("encoding", "utf-8"),
            date_format=pick("date_format", None),
            decimal=pick("decimal", "."),
            thousands=pick("thousands", ""),
        )


# --- problems in a YAML source description -------------------------------------------------------


class SpecProblems:
    """Collects the problems of a YAML mapping or spec file, each located by key path and line."""

    def __init__(self, path: Path, root: yaml.Node | None = None) -> None:
        self.path = path
        self.root = root
        self.violations: list[Violation] = []

    def add(self, keys: Sequence[str | int], value: object, expected: str, check: str) -> None:
        """Record one problem at the key path `keys` (e.g. tables, deals, columns, amount)."""
        line = _line_of(self.root, keys)
        self.add_at(f"line {line}" if line else "", keys, value, expected, check)

    def add_at(
        self, location: str, keys: Sequence[str | int], value: object, expected: str, check: str
    ) -> None:
        self.violations.append(
            Violation(
                table=MAPPING_TABLE,
                source=str(self.path),
                location=location,
                column=".".join(str(k) for k in keys) or "(file)",
                value="" if value is None else str(value),
                expected=expected,
                check=check,
            )
        )

    def raise_if_any(self) -> None:
        if self.violations:
            raise ValidationError(self.violations)


def load_spec(path: Path, model: type[M]) -> tuple[M, SpecProblems]:
    """Parse the YAML file at `path` (every scalar read as text) and type-check it with `model`.

    Returns:
        The typed content and a collector that locates further problems by key path and line.

    Raises:
        ValidationError: the file is unreadable, not YAML, or does not fit `model`; every
            problem is listed with its key path and line.
    """
    problems = SpecProblems(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.add((), path, "a readable UTF-8 YAML file", f"unreadable: {exc}")
        problems.raise_if_any()
    try:
        # BaseLoader keeps every scalar as text: `Yes` must stay `Yes`, not become True.
        loader = yaml.BaseLoader(text)
        try:
            problems.root = loader.get_single_node()
            data = loader.construct_document(problems.root) if problems.root else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        problems.add_at(
            f"line {mark.line + 1}" if mark else "", (), "", f"valid YAML ({problem})", "yaml"
        )
        problems.raise_if_any()
    if not isinstance(data, dict):
        problems.add((), "", "a YAML mapping of keys to values", "format")
        problems.raise_if_any()
    try:
        return model.model_validate(data), problems
    except PydanticError as exc:
        for error in exc.errors():
            value = error.get("input")
            problems.add(
                error["loc"],
                "" if isinstance(value, dict | list) else value,
                _expected_from(error, model),
                "format",
            )
        problems.raise_if_any()
    raise AssertionError("unreachable")  # pragma: no cover


def _expected_from(error: Mapping[str, Any], model: type[BaseModel]) -> str:
    """A pydantic error as the words after "expected"."""
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        allowed = _keys_at(model, loc[:-1])
        hint = choices_text(str(loc[-1]), allowed) if allowed else "see docs/importing.md"
        return f"a known key: {hint}"
    if error["type"] == "missing":
        return f"the key {loc[-1]!r}, which is required"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Input should be "):
        message = message.removeprefix(prefix)
    return message


def _keys_at(model: type[BaseModel], path: tuple[str | int, ...]) -> list[str] | None:
    """The keys the model allows at `path` (dict levels skip their key), or None if unknown."""
    current: Any = model
    parts = list(path)
    while parts:
        field = current.model_fields.get(str(parts.pop(0)))
        if field is None:
            return None
        annotation = field.annotation
        if typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
            if parts:
                parts.pop(0)
        models = [a for a in (annotation, *typing.get_args(annotation)) if _is_model(a)]
        if not models:
            return None
        current = models[0]
    return list(current.model_fields)


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _line_of(root: yaml.Node | None, keys: Sequence[str | int]) -> int | None:
    """1-based line of the deepest key of `keys` found in the composed YAML tree."""
    if root is None:
        return None
    node, line = root, root.start_mark.line + 1
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next((kv for kv in node.value if kv[0].value == str(key)), None)
        if match is None:
            break
        line = match[0].start_mark.line + 1
        node = match[1]
    return line


def choices_text(name: str, options: Sequence[str] | Mapping[str, Any]) -> str:
    """The valid names, led by the closest to `name` if one is close."""
    names = list(options)
    close = difflib.get_close_matches(name, names, n=1)
    lead = f"did you mean {close[0]!r}? " if close else ""
    return f"{lead}one of {', '.join(names)}"


# --- reading an export ---------------------------------------------------------------------------


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
        if not _check_names(name, table_map, problems):
            continue
        options = _Options.resolve(table_map, mapping.defaults)
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
        return dict(mapping.tables), {}
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
    # a column the mapping maps itself is not derived the preset's way (unless it says so)
    merged["derive"] = {
        c: rule
        for c, rule in merged["derive"].items()
        if c in own.derive or (c not in own.columns and c not in own.constants)
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


def _check_names(name: str, table_map: TableMapping, problems: SpecProblems) -> bool:
    """The table and every column it names exist in the contract, each given once."""
    before = len(problems.violations)
    table = TABLES.get(name)
    if table is None:
        problems.add(
            ("tables", name), name, f"a canonical table: {choices_text(name, TABLES)}", "table"
        )
        return False
    for section, columns in _column_sections(table_map):
        for column in columns:
            if column not in table.column_names:
                problems.add(
                    ("tables", name, section, column),
                    column,
                    f"a column of {name}: {choices_text(column, table.column_names)}",
                    "column",
                )
    for column in sorted(set(table_map.columns) & set(table_map.constants)):
        problems.add(
            ("tables", name, "constants", column),
            column,
            "each column under `columns` or under `constants`, not both",
            "conflict",
        )
    for column, rule in table_map.derive.items():
        allowed = DERIVE_RULES.get((name, column))
        if allowed is None or allowed[0] != rule:
            rules = ", ".join(f"`{c}: {r}`" for (t, c), (r, _) in DERIVE_RULES.items())
            problems.add(
                ("tables", name, "derive", column),
                column,
                f"`derive` in deals only as one of {rules}",
                "derive",
            )
        elif column in table_map.constants or (
            column in table_map.columns and rule == "from_stage"
        ):
            problems.add(
                ("tables", name, "derive", column),
                column,
                f"{column} either mapped or derived, not both",
                "conflict",
            )
    if table_map.attributes and name != "deals":
        problems.add(
            ("tables", name, "attributes"),
            "",
            "`attributes` only under deals (a deal's extra columns)",
            "attributes",
        )
    for attribute in table_map.attributes:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", attribute):
            problems.add(
                ("tables", name, "attributes", attribute),
                attribute,
                "an attribute name in lower case, digits and _ (it names a feature)",
                "attributes",
            )
    for column in table_map.date_formats:
        if column in table.column_names and table.column(column).type not in DATE_TYPES:
            problems.add(
                ("tables", name, "date_formats", column),
                column,
                "a date, datetime or month column",
                "date_format",
            )
    return len(problems.violations) == before


def _column_sections(table_map: TableMapping) -> Iterator[tuple[str, list[str]]]:
    yield "columns", list(table_map.columns)
    yield "constants", list(table_map.constants)
    yield "values", list(table_map.values)
    yield "derive", list(table_map.derive)
    yield "date_formats", list(table_map.date_formats)


def _read_table(
    name: str,
    table_map: TableMapping,
    options: _Options,
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
        # The file itself is unreadable (encoding, ragged rows, ...): as the file reader says.
        problems.violations.extend(exc.violations)
        return None
    header = [str(c) for c in source.frame.columns]
    if soft:
        absent = {c for c in soft if table_map.columns.get(c) not in header}
        optional = {c for c in absent if not table.column(c).required or c in table_map.derive}
        table_map = _drop_unmapped(
            table_map.model_copy(
                update={
                    "columns": {
                        c: (UNMAP if c in optional else v) for c, v in table_map.columns.items()
                    }
                }
            )
        )
    plan = _column_plan(name, table, table_map, header, path, problems)
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
            frame[column] = _translate(frame[column], value_map)
    if not _convert_formats(frame, table, table_map, options, name, problems):
        return None
    _derive(frame, table_map.derive, as_of)
    raw = RawTable(name=name, frame=frame, source=source.source, lines=source.lines)
    attributes = _attributes(frame, source, table_map, soft_attributes, problems)
    return raw, attributes


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


def _column_plan(
    name: str,
    table: Table,
    table_map: TableMapping,
    header: list[str],
    path: Path,
    problems: SpecProblems,
) -> dict[str, str] | None:
    """Canonical column -> source column; None (with the problems recorded) if it fails."""
    ok = True
    plan: dict[str, str] = {}
    for canonical, src in table_map.columns.items():
        if src in header:
            plan[canonical] = src
            continue
        ok = False
        close = difflib.get_close_matches(src, header, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        problems.add(
            ("tables", name, "columns", canonical),
            src,
            f"a column of {path.name}; {hint}its columns are: {', '.join(header)}",
            "source_column",
        )
    given = {*table_map.columns, *table_map.constants, *table_map.derive}
    # A source column already named like a canonical one needs no entry in the mapping.
    for name_ in table.column_names:
        if name_ not in given and name_ in header:
            plan[name_] = name_
            given.add(name_)
    for column in table.columns:
        if column.required and column.name not in given:
            ok = False
            problems.add(
                ("tables", name, "columns"),
                "",
                f"an entry for the required column {column.name!r} of {name} "
                f"(`{column.name}: <column of {path.name}>`, or a constant)",
                "required",
            )
    for derived, rule in table_map.derive.items():
        needs = DERIVE_RULES.get((name, derived), (rule, ""))[1]
        if needs and needs not in given:
            ok = False
            problems.add(
                ("tables", name, "derive", derived),
                rule,
                f"a mapped `{needs}` column to derive {derived} from",
                "derive",
            )
    return plan if ok else None


def _convert_formats(
    frame: pd.DataFrame,
    table: Table,
    table_map: TableMapping,
    options: _Options,
    name: str,
    problems: SpecProblems,
) -> bool:
    """Local dates and numbers to ISO text, in place; False if a date format is unusable."""
    for column in frame.columns:
        kind = table.column(column).type
        if kind in DATE_TYPES:
            own = column in table_map.date_formats
            fmt = table_map.date_formats[column] if own else options.date_format
            if not fmt:
                continue
            converted = _convert_dates(frame[column], fmt, kind)
            if converted is None:
                keys = ("date_formats", column) if own else ("date_format",)
                problems.add(
                    ("tables", name, *keys), fmt, "a strptime format such as %d.%m.%Y", "format"
                )
                return False
            frame[column] = converted
        elif kind in NUMBER_TYPES and (options.decimal != "." or options.thousands):
            frame[column] = _convert_numbers(frame[column], options.decimal, options.thousands)
    return True


def _is_empty(values: pd.Series) -> pd.Series:
    return values.isna() | (values.astype("string").str.strip() == "")


def _translate(values: pd.Series, value_map: Mapping[str, str]) -> pd.Series:
    """Map values (compared without surrounding spaces); unmapped ones stay for validate."""
    stripped = {str(k).strip(): v for k, v in value_map.items()}
    mapped = values.astype("string").str.strip().map(stripped)
    return values.astype(object).where(mapped.isna(), mapped.astype(object))


def _convert_dates(values: pd.Series, fmt: str, kind: str) -> pd.Series | None:
    """Dates in `fmt` become ISO text; unparseable ones stay raw so validate names their line.

    Returns None when `fmt` is not a usable format at all.
    """
    text = values.astype("string").str.strip()
    try:
        # Offsets may differ from row to row (summer time), so %z formats are read as UTC.
        parsed = pd.to_datetime(
            text.where(~_is_empty(values)), format=fmt, errors="coerce", utc="%z" in fmt
        )
    except ValueError:
        return None
    if kind == "month":
        iso = parsed.dt.strftime("%Y-%m")
    elif kind == "date" or not any(d in fmt for d in _TIME_DIRECTIVES):
        iso = parsed.dt.strftime("%Y-%m-%d")
    else:
        iso = parsed.map(lambda t: t.isoformat(), na_action="ignore")
    return values.astype(object).where(parsed.isna(), iso.astype(object))


def _convert_numbers(values: pd.Series, decimal: str, thousands: str) -> pd.Series:
    """`1.234,50` -> `1234.50` for the given marks; anything else stays raw for validate."""
    text = values.astype("string").str.strip()
    if thousands:
        text = text.str.replace(thousands, "", regex=False)
    if decimal != ".":
        text = text.str.replace(decimal, ".", regex=False)
    good = text.str.fullmatch(_NUMBER).fillna(False).astype(bool)
    return values.astype(object).where(~good, text.astype(object))


def _derive(frame: pd.DataFrame, rules: Mapping[str, str], as_of: pd.Timestamp | None) -> None:
    """Apply the deals' derive rules in place, each from already converted columns."""
    if rules.get("stage") == "closed_from_outcome":
        outcome = frame["outcome"].astype("string").str.strip()
        closed = outcome.map(STAGE_OF_OUTCOME.get, na_action="ignore")
        if "stage" in frame:
            frame["stage"] = (
                frame["stage"].astype(object).where(closed.isna(), closed.astype(object))
            )
        else:
            frame["stage"] = closed.astype(object)
    if rules.get("outcome") == "from_stage":
        frame["outcome"] = _outcome_from_stage(frame["stage"])
    if rules.get("closed_at") == "when_closed" and "outcome" in frame:
        frame["closed_at"] = _closed_at_when_closed(frame, as_of)


def _closed_at_when_closed(frame: pd.DataFrame, as_of: pd.Timestamp | None) -> pd.Series:
    """closed_at kept for closed deals only (many CRMs fill a close date on open deals too).

    A value with no time of day (the CRM keeps only the day) counts as the end of that day,
    so the history's closing row, stamped some time that day, lies before it; never after the
    export's as-of. A value that is not a date stays as written, for validate to report.
    """
    closed = frame["outcome"].astype("string").str.strip().isin(("won", "lost")).fillna(False)
    text = frame["closed_at"].astype("string").str.strip()
    # offsets (summer time, Z) are read as UTC, as validate reads them
    when = pd.to_datetime(text, errors="coerce", format="mixed", utc=True).dt.tz_localize(None)
    day_only = when.notna() & (when == when.dt.normalize()) & ~text.str.contains(":").fillna(False)
    end = when.dt.normalize() + pd.Timedelta(days=1) - pd.Timedelta(seconds=1)
    if as_of is not None:
        limit = pd.Timestamp(as_of)
        end = end.clip(upper=limit.tz_convert(None) if limit.tzinfo else limit)
    iso = end.map(lambda t: t.isoformat(), na_action="ignore")
    values = frame["closed_at"].astype(object).where(~day_only, iso.astype(object))
    return values.where(closed.to_numpy(), None)


def _outcome_from_stage(stage: pd.Series) -> pd.Series:
    """won / lost for the closed stages, open for any other stage; empty stays empty."""
    text = stage.astype("string").str.strip()
    outcome = text.map(lambda s: OUTCOME_OF_STAGE.get(s, "open"), na_action="ignore")
    return stage.astype(object).where(_is_empty(stage), outcome.astype(object))
