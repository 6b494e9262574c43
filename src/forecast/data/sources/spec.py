"""The mapping file's format, and problems in any YAML source description (a mapping, a SQL
spec) reported with their line and the keys allowed there."""

from __future__ import annotations

import codecs
import difflib
import re
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import pandas as pd
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticError

from forecast.data.cells import iso_moment
from forecast.data.contract import Table
from forecast.data.schema import TABLES
from forecast.data.violations import ValidationError, Violation

DATE_TYPES = ("date", "datetime", "month")
NUMBER_TYPES = ("float", "int")

MAPPING_TABLE = "mapping"

"""The `table` of every violation about a mapping or spec file (not about the data)."""

# (table, column) -> the derive rule it allows, and what the rule needs mapped
DERIVE_RULES: dict[tuple[str, str], tuple[str, str]] = {
    ("deals", "outcome"): ("from_stage", "stage"),
    ("deals", "closed_at"): ("when_closed", "closed_at"),
    ("deals", "stage"): ("closed_from_outcome", "outcome"),
}

UNMAP = "-"

"""A column mapped to `-` is left out (to drop a column a preset maps)."""

M = TypeVar("M", bound=BaseModel)


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
    # the file repeats each key on many rows (a customer on every order line): keep one per key
    one_row_per: str | None = Field(default=None, min_length=1)


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
            return iso_moment(str(value))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"an ISO date like 2024-06-30, not {value!r}") from exc


@dataclass(frozen=True)
class ReadOptions:
    """A table's effective file options: its own, else the defaults, else the built-ins."""

    delimiter: str
    encoding: str
    date_format: str | None
    decimal: str
    thousands: str

    @classmethod
    def resolve(cls, table: TableMapping, defaults: FileOptions) -> ReadOptions:
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


def check_names(name: str, table_map: TableMapping, problems: SpecProblems) -> bool:
    """The table and every column it names exist in the contract, each given once."""
    before = len(problems.violations)
    table = TABLES.get(name)
    if table is None:
        problems.add(
            ("tables", name), name, f"a canonical table: {choices_text(name, TABLES)}", "table"
        )
        return False
    for section, columns in column_sections(table_map):
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
    _check_derive(name, table_map, problems)
    _check_attributes(name, table_map, problems)
    _check_one_row_per(name, table, table_map, problems)
    for column in table_map.date_formats:
        if column in table.column_names and table.column(column).type not in DATE_TYPES:
            problems.add(
                ("tables", name, "date_formats", column),
                column,
                "a date, datetime or month column",
                "date_format",
            )
    return len(problems.violations) == before


def _check_derive(name: str, table_map: TableMapping, problems: SpecProblems) -> None:
    """Each derived column is one the contract derives that way, and is not also mapped."""
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


def _check_attributes(name: str, table_map: TableMapping, problems: SpecProblems) -> None:
    """Attributes only on deals, each named as a feature can be."""
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


def _check_one_row_per(
    name: str, table: Table, table_map: TableMapping, problems: SpecProblems
) -> None:
    """`one_row_per` names the table's key, mapped from the file."""
    key = table_map.one_row_per
    if key is None:
        return
    if table.key != (key,):
        problems.add(
            ("tables", name, "one_row_per"),
            key,
            f"the key of {name}: {', '.join(table.key)}, which one_row_per keeps one row each of"
            if len(table.key) == 1
            else f"a table keyed by one column ({name} is keyed by {', '.join(table.key)})",
            "one_row_per",
        )
    elif key not in table_map.columns:
        problems.add(
            ("tables", name, "one_row_per"),
            key,
            f"{key} mapped under `columns` (the file's column that repeats it)",
            "one_row_per",
        )


def column_sections(table_map: TableMapping) -> Iterator[tuple[str, list[str]]]:
    yield "columns", list(table_map.columns)
    yield "constants", list(table_map.constants)
    yield "values", list(table_map.values)
    yield "derive", list(table_map.derive)
    yield "date_formats", list(table_map.date_formats)
