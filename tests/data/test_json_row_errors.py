"""Bad JSON rows are reported at the column an editor shows for that line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftpipe.data.readers import RowError, read_local
from ftpipe.errors import StepError


def _errors(path: Path) -> dict[int, str]:
    return {n: row.message for _, n, row in read_local(path, None, "d.jsonl") if isinstance(row, RowError)}


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_column_counts_characters_of_the_line(tmp_path: Path, newline: str) -> None:
    f = tmp_path / "d.jsonl"
    rows = ['{"a": 1}', '{"a": "é", x}', '{"messages": [', '{"a": 1}   x']
    f.write_bytes(newline.join(rows).encode() + newline.encode())
    errs = _errors(f)
    assert errs[2] == "invalid JSON (Expecting property name enclosed in double quotes at column 12)"
    assert errs[2].count("column") == 1 and rows[1][11] == "x"
    assert errs[3] == "invalid JSON (Expecting value at the end of the row, column 15: the row is cut short)"
    assert errs[4] == "invalid JSON (Extra data at column 12)" and rows[3][11] == "x"
    assert set(errs) == {2, 3, 4}


def test_a_byte_order_mark_is_not_a_bad_first_row(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"a": x}\n')
    assert _errors(f) == {2: "invalid JSON (Expecting value at column 7)"}
    g = tmp_path / "d.json"
    g.write_bytes(b'\xef\xbb\xbf[{"a": 1}]')
    assert [row for _, _, row in read_local(g, None, "d.json")] == [{"a": 1}]


def test_a_row_nested_thousands_deep_is_an_invalid_row(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"a": 1}\n{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    assert _errors(f) == {2: "invalid JSON (nested too deeply)"}
    g = tmp_path / "d.json"
    g.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(StepError, match="nested too deeply"):
        list(read_local(g, None, "d.json"))
