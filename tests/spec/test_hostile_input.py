"""Pipeline files from people we do not fully trust: each hostile or broken file ends in a
clear exit 2 naming the file and line, within bounded CPU time and memory, never an
internal error. Each case runs `ftpipe validate` in its own process and measures that
process alone (CPU seconds and peak memory from getrusage, so a busy machine does not
make the test fail; the timeout only catches a hang)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ftpipe.spec.yamlpos import MAX_BYTES, MAX_DEPTH, YamlProblem, load_yaml

CPU_LIMIT_S = 2.0
MEMORY_LIMIT_MB = 200

# Runs `python -m ftpipe validate FILE` as a grandchild and reports that process's own usage:
# RUSAGE_CHILDREN of a fresh interpreter covers only the one child it waited for.
_MEASURE = r"""
import json, resource, subprocess, sys
proc = subprocess.run([sys.executable, "-m", "ftpipe", "validate", sys.argv[1]], capture_output=True, text=True)
use = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": proc.returncode, "out": proc.stdout + proc.stderr,
                  "cpu_s": use.ru_utime + use.ru_stime, "max_rss_mb": use.ru_maxrss / 1024}))
"""


def _validate_measured(path: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _alias_bomb() -> str:
    lines = ["version: 1", "name: bomb", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"  # 12 lines, 9**10 (3.5 billion) strings once expanded


HOSTILE = {
    # name: (file content, expected line, words the message must hold)
    "alias-bomb": (_alias_bomb(), 3, "more than 5,000 values"),
    "self-alias": ("version: 1\nname: x\nx: &a [*a]\n", 3, "nested more than"),
    "deep-flow": ("version: 1\nname: x\nx: " + "[" * 5000 + "]" * 5000 + "\n", 3, "nested more than"),
    "deep-block": ("version: 1\nname: x\n" + "".join(" " * i + f"k{i}:\n" for i in range(300)), 42, "nested more than"),
    "huge": (
        "version: 1\nname: x\n" + "".join(f"k{i}: value number {i}\n" for i in range(2_500_000)),
        1,
        "a pipeline file is at most 64 KiB",
    ),
    "many-values": ("version: 1\nname: x\nx: [" + ",".join(["1"] * 30_000) + "]\n", 3, "more than 5,000 values"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file_is_refused_quickly_in_bounded_memory(tmp_path: Path, case: str) -> None:
    text, line, words = HOSTILE[case]
    f = tmp_path / f"{case}.yaml"
    f.write_text(text)
    got = _validate_measured(f)
    assert got["rc"] == 2, got["out"]
    assert "Traceback" not in got["out"] and "internal error" not in got["out"]
    assert f"{f}:{line}:" in got["out"], got["out"]
    assert words in got["out"], got["out"]
    assert got["cpu_s"] < CPU_LIMIT_S, f"{case}: {got['cpu_s']:.2f} CPU seconds"
    assert got["max_rss_mb"] < MEMORY_LIMIT_MB, f"{case}: {got['max_rss_mb']:.0f} MB"


def test_the_bomb_really_is_one() -> None:
    """PyYAML alone shares the aliased nodes; expanding them is what the limit stops."""
    import yaml

    data = yaml.safe_load(_alias_bomb())
    assert data["a9"][0][0][0][0][0][0][0][0][0][0] == "lol"
    with pytest.raises(YamlProblem, match="more than 5,000 values"):
        load_yaml(_alias_bomb())


def test_limits_leave_real_pipelines_alone() -> None:
    repo = Path(__file__).resolve().parents[2]
    for f in sorted((repo / "pipelines").glob("*.yaml")):
        text = f.read_text()
        assert len(text.encode()) < MAX_BYTES // 8, f
        load_yaml(text)  # does not raise


def test_nesting_up_to_the_limit_loads_and_one_more_level_does_not() -> None:
    lists = MAX_DEPTH - 2  # the top mapping, the lists, and the scalar inside: MAX_DEPTH levels
    doc = load_yaml("x: " + "[" * lists + "1" + "]" * lists + "\n")
    inner = doc.data["x"]
    for _ in range(lists - 1):
        inner = inner[0]
    assert inner == [1]
    with pytest.raises(YamlProblem, match="nested more than"):
        load_yaml("x: " + "[" * (lists + 1) + "1" + "]" * (lists + 1) + "\n")


def test_aliases_and_merge_keys_within_the_limits_work() -> None:
    doc = load_yaml("a: &b {p: 1, q: 2}\nx:\n  <<: *b\n  q: 3\ny: {<<: [{a: 1}, {a: 2, b: 2}], c: 3}\nz: *b\n")
    assert doc.data == {
        "a": {"p": 1, "q": 2},
        "x": {"p": 1, "q": 3},
        "y": {"a": 1, "b": 2, "c": 3},
        "z": {"p": 1, "q": 2},
    }


def test_merge_of_a_scalar_is_a_clear_problem() -> None:
    with pytest.raises(YamlProblem, match="'<<' merges a mapping") as exc:
        load_yaml("x:\n  <<: 5\n")
    assert (exc.value.line, exc.value.col) == (2, 7)


@pytest.mark.parametrize(
    "content, line, words",
    [
        (b"version: 1\nname: x\x00\x01\x02\n", 2, "not a text file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 1, "not a UTF-8 text file"),
        ("version: 1\nname: caf\u00e9\n".encode("latin-1"), 2, "not a UTF-8 text file (byte 0xe9"),
    ],
)
def test_binary_or_non_utf8_file_is_a_user_error_naming_the_file(
    tmp_path: Path, content: bytes, line: int, words: str
) -> None:
    f = tmp_path / "p.yaml"
    f.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "ftpipe", "validate", str(f)], capture_output=True, text=True, check=False, timeout=120
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "internal error" not in out and "Traceback" not in out and "ReaderError" not in out
    assert f"{f}:{line}:" in out and words in out, out


def test_a_yaml_tag_pyyaml_refuses_is_a_positioned_problem(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("version: 1\nname: !!python/object/apply:os.system ['true']\n")
    proc = subprocess.run(
        [sys.executable, "-m", "ftpipe", "validate", str(f)], capture_output=True, text=True, check=False, timeout=120
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"{f}:2:7" in out and "internal error" not in out, out


def test_missing_file_prints_no_zero_position(tmp_path: Path) -> None:
    f = tmp_path / "nope.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "ftpipe", "validate", str(f)], capture_output=True, text=True, check=False, timeout=120
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert f"{f}  file not found" in out and ":0:0" not in out, out
