"""Every command finds the same run store from anywhere in a repository (issue 12, 3.1):
the nearest .ftpipe/ walking up, else the repository root's; --store / FTPIPE_STORE override."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftpipe.cli import commands, main, more  # noqa: F401
from ftpipe.engine import execute
from ftpipe.progress import Reporter
from ftpipe.serve import find_model_folder
from ftpipe.store_location import locate_store
from tests.engine.helpers import write_pipeline
from tests.engine.test_engine import Counting

REPO = Path(__file__).resolve().parents[2]


def _repo_with_quickstart(tmp_path: Path) -> Path:
    """A git repository holding the quickstart, trained for two steps and without the
    evaluation (the store is what is under test, not the model)."""
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "pipelines" / "data").mkdir(parents=True)
    (repo / "pipelines" / "data" / "recipes.jsonl").write_bytes(
        (REPO / "pipelines" / "data" / "recipes.jsonl").read_bytes()
    )
    text = (REPO / "pipelines" / "quickstart.yaml").read_text()
    text = text.replace("epochs: 4,", "epochs: 1, max_steps: 2,")
    text = text.split("evaluate:")[0]  # drop evaluate and deploy
    assert "max_steps: 2" in text
    (repo / "pipelines" / "quickstart.yaml").write_text(text)
    return repo


def _ftpipe(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FTPIPE_STORE"}
    return subprocess.run(
        [sys.executable, "-m", "ftpipe", *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.integration
def test_run_then_runs_and_serve_agree_from_the_root_and_from_a_subfolder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _repo_with_quickstart(tmp_path)
    first = _ftpipe(repo, "run", "pipelines/quickstart.yaml")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (repo / ".ftpipe" / "runs").is_dir() and not (repo / "pipelines" / ".ftpipe").exists()
    hint = re.search(r"ftpipe runs show (\S+)(.*)", first.stderr)
    assert hint, first.stderr
    run_id = hint.group(1)
    assert hint.group(2).strip() == ""  # the closing hint works as printed: no --store needed here

    sub = repo / "pipelines" / "data"
    # from a subfolder: the same run is found, and a rerun is cached in the same store
    again = _ftpipe(repo / "pipelines", "run", "quickstart.yaml", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["up_to_date"]
    for cwd in (repo, sub):
        listed = _ftpipe(cwd, "runs", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)[0]["run_id"] == run_id
        shown = _ftpipe(cwd, "runs", "show", run_id)
        assert shown.returncode == 0 and f"run {run_id}" in shown.stdout, shown.stderr
        latest = json.loads(_ftpipe(cwd, "runs", "show", "latest", "--json").stdout)
        assert latest["store"] == str((repo / ".ftpipe").resolve())
        monkeypatch.chdir(cwd)
        folder, _ = find_model_folder(run_id)  # what `ftpipe serve RUN` resolves
        assert folder.parent.parent == (repo / ".ftpipe").resolve() and (folder / "model.json").is_file()


def test_the_nearest_store_wins_and_the_repository_root_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    deep = repo / "a" / "b"
    deep.mkdir(parents=True)
    assert locate_store(deep).path == repo / ".ftpipe" and locate_store(deep).how == "repository"
    (repo / "a" / ".ftpipe").mkdir()
    assert locate_store(deep).path == repo / "a" / ".ftpipe"
    # a store above the repository does not capture it
    (tmp_path / ".ftpipe").mkdir()
    assert locate_store(repo).path == repo / ".ftpipe"
    # outside a repository: the nearest store walking up, else the start folder
    outside = tmp_path / "x" / "y"
    outside.mkdir(parents=True)
    assert locate_store(outside).path == tmp_path / ".ftpipe"
    monkeypatch.setenv("FTPIPE_STORE", str(tmp_path / "elsewhere"))
    assert locate_store(deep).path == tmp_path / "elsewhere"
    assert locate_store(deep, option=tmp_path / "given").path == tmp_path / "given"
    monkeypatch.chdir(deep)
    monkeypatch.delenv("FTPIPE_STORE")
    assert locate_store().path == repo / "a" / ".ftpipe"


def test_an_older_store_beside_a_pipeline_is_used_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "pipelines" / ".ftpipe").mkdir(parents=True)  # where ftpipe used to put it
    path = write_pipeline(repo / "pipelines")
    monkeypatch.chdir(repo)
    buf = io.StringIO()
    out = execute(path, step_runner=Counting(), reporter=Reporter(buf, live=False))
    assert out.exit_code == 0
    assert out.record["store"] == str((repo / "pipelines" / ".ftpipe").resolve())
    text = buf.getvalue()
    assert "using the run store pipelines/.ftpipe found beside the pipeline" in text, text
    assert f"ftpipe runs show {out.run_id} --store pipelines/.ftpipe" in text  # the hint works when pasted
    # from the root, with no store of its own, `runs list` names where the runs are
    listed = CliRunner().invoke(main, ["runs", "list"])
    assert listed.exit_code == 0 and "no runs in" in listed.output
    assert "runs are in pipelines/.ftpipe: pass --store pipelines/.ftpipe" in listed.output
    shown = CliRunner().invoke(main, ["runs", "show", "latest"])
    assert shown.exit_code == 2 and "--store pipelines/.ftpipe" in shown.output
    # -p finds the pipeline's store
    by_pipeline = CliRunner().invoke(main, ["runs", "show", "latest", "-p", "pipelines/pipeline.yaml", "--json"])
    assert by_pipeline.exit_code == 0 and json.loads(by_pipeline.output)["run_id"] == out.run_id


def test_a_run_started_outside_the_repository_prints_a_hint_with_its_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    path = write_pipeline(repo)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    buf = io.StringIO()
    out = execute(path, step_runner=Counting(), reporter=Reporter(buf, live=False))
    assert out.exit_code == 0 and out.record["store"] == str((repo / ".ftpipe").resolve())
    assert f"ftpipe runs show {out.run_id} --store ../repo/.ftpipe" in buf.getvalue()
    # from a subfolder of the repository the store is found: the hint needs no --store
    (repo / "sub" / "deeper").mkdir(parents=True)
    monkeypatch.chdir(repo / "sub" / "deeper")
    write_pipeline(repo, lr=0.5)
    buf = io.StringIO()
    again = execute(path, step_runner=Counting(), reporter=Reporter(buf, live=False))
    assert again.exit_code == 0 and again.record["store"] == out.record["store"]
    assert re.search(rf"ftpipe runs show {again.run_id}$", buf.getvalue(), re.MULTILINE), buf.getvalue()
