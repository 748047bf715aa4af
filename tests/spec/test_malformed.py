"""Each file in malformed/ is one mistake a person makes; its first line says where the
validator must point and what it must say."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftpipe.cli import commands, main, more  # noqa: F401 - registers commands

HERE = Path(__file__).parent / "malformed"
CASES = sorted(HERE.glob("*.yaml"))


def _expectation(path: Path) -> tuple[int, int, str]:
    m = re.match(r"# expect: (\d+):(\d+) (.*)", path.read_text().splitlines()[0])
    assert m, f"{path.name} has no '# expect: LINE:COL message' first line"
    return int(m.group(1)), int(m.group(2)), m.group(3)


def test_there_are_at_least_25_distinct_mistakes() -> None:
    assert len(CASES) >= 25
    assert len({_expectation(c)[2] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_malformed_pipeline_is_reported_with_position(case: Path) -> None:
    line, col, message = _expectation(case)
    result = CliRunner().invoke(main, ["validate", str(case)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    expected = f"{case}:{line}:{col}  {message}"
    assert expected in result.output, f"expected\n  {expected}\ngot\n{result.output}"


def test_no_traceback_in_a_real_process() -> None:
    cases = [str(c) for c in CASES]
    proc = subprocess.run([sys.executable, "-m", "ftpipe", "validate", *cases], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.count("problem") >= len(CASES)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml"), str(tmp_path)])
    assert r.exit_code == 2
    assert "file not found" in r.output and "this is a folder" in r.output


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[2] / "pipelines" / "data" / "recipes.jsonl"
    f = tmp_path / "p.yaml"
    f.write_text(f"""version: 1
name: demo
dataset:
  source: {{type: local, path: {data}}}
  colums: {{messages: conversation}}
model:
  base: builtin:tiny
trainer:
  backend: openia
evaluate:
  baselines: [base, fewshot]
deploy:
  - {{type: hf-hub, repo: me/x, token: hf_abc}}
""")
    r = CliRunner().invoke(main, ["validate", str(f)])
    assert r.exit_code == 2
    assert "4 problems" in r.output
    for where in (
        ":5:3  dataset.colums",
        ":9:12  trainer.backend",
        ":11:21  evaluate.baselines[1]",
        ":13:39  deploy[0].token",
    ):
        assert where in r.output
    assert "hf_abc" not in r.output  # a literal secret is never echoed back


_BUG = """
import sys
from ftpipe.cli import main, run_cli

@main.command("boom")
def boom() -> None:
    raise RuntimeError("a bug on purpose")

sys.argv = ["ftpipe", "boom"]
run_cli()
"""


def test_internal_errors_are_said_plainly_and_debug_shows_the_traceback() -> None:
    """A bug (not a user error) reaching the CLI's last-resort handler: exit 1, one line,
    the traceback only with FTPIPE_DEBUG=1."""
    env = {k: v for k, v in os.environ.items() if k != "FTPIPE_DEBUG"}
    plain = subprocess.run(
        [sys.executable, "-c", _BUG], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert plain.returncode == 1, plain.stderr
    assert "internal error: RuntimeError: a bug on purpose" in plain.stderr and "Traceback" not in plain.stderr
    debug = subprocess.run(
        [sys.executable, "-c", _BUG],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(env, FTPIPE_DEBUG="1"),
    )
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and ", in boom" in debug.stderr


def test_user_errors_show_a_traceback_only_with_debug(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FTPIPE_DEBUG"}
    cmd = [sys.executable, "-m", "ftpipe", "runs", "show", "nope", "--store", str(tmp_path)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "no runs in" in proc.stderr
    proc = subprocess.run(
        cmd, check=False, capture_output=True, text=True, env=dict(env, FTPIPE_DEBUG="1"), timeout=120
    )
    assert proc.returncode == 2 and "Traceback" in proc.stderr
