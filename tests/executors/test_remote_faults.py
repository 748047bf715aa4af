"""The remote executors survive a flaky Hub: on every Hub route a run uses, one 429, one 500
and one dropped connection in a row (the fake answers the next three matching requests so,
whoever sends them: the runner here or the entry in the Space/Job) — and the run still
succeeds, with one remote run in total, and a Space is paused only after its run ended."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftpipe import registry
from ftpipe.executors import jobs, spaces
from tests.executors import sleepy_plugin
from tests.executors.test_jobs_executor import job_env
from tests.executors.test_spaces_executor import docker_cmd
from tests.fakes.hub_server import HubServer, hub_fixture  # noqa: F401 - registers the `hub` fixture

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

PIPELINE = """\
version: 1
name: flaky
dataset:
  source: {{type: local, path: data/recipes.jsonl}}
  format: chat
  split: {{validation: 0.1, test: 0.1, seed: 42}}
model: {{base: "builtin:tiny"}}
trainer: {{backend: sleepy, seconds: 0}}
executor: {{type: {executor}}}
"""
NS = "tester"
# (name, method, path regex): every route the runner or the entry uses
COMMON = [
    ("whoami", "GET", r"^/api/whoami-v2$"),
    ("create-repo", "POST", r"^/api/repos/create$"),
    ("repo-info", "GET", r"^/api/datasets/tester/ftpipe-flaky-(inputs|results)(/revision/[^/]+)?$"),
    ("tree", "GET", r"^/api/datasets/tester/ftpipe-flaky-[a-z]+/tree/"),
    ("preupload", "POST", r"/preupload/"),
    ("commit", "POST", r"/commit/"),
    ("resolve-head", "HEAD", r"/resolve/"),
    ("resolve-get", "GET", r"/resolve/"),
]
SPACES = [
    ("space-secrets", "POST", r"^/api/spaces/tester/[^/]+/secrets$"),
    ("space-runtime", "GET", r"^/api/spaces/tester/[^/]+/runtime$"),
    ("space-pause", "POST", r"^/api/spaces/tester/[^/]+/pause$"),
    ("space-restart", "POST", r"^/api/spaces/tester/[^/]+/restart$"),
    ("space-logs", "GET", r"^/api/spaces/tester/[^/]+/logs/"),
]
JOBS = [
    ("job-submit", "POST", r"^/api/jobs/tester$"),
    ("job-list", "GET", r"^/api/jobs/tester$"),
    ("job-inspect", "GET", r"^/api/jobs/tester/[0-9a-f]+$"),
    ("job-logs", "GET", r"^/api/jobs/tester/[0-9a-f]+/logs$"),
]
CASES = [pytest.param("hf-spaces", *route, id=f"spaces-{route[0]}") for route in COMMON + SPACES] + [
    pytest.param("hf-jobs", *route, id=f"jobs-{route[0]}") for route in COMMON + JOBS
]


@pytest.fixture
def flaky(hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    sleepy_plugin.install(folder)
    (folder / "data" / "recipes.jsonl").write_bytes((REPO / "pipelines" / "data" / "recipes.jsonl").read_bytes())
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(spaces.SpaceBackend, "poll_max_s", 0.3)
    monkeypatch.setattr(jobs.JobBackend, "poll_max_s", 0.3)
    registry.plugins.cache_clear()
    registry.pipeline_model.cache_clear()
    hub.jobs.job_env = job_env(hub, tmp_path, [folder])
    hub.space_runner = docker_cmd(hub, tmp_path, folder)
    hub.space_stage_after_exit = "RUNTIME_ERROR"
    yield folder
    registry.plugins.cache_clear()
    registry.pipeline_model.cache_clear()


@pytest.mark.parametrize(("executor", "route", "method", "pattern"), CASES)
def test_one_429_one_500_one_dropped_connection_on_each_route(
    hub: HubServer, flaky: Path, executor: str, route: str, method: str, pattern: str
) -> None:
    from ftpipe.cli import commands, main, more  # noqa: F401 - registers the commands

    path = flaky / "flaky.yaml"
    path.write_text(PIPELINE.format(executor=executor))
    for fault in (429, 500, "drop"):
        hub.inject(method, pattern, fault)
    result = CliRunner().invoke(main, ["run", str(path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["steps"] == {"prepare": "done", "train": "done"}
    assert [f for _, _, f in hub.faults_fired] == [429, 500, "drop"], f"{route}: the route was never used"
    store = flaky / ".ftpipe"
    assert (store / "runs" / summary["run_id"] / "run.json").exists()
    assert not (store / "jobs" / executor / "flaky.json").exists()  # the request is over
    if executor == "hf-jobs":
        assert len(hub.jobs.all()) == 1
        return
    (space_id,) = [rid for kind, rid in hub._repos if kind == "space"]
    assert hub._repos[("space", space_id)].space.runs == 1
    assert hub.space_runtime(space_id)["stage"] == "PAUSED"
    # paused only after the run ended: no pause between the restart and the entry's push of the outcome
    calls = [(m, p.split("?")[0]) for m, p, _ in hub.requests]
    restart = max(i for i, (m, p) in enumerate(calls) if m == "POST" and p.endswith("/restart"))
    pushed = min(
        i
        for i, (m, p) in enumerate(calls)
        if i > restart and m == "POST" and p.startswith(f"/api/datasets/{NS}/ftpipe-flaky-results/commit/")
    )
    assert not [i for i, (m, p) in enumerate(calls) if restart < i < pushed and m == "POST" and p.endswith("/pause")]


def test_a_hub_that_keeps_failing_leaves_the_space_running_and_the_next_run_reattaches(
    hub: HubServer, flaky: Path
) -> None:
    from ftpipe.cli import commands, main, more  # noqa: F401 - registers the commands

    path = flaky / "flaky.yaml"
    path.write_text(PIPELINE.format(executor="hf-spaces").replace("seconds: 0", "seconds: 12"))
    runner = hub.space_runner
    assert runner is not None

    def flaky_once_running(space_id: str, *args: dict) -> None:
        # the Space runs: from now on the runner's polls fail more often than its retries allow
        hub.inject("GET", r"^/api/spaces/tester/[^/]+/runtime$", 503, times=5)
        runner(space_id, *args)  # type: ignore[arg-type]

    hub.space_runner = flaky_once_running
    result = CliRunner().invoke(main, ["run", str(path)], catch_exceptions=False)
    assert result.exit_code == 1
    assert "keeps running" in result.stderr and "re-attaches" in result.stderr
    (space_id,) = [rid for kind, rid in hub._repos if kind == "space"]
    assert hub.space_runtime(space_id)["stage"] == "RUNNING"  # not paused: its run goes on
    state = json.loads((flaky / ".ftpipe" / "jobs" / "hf-spaces" / "flaky.json").read_text())
    assert state["space_id"] == space_id

    result = CliRunner().invoke(main, ["run", str(path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr[-3000:]
    assert "re-attaching to Space" in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "succeeded"
    assert hub._repos[("space", space_id)].space.runs == 1
    assert hub.space_runtime(space_id)["stage"] == "PAUSED"
