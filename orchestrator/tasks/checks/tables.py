"""Data file checks: a supported suffix, text that decodes, the named columns, and the rows themselves.

Readers here are the standard library's (csv, json) and pyarrow's parquet footer, so a check costs
milliseconds and never imports `datasets` (or, through it, torch). At most READ_LIMIT bytes of a file are read:
beyond that a file is surely big enough, and its columns were seen in the first rows.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.tasks.checks import paths

READ_LIMIT = 64 * 2**20


@dataclass
class Table:
    """The columns of a data file and its rows as dicts (`complete`: every row was read, not only the first)."""

    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True


def suffix_of(key: str, path: Path, allowed: tuple[str, ...]) -> str:
    """The file's suffix (lower case) when `allowed`; ConfigError listing the allowed ones otherwise."""
    suffix = path.suffix.lower()
    if suffix not in allowed:
        what = f"a {suffix} file" if suffix else "a file without a suffix"
        raise ConfigError(key, str(path), f"is {what}; this task reads {', '.join(allowed)} (rename a plain-text "
                          "file to .txt only if the task reads .txt)")
    return suffix


def read_text(key: str, path: Path, encoding: str = "utf-8", encoding_key: str | None = None) -> tuple[str, bool]:
    """The text of `path` (at most READ_LIMIT bytes) and whether that is all of it; ConfigError if it cannot be
    decoded, naming `encoding_key` (the setting to change) when the task has one."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        raise ConfigError(encoding_key or key, encoding, "is not a text encoding Python knows (e.g. utf-8, "
                          "latin-1, cp1252)") from None
    paths.whole_file(key, path, "a data file")
    with path.open("rb") as handle:
        raw = handle.read(READ_LIMIT + 1)
    complete = len(raw) <= READ_LIMIT
    try:
        text = decoder.decode(raw[:READ_LIMIT], final=complete)
    except UnicodeDecodeError as err:
        byte = f"byte 0x{err.object[err.start]:02x} at offset {err.start:,}"
        if encoding_key:
            raise ConfigError(encoding_key, encoding, f"cannot decode {path} ({byte}); set {encoding_key} to the "
                              "file's encoding, e.g. latin-1 or cp1252") from None
        raise ConfigError(key, str(path), f"is not {encoding} text ({byte}); convert it to {encoding} "
                          f"(e.g. iconv -f latin1 -t {encoding})") from None
    return text.removeprefix("\ufeff"), complete


def read_table(key: str, path: Path, suffix: str, encoding: str = "utf-8", encoding_key: str | None = None,
               wanted: tuple[str, ...] = ()) -> Table:
    """The columns and rows of a .csv / .tsv / .json / .jsonl / .parquet file (of parquet, the `wanted` columns)."""
    if suffix == ".parquet":
        return _parquet(key, path, wanted)
    text, complete = read_text(key, path, encoding if suffix in (".csv", ".tsv") else "utf-8", encoding_key)
    if suffix in (".csv", ".tsv"):
        return _csv(key, path, text, complete, "\t" if suffix == ".tsv" else ",")
    return _json(key, path, text, complete, suffix)


def _csv(key: str, path: Path, text: str, complete: bool, sep: str) -> Table:
    if not complete:
        text = text[:text.rfind("\n") + 1]  # the last line may be cut in the middle
    csv.field_size_limit(sys.maxsize)
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
        header = next(reader, [])
        rows = [dict(zip(header, r, strict=False)) for r in reader if r]
    except csv.Error as err:
        raise ConfigError(key, str(path), f"is not a readable {'tsv' if sep == chr(9) else 'csv'} table ({err})") \
            from None
    if not header:
        raise ConfigError(key, str(path), "has no header row (the first line names the columns)")
    return Table([h.strip() for h in header], [{k.strip(): v for k, v in r.items()} for r in rows], complete)


def _json(key: str, path: Path, text: str, complete: bool, suffix: str) -> Table:
    records: Any = None
    if suffix == ".json" and complete:
        try:
            records = json.loads(text)
        except json.JSONDecodeError:
            records = None  # `datasets` also reads JSON Lines from a .json file: try that below
        if isinstance(records, dict) and records and all(isinstance(v, list) for v in records.values()):
            records = [dict(zip(records, values, strict=False)) for values in zip(*records.values(), strict=False)]
    if not isinstance(records, list):
        lines = text.splitlines()[:-1] if not complete else text.splitlines()
        try:
            records = [json.loads(line) for line in lines if line.strip()]
        except json.JSONDecodeError as err:
            raise ConfigError(key, str(path), f"is not JSON records (a list of objects, or one object per line): "
                              f"{err}") from None
    if not all(isinstance(r, dict) for r in records):
        raise ConfigError(key, str(path), "is not JSON records: every record must be an object of named fields")
    columns = list(dict.fromkeys(k for r in records[:1000] for k in r))
    return Table(columns, records, complete)


def _parquet(key: str, path: Path, wanted: tuple[str, ...]) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths.whole_file(key, path, "a data file")
    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise ConfigError(key, str(path), f"is not a readable parquet file ({err})") from None
    columns = list(handle.schema_arrow.names)
    complete = path.stat().st_size <= READ_LIMIT
    rows = handle.read(columns=[c for c in wanted if c in columns]).to_pylist() if complete else []
    return Table(columns, rows, complete)


def column(key: str, path: Path, table: Table, name: str) -> list[Any]:
    """The values of column `name`; ConfigError naming `key` (the setting) and the columns there are."""
    if name not in table.columns:
        raise ConfigError(key, name, f"is not a column of {path} (its columns: {', '.join(table.columns) or 'none'})")
    return [r.get(name) for r in table.rows]


def blank(value: Any) -> bool:
    """True for what a loader drops as missing: None, NaN, empty or whitespace-only text."""
    return value is None or (isinstance(value, float) and value != value) or not str(value).strip()
