"""Row readers for local files (jsonl, json, csv, parquet) and Hub datasets.

Each yields ``(row_number, row_or_error)`` lazily so that large files stream: a row is a
dict, or a ``RowError`` for a line that is not a JSON object. Row numbers are 1-based
per file (the line number for jsonl and csv, counting the header line for csv)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ftpipe.errors import MissingDependency, StepError


@dataclass(frozen=True)
class RowError:
    message: str


Row = tuple[str, int, "dict[str, Any] | RowError"]  # (where, row number, row)


def _fmt_of(path: Path, file_format: str | None) -> str:
    if file_format:
        return file_format
    ext = path.suffix.lower().lstrip(".")
    if ext in ("jsonl", "ndjson"):
        return "jsonl"
    if ext in ("json", "csv", "parquet"):
        return ext
    raise StepError(
        f"{path}: cannot tell the file format from '.{ext}'",
        hint="set dataset.source.file_format: jsonl | json | csv | parquet",
    )


def read_local(path: Path, file_format: str | None, label: str) -> Iterator[Row]:
    fmt = _fmt_of(path, file_format)
    if fmt == "jsonl":
        with path.open("r", encoding="utf-8-sig") as f:  # -sig: a BOM is not column 1 of row 1
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                line = line.rstrip("\r\n")
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield label, n, RowError(f"invalid JSON ({exc.msg} {_json_where(exc, line)})")
                    continue
                except RecursionError:  # hostile input: [[[[...]]]] thousands deep
                    yield label, n, RowError("invalid JSON (nested too deeply)")
                    continue
                yield (
                    label,
                    n,
                    obj if isinstance(obj, dict) else RowError(f"expected a JSON object, got {type(obj).__name__}"),
                )
    elif fmt == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as exc:
            raise StepError(f"{label}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        except RecursionError:
            raise StepError(f"{label}: invalid JSON: nested too deeply") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise StepError(f'{label}: a .json data file holds a list of rows (or {{"data": [...]}})')
        for n, obj in enumerate(data, 1):
            yield label, n, obj if isinstance(obj, dict) else RowError(f"expected an object, got {type(obj).__name__}")
    elif fmt == "csv":
        with path.open("r", encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                n = reader.line_num
                yield label, n, {k: _maybe_json(v) for k, v in row.items() if k is not None}
    elif fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingDependency("pyarrow", "train", "reading parquet files") from None
        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for obj in batch.to_pylist():
                n += 1
                yield label, n, obj


def _json_where(exc: json.JSONDecodeError, line: str) -> str:
    """Where in the row the JSON breaks, as an editor counts: 1-based characters of the
    line without its line break; a row cut short breaks at its end."""
    if exc.pos >= len(line.rstrip()):
        return f"at the end of the row, column {len(line) + 1}: the row is cut short"
    return f"at column {exc.pos + 1}"


def _maybe_json(value: str | None) -> Any:
    # chat messages in a csv column are JSON text
    if value and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def read_hub(repo: str, split: str, *, revision: str | None, subset: str | None, token: str | None) -> Iterator[Row]:
    """Rows of a Hub dataset split through `datasets` (honours HF_ENDPOINT)."""
    try:
        import datasets
    except ImportError:
        raise MissingDependency("datasets", "hub", "a Hub dataset source") from None
    from ftpipe.remote.hf import hub_errors

    with hub_errors(f"dataset {repo}"):
        ds = datasets.load_dataset(repo, subset, split=split, revision=revision, token=token or None)
    for n, obj in enumerate(ds, 1):
        yield f"{repo}[{split}]", n, obj
