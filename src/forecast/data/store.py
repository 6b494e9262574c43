"""The project's store of imported CRM data: versioned Parquet folders behind a `current` link.

Layout under the store path::

    versions/<version>/<table>.parquet   one file per canonical table
    versions/<version>/manifest.json     as-of, source, import time, rows, fingerprint, and
                                         the export's values the import translated
    current -> versions/<version>        the version every reader uses

A write goes to `versions/.tmp-<uuid>`, is fsync'd and renamed into place, and only then does
`current` switch, with `os.replace` of a temporary link, which is atomic. A failure at any point
before the switch leaves `current` and every byte it points to untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from forecast.data.schema import TABLE_NAMES, TABLES
from forecast.data.tables import STRING, CrmTables, conform, empty_frame
from forecast.settings import get_settings

MANIFEST = "manifest.json"
VERSIONS = "versions"
SCRATCH = "scratch"  # files for the workers, beside the versions
CURRENT = "current"
FORMAT = 1
"""Layout version written in each manifest."""


class StoreError(RuntimeError):
    """The store cannot do what was asked (e.g. roll back with no earlier version)."""


class StoreEmptyError(StoreError):
    """Nothing has been imported into the store yet."""


@dataclass(frozen=True)
class StoreWrite:
    """What `write_store` did.

    Attributes:
        version: the version now current (the existing one when nothing changed).
        path: its folder.
        fingerprint: sha256 of the canonical content.
        changed: False when the content equalled the current version's and nothing was written.
        rows: row count per table.
    """

    version: str
    path: Path
    fingerprint: str
    changed: bool
    rows: dict[str, int]


def write_store(
    tables: CrmTables,
    *,
    source: str,
    imported_at: pd.Timestamp,
    store: Path | None = None,
    attachments: Mapping[str, pd.DataFrame] | None = None,
) -> StoreWrite:
    """Store validated tables as a new version and make it current, atomically.

    Writing the same content as the current version again writes nothing (`changed=False`).
    After a write, only the newest `store_versions_kept` versions are kept (never pruning
    `current`).

    Args:
        tables: validated canonical tables.
        source: where they came from, as a person would name it (recorded in the manifest).
        imported_at: when the import happened (recorded, not used for the fingerprint).
        store: the store folder; default `get_settings().store_path`.
        attachments: frames stored with the version as `<key>.parquet` (a key may hold a
            folder, e.g. `truth/reps`), written before the version becomes current.

    Returns:
        The version written, or the current one if nothing changed.
    """
    root = _root(store)
    fingerprint = fingerprint_tables(tables)
    rows = {name: len(frame) for name, frame in tables.items()}
    current = _current(root)
    if current is not None:
        manifest = _read_manifest(root / VERSIONS / current)
        if manifest.get("fingerprint") == fingerprint:
            return StoreWrite(current, root / VERSIONS / current, fingerprint, False, rows)

    def fill(folder: Path) -> dict:
        manifest = _manifest(tables.as_of, source, imported_at, rows, fingerprint)
        if tables.translations:
            manifest["translations"] = tables.translations
        _write_version(folder, tables, attachments or {}, manifest)
        return manifest

    return _versioned(root, fill)


@dataclass(frozen=True)
class StorePart:
    """One part of a store written in parts: the tables it holds (a table absent from a part
    has no rows there) and the frames stored with them (`write_store`'s attachments)."""

    tables: Mapping[str, pd.DataFrame]
    attachments: Mapping[str, pd.DataFrame] = field(default_factory=dict)


def write_store_parts(
    parts: Iterable[StorePart],
    *,
    as_of: pd.Timestamp,
    source: str,
    imported_at: pd.Timestamp,
    store: Path | None = None,
    check: Callable[[Path], None] | None = None,
) -> StoreWrite:
    """Store tables that arrive in parts (a world generated in parts), holding one part in
    memory at a time: each part's tables and attachments written as
    `<table>/part-NNNNN.parquet` as it comes; the version made current, atomically, only after
    the last. `read_store` reads a table's parts back in order, as one table.

    The fingerprint is sha256 over the parts' own fingerprints, in order: the same parts give
    the same fingerprint (and nothing new is written), but it is not the fingerprint of the
    tables read back whole. `check` reads the written folder before it becomes a version (what
    spans parts: unique keys, references); an error it raises leaves the store as it was.
    """
    root = _root(store)

    def fill(folder: Path) -> dict:
        digest = hashlib.sha256(
            f"format {FORMAT}; as_of {pd.Timestamp(as_of).isoformat()}\n".encode()
        )
        rows = dict.fromkeys(TABLE_NAMES, 0)
        for number, part in enumerate(parts):
            tables = CrmTables.from_frames(dict(part.tables), as_of=as_of)
            for name in part.tables:
                rows[name] += len(tables[name])
                _write_table(tables[name], _part_path(folder / name, number))
            for key, frame in part.attachments.items():
                _write_table(frame, _part_path(folder / key, number))
            digest.update(f"part {number} {fingerprint_tables(tables)}\n".encode())
        manifest = _manifest(as_of, source, imported_at, rows, digest.hexdigest())
        if check is not None:
            check(folder)
        _write_bytes(folder / MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n")
        _fsync_dir(folder)
        return manifest

    return _versioned(root, fill)


def _manifest(
    as_of: pd.Timestamp, source: str, imported_at: pd.Timestamp, rows: dict, fingerprint: str
) -> dict:
    return {
        "format": FORMAT,
        "as_of": pd.Timestamp(as_of).isoformat(),
        "source": source,
        "imported_at": pd.Timestamp(imported_at).isoformat(),
        "rows": rows,
        "fingerprint": fingerprint,
        "forecast_version": _forecast_version(),
    }


def _versioned(root: Path, fill: Callable[[Path], dict]) -> StoreWrite:
    """A new version filled by `fill` (which returns its manifest) in a temporary folder, then
    published and made current; nothing written when its fingerprint is the current one's.
    After a write, only the newest `store_versions_kept` versions are kept."""
    versions = root / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    tmp = versions / f".tmp-{uuid.uuid4().hex}"
    published: Path | None = None
    try:
        tmp.mkdir()
        manifest = fill(tmp)
        fingerprint, rows = manifest["fingerprint"], manifest["rows"]
        current = _current(root)
        if current is not None and _read_manifest(versions / current).get("fingerprint") == (
            fingerprint
        ):
            shutil.rmtree(tmp, ignore_errors=True)
            return StoreWrite(current, versions / current, fingerprint, False, rows)
        version = _publish(tmp, versions, fingerprint)
        published = versions / version
        _switch(root, version)
    except BaseException:
        # Nothing current refers to these folders yet: removing them restores the old state.
        shutil.rmtree(tmp, ignore_errors=True)
        if published is not None and _current(root) != published.name:
            shutil.rmtree(published, ignore_errors=True)
        raise
    _prune(root, keep=get_settings().store_versions_kept)
    return StoreWrite(version, published, fingerprint, True, rows)


def _write_version(
    folder: Path, tables: CrmTables, attachments: Mapping[str, pd.DataFrame], manifest: dict
) -> None:
    """Every table, every attachment and the manifest into `folder`, flushed to disk."""
    for name, frame in tables.items():
        _write_table(frame, folder / f"{name}.parquet")
    for key, frame in attachments.items():
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        _write_table(frame, folder / f"{key}.parquet")
    _write_bytes(folder / MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n")
    _fsync_dir(folder)


def read_store(store: Path | None = None, tables: Sequence[str] | None = None) -> CrmTables:
    """The current version's tables, with canonical dtypes.

    Args:
        store: the store folder; default `get_settings().store_path`.
        tables: only read these tables (the others are empty); default all.

    Raises:
        StoreEmptyError: nothing has been imported yet.
        KeyError: an unknown table name was asked for.
    """
    return read_version(_current_folder(_root(store)), tables)


def read_version(folder: Path, tables: Sequence[str] | None = None) -> CrmTables:
    """The tables of the version at `folder` (`current_path`), as `read_store` reads them."""
    wanted = list(TABLE_NAMES if tables is None else tables)
    for name in wanted:
        if name not in TABLES:
            raise KeyError(f"no canonical table {name!r}; tables are {', '.join(TABLE_NAMES)}")
    manifest = _read_manifest(folder)
    frames = {
        name: _read_table(folder / f"{name}.parquet", name)
        if name in wanted
        else empty_frame(TABLES[name])
        for name in TABLE_NAMES
    }
    return CrmTables.from_frames(
        frames,
        as_of=pd.Timestamp(manifest["as_of"]),
        translations=manifest.get("translations"),
    )


def read_part(folder: Path, number: int, tables: Sequence[str]) -> CrmTables:
    """Part `number` of `tables` in the version at `folder` (`current_path`), a store written in
    parts (`store_parts`); the other tables empty. A Dask worker reads its own part this way,
    so the calling process never holds the whole table."""

    def part(name: str) -> pd.DataFrame:
        path = _part_path(folder / name, number, make=False)
        if name not in tables or not path.is_file():  # a part without rows of the table
            return empty_frame(TABLES[name])
        return conform(read_frame(path), TABLES[name])

    frames = {name: part(name) for name in TABLE_NAMES}
    return CrmTables.from_frames(frames, as_of=pd.Timestamp(_read_manifest(folder)["as_of"]))


def scratch_folder(folder: Path | None = None, *, store: Path | None = None) -> Path:
    """A folder beside the versions of the store holding the version at `folder` (or of
    `store`), for files a cluster's workers read where they read the store (each removed by
    whoever wrote it)."""
    scratch = (folder.parent.parent if folder is not None else _root(store)) / SCRATCH
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch


def store_parts(folder: Path) -> int:
    """How many parts the version at `folder` was written in (`write_store_parts`: each part
    holds its accounts, their deals and the deals' own rows); 0 when written whole."""
    return len(list((folder / "deals").glob("part-*.parquet")))


def current_path(store: Path | None = None) -> Path:
    """The folder of the current version.

    Raises:
        StoreEmptyError: nothing has been imported yet.
    """
    return _current_folder(_root(store))


def current_version(store: Path | None = None) -> str | None:
    """The current version's id (a link read: cheap enough to poll), None when there is none."""
    return _current(_root(store))


def store_manifest(store: Path | None = None) -> dict:
    """The current version's manifest, plus its `version` id.

    Raises:
        StoreEmptyError: nothing has been imported yet.
    """
    folder = _current_folder(_root(store))
    return {**_read_manifest(folder), "version": folder.name}


def rollback_store(store: Path | None = None) -> str:
    """Make the version before the current one current again; returns its id.

    Raises:
        StoreEmptyError: nothing has been imported yet.
        StoreError: there is no earlier version to go back to.
    """
    root = _root(store)
    current = _current_folder(root).name
    earlier = [v for v in _versions(root) if _sequence(v) < _sequence(current)]
    if not earlier:
        raise StoreError(
            f"no version before {current} in {root} to roll back to (the store keeps "
            f"{get_settings().store_versions_kept}; FORECAST_STORE_VERSIONS_KEPT sets how many)"
        )
    _switch(root, earlier[-1])
    return earlier[-1]


def fingerprint_tables(tables: CrmTables) -> str:
    """sha256 over the canonical content: as-of, and each table's columns, dtypes and values.

    Row order counts (the same frames give the same fingerprint); the import time and source do
    not. Values are hashed from their content, not from Parquet bytes, so a library upgrade does
    not make unchanged data look new.
    """
    digest = hashlib.sha256()
    digest.update(f"format {FORMAT}; as_of {pd.Timestamp(tables.as_of).isoformat()}\n".encode())
    for name, frame in tables.items():
        digest.update(f"table {name} rows {len(frame)}\n".encode())
        for column in frame.columns:
            series = frame[column]
            digest.update(f"column {column} {series.dtype}\n".encode())
            _hash_column(digest, series)
    if tables.translations:  # a new name for a value the data does not hold is still new
        digest.update(f"translations {json.dumps(tables.translations, sort_keys=True)}".encode())
    return digest.hexdigest()


# --- layout --------------------------------------------------------------------------------------


def _root(store: Path | None) -> Path:
    return Path(store) if store is not None else get_settings().store_path


def _current(root: Path) -> str | None:
    """The current version id, or None when nothing (usable) has been imported."""
    link = root / CURRENT
    if not link.is_symlink():
        return None
    version = link.readlink().name
    return version if (root / VERSIONS / version / MANIFEST).is_file() else None


def _current_folder(root: Path) -> Path:
    version = _current(root)
    if version is None:
        raise StoreEmptyError(
            f"no CRM data in {root}: run `forecast data generate` or `forecast data import ...`"
        )
    return root / VERSIONS / version


def _versions(root: Path) -> list[str]:
    """Complete versions, oldest first (temporary folders of unfinished writes excluded)."""
    folder = root / VERSIONS
    if not folder.is_dir():
        return []
    found = [
        p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file()
    ]
    return sorted(found, key=_sequence)


def _sequence(version: str) -> int:
    head = version.split("-", 1)[0]
    return int(head) if head.isdigit() else -1


def _publish(tmp: Path, versions: Path, fingerprint: str) -> str:
    """Rename the finished temporary folder to the next version id; returns the id."""
    sequence = max([0, *(_sequence(v.name) for v in versions.iterdir())])
    while True:
        sequence += 1
        version = f"{sequence:06d}-{fingerprint[:12]}"
        try:
            # rename onto an existing (non-empty) folder fails: another writer took the id.
            tmp.rename(versions / version)
        except OSError:
            if (versions / version).exists():
                continue
            raise
        _fsync_dir(versions)
        return version


def _switch(root: Path, version: str) -> None:
    """Point `current` at `version` atomically: a new link renamed over the old one."""
    link = root / f".{CURRENT}-{uuid.uuid4().hex}"
    try:
        link.symlink_to(Path(VERSIONS) / version, target_is_directory=True)
        link.replace(root / CURRENT)  # os.replace: readers see the old or the new link
    finally:
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
    _fsync_dir(root)


def _prune(root: Path, *, keep: int) -> None:
    """Delete the oldest versions beyond `keep`, never the current one."""
    current = _current(root)
    versions = _versions(root)
    surplus = len(versions) - keep
    for version in versions:
        if surplus <= 0:
            break
        if version == current:
            continue
        shutil.rmtree(root / VERSIONS / version, ignore_errors=True)
        surplus -= 1


def _forecast_version() -> str:
    # From the installed metadata: `forecast.__version__` is missing when an editable install
    # resolves the package as a namespace.
    try:
        return importlib.metadata.version("forecast")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _read_manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))


# --- files ---------------------------------------------------------------------------------------


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with path.open("wb") as handle:
        pq.write_table(table, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _read_table(path: Path, name: str) -> pd.DataFrame:
    parts = path.with_suffix("")  # a store written in parts: <table>/part-NNNNN.parquet
    if not path.is_file() and not parts.is_dir():  # a version from before this table existed
        return empty_frame(TABLES[name])
    return conform(read_frame(path), TABLES[name])


def read_frame(path: Path) -> pd.DataFrame:
    """A stored frame (`<key>.parquet`), or its parts in order (`<key>/part-NNNNN.parquet`)."""
    parts = path.with_suffix("")
    if parts.is_dir():
        tables = [pq.read_table(p) for p in sorted(parts.glob("part-*.parquet"))]
        table = pa.concat_tables(tables, promote_options="permissive")
    else:
        table = pq.read_table(path)
    return table.to_pandas(types_mapper=_pandas_type)


def _part_path(folder: Path, number: int, *, make: bool = True) -> Path:
    if make:
        folder.mkdir(parents=True, exist_ok=True)
    return folder / f"part-{number:05d}.parquet"


def _pandas_type(arrow_type: pa.DataType) -> object | None:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return STRING
    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    return None


def _write_bytes(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename or new entry in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_column(digest: hashlib._Hash, series: pd.Series) -> None:
    """Feed a column's content to `digest`, independent of its memory layout."""
    if isinstance(series.dtype, pd.StringDtype):
        array = pa.array(series.array, from_pandas=True)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        array = array.cast(pa.large_string())
        digest.update(np.packbits(array.is_null().to_numpy(zero_copy_only=False)).tobytes())
        # Filling nulls gives a fresh array whose offsets and data are determined by the values.
        filled = pc.fill_null(array, "")
        offsets = np.frombuffer(filled.buffers()[1], dtype="int64")[
            filled.offset : filled.offset + len(filled) + 1
        ]
        digest.update((offsets - offsets[0]).tobytes() if len(offsets) else b"")
        if len(offsets) and filled.buffers()[2] is not None:
            digest.update(memoryview(filled.buffers()[2])[offsets[0] : offsets[-1]])
        return
    if isinstance(series.dtype, pd.Int64Dtype):
        digest.update(np.packbits(series.isna().to_numpy()).tobytes())
        digest.update(series.fillna(0).to_numpy(dtype="int64").tobytes())
        return
    values = series.to_numpy()
    if values.dtype.kind == "f":
        values = np.where(np.isnan(values), np.nan, values)  # one bit pattern for every NaN
    elif values.dtype.kind == "M":
        values = values.astype("datetime64[ns]").view("int64")
    else:
        values = np.asarray([repr(v) for v in values.tolist()], dtype=object).astype(str)
    digest.update(np.ascontiguousarray(values).tobytes())
