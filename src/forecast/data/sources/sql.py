"""Read the canonical tables from a SQL database (a warehouse, the CRM's own database).

Per canonical table the source is a table name (`crm_deals`, `crm.deals`) or a SELECT query
whose result has the canonical column names (`select id as deal_id, ... from opportunity`); a
table not named falls back to a database table of the canonical name, when there is one. Values
keep the types the database returns (numbers, timestamps with or without zone, dates);
`forecast.data.validate` converts and checks them like any other source.

A spec file keeps the choice in one place, with the password taken from the environment::

    url: postgresql+psycopg://forecast:${CRM_DB_PASSWORD}@warehouse/crm
    tables:
      deals: select opportunity_id as deal_id, ... from crm.opportunity
      reps: crm_users          # a table name: read as is

URLs are shown only with the password masked (`URL.render_as_string(hide_password=True)`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from pydantic import Field

from forecast.data.schema import TABLES
from forecast.data.sources import RawTable
from forecast.data.sources.spec import SpecProblems, StrictModel, choices_text, load_spec
from forecast.data.violations import ValidationError, Violation

_QUERY = re.compile(r"^\s*(select|with|\()", re.IGNORECASE)
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# What `sqlalchemy.text` would take for a bind parameter (`:name`); queries here have none.
_BIND = re.compile(r"(?<![:\w\\]):(?=\w)")


class SqlSpec(StrictModel):
    """A SQL source: where the database is and, per canonical table, what to read."""

    url: str = Field(min_length=1)
    tables: dict[str, str] = Field(default_factory=dict)


def read_sql(url: str | sa.URL, sources: Mapping[str, str] | None = None) -> dict[str, RawTable]:
    """Read canonical tables from the database at `url`.

    Args:
        url: a SQLAlchemy URL, e.g. `postgresql+psycopg://user:pw@host/db` or `sqlite:///crm.db`
            (text or a `sqlalchemy.URL`).
        sources: per canonical table, a table name (optionally `schema.table`) or a SELECT (or
            WITH) query returning canonical column names. Tables not listed are read from a table
            of the canonical name when one exists in the default schema, else left out.

    Returns:
        The raw tables found, in contract order; values typed as the database returns them and
        rows numbered from 1 in reading order.

    Raises:
        ValidationError: an unknown canonical table name, a URL that cannot be used, a database
            that cannot be reached, no table found at all, or a table or query that fails (each
            named, with the first line of the database's error). Every failing table is listed,
            not just the first.
    """
    sources = dict(sources or {})
    violations = [
        _violation(name, "", "", name, f"one of the canonical tables {', '.join(TABLES)}", "table")
        for name in sources
        if name not in TABLES
    ]
    if violations:
        raise ValidationError(violations)
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError, ValueError) as exc:
        # The URL may hold a password: never echo it, only what is wrong with it.
        raise ValidationError(
            [_violation("", "", "url", "", f"a SQLAlchemy URL ({_first_line(exc)})", "url")]
        ) from None
    label = engine.url.render_as_string(hide_password=True)
    try:
        raw = _read_tables(engine, sources, label, violations)
    finally:
        engine.dispose()
    if not raw and not violations:
        names = ", ".join(TABLES)
        expected = (
            f"at least one table named {names} in the default schema, or a table or query "
            "per canonical table (a spec file's `tables:`); none was found"
        )
        violations.append(_violation("", label, "", "", expected, "empty"))
    if violations:
        raise ValidationError(violations)
    return raw


def _read_tables(
    engine: sa.Engine, sources: Mapping[str, str], label: str, violations: list[Violation]
) -> dict[str, RawTable]:
    """Every canonical table the database has (or `sources` names), in contract order; each
    table that fails, or a connection that fails, is added to `violations`."""
    raw: dict[str, RawTable] = {}
    try:
        with engine.connect() as conn:
            for name in TABLES:
                spec = sources.get(name) or _default_table(conn, name)
                if spec is None:
                    continue
                try:
                    raw[name] = _read_one(conn, name, spec, label)
                except sa.exc.SQLAlchemyError as exc:
                    # PostgreSQL refuses further statements in a failed transaction.
                    conn.rollback()
                    violations.append(_read_failure(name, spec, label, exc))
    except sa.exc.SQLAlchemyError as exc:
        # Connection errors never carry the password; the URL we show has it masked.
        expected = f"a reachable database ({_first_line(exc)})"
        violations.append(_violation("", label, "", "", expected, "connection"))
    return raw


def read_sql_spec(path: Path) -> dict[str, RawTable]:
    """Read the database described by the YAML spec at `path` (format in the module docstring).

    `${NAME}` in the URL is replaced by the environment variable NAME, so passwords stay out of
    files.

    Returns:
        The raw tables, as `read_sql` returns them.

    Raises:
        ValidationError: the spec file is malformed, names an unknown table or an unset variable,
            or reading the database fails.
    """
    spec, problems = load_spec(Path(path), SqlSpec)
    url = _expand_env(spec.url, problems)
    for name in spec.tables:
        if name not in TABLES:
            problems.add(
                ("tables", name), name, f"a canonical table: {choices_text(name, TABLES)}", "table"
            )
    problems.raise_if_any()
    return read_sql(url, spec.tables)


def _expand_env(url: str, problems: SpecProblems) -> str | sa.URL:
    """Replace `${NAME}` by the variable's value; unset variables are reported, never guessed.

    The URL is split into its parts first, so a password may hold `@`, `/` or `:` without
    being URL-encoded in the variable.
    """

    def expand(text: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                problems.add(
                    ("url",), f"${{{name}}}", f"the environment variable {name} to be set", "env"
                )
                return ""
            return os.environ[name]

        return _ENV_VAR.sub(value, text)

    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return expand(url)  # not parseable before expansion: expand the text as a whole
    return parsed.set(
        username=expand(parsed.username) if parsed.username else parsed.username,
        password=expand(parsed.password) if parsed.password else parsed.password,
        host=expand(parsed.host) if parsed.host else parsed.host,
        database=expand(parsed.database) if parsed.database else parsed.database,
    )


def _default_table(conn: sa.Connection, name: str) -> str | None:
    return name if sa.inspect(conn).has_table(name) else None


def _is_query(spec: str) -> bool:
    """A query starts with SELECT, WITH or a parenthesis, or has spaces (table names do not)."""
    return bool(_QUERY.match(spec)) or any(c.isspace() for c in spec.strip())


def _read_one(conn: sa.Connection, name: str, spec: str, label: str) -> RawTable:
    """One table or query; column names matched to the contract without regard to case."""
    if _is_query(spec):
        # text(), not a plain string: drivers like psycopg would read `%` as a placeholder.
        statement: sa.Executable = sa.text(_BIND.sub(r"\\:", spec))
        source = f"{label}: {name} (query)"
    else:
        schema, _, table_name = spec.rpartition(".")
        table = sa.Table(table_name, sa.MetaData(), schema=schema or None, autoload_with=conn)
        statement = sa.select(table)
        source = f"{label}: {name} (table {spec})"
    frame = pd.read_sql(statement, conn)
    # Some databases (Oracle, Snowflake) return unquoted names in upper case.
    canonical = set(TABLES[name].column_names)
    frame.columns = [
        c.lower() if c not in canonical and str(c).lower() in canonical else c
        for c in frame.columns
    ]
    return RawTable(name=name, frame=frame.reset_index(drop=True), source=source, lines=None)


def _read_failure(name: str, spec: str, label: str, exc: Exception) -> Violation:
    """A table or query that failed, with the database's own first line of explanation."""
    if _is_query(spec):
        source, what = f"{label}: {name} (query)", "a query that runs"
    else:
        source, what = f"{label}: {name} (table {spec})", "an existing table"
    if isinstance(exc, sa.exc.NoSuchTableError):
        reason = f"no table {spec!r} in the database"
    else:
        reason = _first_line(exc)
    return _violation(
        name, source, "", _shorten(spec), f"{what}; the database says: {reason}", "sql"
    )


def _violation(
    table: str, source: str, column: str, value: str, expected: str, check: str
) -> Violation:
    return Violation(
        table=table,
        source=source,
        location="",
        column=column,
        value=value,
        expected=expected,
        check=check,
    )


def _first_line(exc: BaseException) -> str:
    """The database's own message, first line only (SQLAlchemy appends the SQL and a link)."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip() or type(inner).__name__
    return text.splitlines()[0]


def _shorten(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
