"""The hf-jobs executor against the loopback Hub. The fake runs each Job's command (``/bin/sh -c
"<install unless present>; exec python -m ftpipe.executors.space_entry"``) as a local
subprocess with the Job's environment and secrets: the image has this very ftpipe on its
path (``hub.jobs.job_env``), so the install is skipped and the Job runs the same entry
code it runs on the Hub."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftpipe import __version__, registry
from ftpipe.contracts import RunRequest
from ftpipe.executors import jobs, remote
from tests.executors import sleepy_plugin
from tests.fakes.hub_server import HubServer, hub_fixture  # noqa: F401 - registers the `hub` fixture

REPO = Path(__file__).resolve().parents[2]

PIPELINE = """\
# Run it:  ftpipe run jobby.yaml
version: 1
name: jobby
description: ${{env:FTPIPE_NOTE}}
dataset:
  source: {{type: local, path: {data}}}
  format: chat
  split: {{validation: 0.1, test: 0.1, seed: 42}}
model:
  base: builtin:tiny
  token: ${{env:EXTRA_TOKEN}}
trainer: {{backend: sleepy, seconds: {seconds}}}
executor:
  type: hf-jobs
  flavor: cpu-upgrade
  timeout_s: 300
"""
EXTRA_SECRET = "extra-secret-value-9a7e"


def job_env(hub: HubServer, tmp_path: Path, pythonpath: list[Path]) -> dict[str, str]:
    """What the Job's container provides: python with this ftpipe, the Hub's address."""
    home = tmp_path / "job-home"
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(home),
        "HF_HOME": str(home / "hf"),
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONPATH": os.pathsep.join(str(p) for p in [REPO, *pythonpath]),
        "FTPIPE_CACHE": os.environ["FTPIPE_CACHE"],
        "FTPIPE_SPACE_WORKDIR": str(home / "work"),
    }


@pytest.fixture
def project(hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    sleepy_plugin.install(folder)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("FTPIPE_NOTE", "a plain variable")
    monkeypatch.setenv("EXTRA_TOKEN", EXTRA_SECRET)
    monkeypatch.setattr(jobs.JobBackend, "poll_max_s", 0.3)
    registry.plugins.cache_clear()
    registry.pipeline_model.cache_clear()
    hub.jobs.job_env = job_env(hub, tmp_path, [folder])

    def write(*, seconds: float = 0, data: str = "data/recipes.jsonl") -> Path:
        (folder / "data" / "recipes.jsonl").write_bytes((REPO / "pipelines" / "data" / "recipes.jsonl").read_bytes())
        path = folder / "jobby.yaml"
        path.write_text(PIPELINE.format(seconds=seconds, data=data))
        return path

    yield write
    registry.plugins.cache_clear()
    registry.pipeline_model.cache_clear()


def cli(*args: str) -> tuple[int, str, str]:
    from ftpipe.cli import commands, main, more  # noqa: F401 - registers the commands

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_flavors_are_the_clients_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    from huggingface_hub import JobHardware

    from ftpipe.executors.job_flavors import FLAVORS

    assert FLAVORS == tuple(h.value for h in JobHardware)
    path = tmp_path / "p.yaml"
    path.write_text(
        PIPELINE.format(seconds=0, data="d.jsonl")
        .replace("sleepy, seconds: 0", "trl")
        .replace("cpu-upgrade", "a100-larg")
    )
    code, out, err = cli("validate", str(path))
    assert code == 2
    assert "executor.flavor" in out + err and "Did you mean 'a100-large'" in out + err


def test_the_job_installs_the_pinned_ftpipe_only_when_its_image_lacks_it() -> None:
    from ftpipe.engine import load_checked

    pipeline = load_checked(REPO / "pipelines" / "quickstart.yaml").pipeline
    command, constraints = jobs.job_command(pipeline, "cpu-basic")
    assert command[:2] == ["/bin/sh", "-c"]
    script = command[2]
    assert f'ftpipe.__version__ != "{__version__}"' in script
    assert f"'ftpipe[hub,train]=={__version__}'" in script and "-c /tmp/ftpipe-constraints.txt" in script
    assert "download.pytorch.org/whl/cpu" in script  # a CPU flavor gets the CPU wheel of torch
    assert script.endswith("exec python -m ftpipe.executors.space_entry")
    lock = dict(line.split("==") for line in constraints.splitlines())
    from importlib.metadata import version

    assert lock["transformers"] == version("transformers") and "ftpipe" not in lock
    gpu, _ = jobs.job_command(pipeline, "a10g-small")
    assert "download.pytorch.org" not in gpu[2]


def _leaks(hub: HubServer, folder: Path, secrets: tuple[str, ...], extra: list[tuple[str, bytes]]) -> list[str]:
    """Every place a secret value appears: repos (every file of every commit), Job specs and logs,
    the local store and outputs, the client's output."""
    blobs = list(extra)
    for kind, repo_id in list(hub._repos):
        for commit in hub.commits(repo_id, kind):
            blobs += [
                (f"{repo_id}@{commit['oid'][:8]}:{p}", c)
                for p, c in hub.files(repo_id, kind, revision=commit["oid"]).items()
            ]
    for job in hub.jobs.all():
        blobs.append((f"job {job['id']} spec", json.dumps(job).encode()))
        blobs.append((f"job {job['id']} log", hub.jobs.log_text(job["id"]).encode()))
    blobs += [(str(p), p.read_bytes()) for p in folder.rglob("*") if p.is_file() and ".ftpipe" in p.parts]
    return [where for secret in secrets for where, content in blobs if secret.encode() in content]


@pytest.mark.integration
def test_the_quickstart_round_trips_through_a_job(hub: HubServer, tmp_path: Path, monkeypatch, capfd) -> None:
    """quickstart with `--executor hf-jobs`: trained in the Job, record and artifacts home,
    the token only as a Job secret."""
    folder = tmp_path / "pipelines"
    (folder / "data").mkdir(parents=True)
    for name in ("recipes.jsonl", "pantry-notes.md"):  # the data and the rag baseline's corpus
        (folder / "data" / name).write_bytes((REPO / "pipelines" / "data" / name).read_bytes())
    path = folder / "quickstart.yaml"
    path.write_text((REPO / "pipelines" / "quickstart.yaml").read_text())
    hub.jobs.job_env = job_env(hub, tmp_path, [])
    monkeypatch.setattr(jobs.JobBackend, "poll_max_s", 1.0)

    code, out, err = cli("run", str(path), "--executor", "hf-jobs", "--json")
    assert code == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["executor"] == "hf-jobs"
    (job,) = hub.jobs.all()
    assert job["status"]["stage"] == "COMPLETED" and summary["job_id"] == job["id"]
    assert job["flavor"] == "cpu-basic" and job["labels"]["ftpipe-request"]
    # the token reaches the Job as a secret, never in its environment or command
    assert hub.jobs.secret_values(job["id"]) == {"HF_TOKEN": hub.token}
    assert set(job["secrets"]) == {"HF_TOKEN"} and "HF_TOKEN" not in job["environment"]

    store = folder / ".ftpipe"
    record = json.loads((store / "runs" / summary["run_id"] / "run.json").read_text())
    assert record["executor"] == "hf-jobs" and record["remote"]["job_id"] == job["id"]
    assert {s["status"] for s in record["steps"].values()} == {"done"}
    for step in ("prepare", "train", "evaluate", "gate"):
        assert (store / record["steps"][step]["artifact"] / "_result.json").exists(), step
    assert (store / record["steps"]["train"]["artifact"] / "model" / "config.json").exists()
    assert (store / "runs" / summary["run_id"] / "logs" / "hf-jobs.log").exists()
    code, out, _ = cli("runs", "show", summary["run_id"], "--store", str(store))
    assert code == 0 and "succeeded" in out and "hf-jobs" in out

    captured = capfd.readouterr()
    leaks = _leaks(hub, folder, (hub.token,), [("client output", (out + err + captured.out + captured.err).encode())])
    assert not leaks, f"token found in {leaks}"


@pytest.mark.integration
def test_secrets_as_job_secrets_variables_as_environment(hub: HubServer, project, capfd) -> None:
    path = project()
    code, out, err = cli("run", str(path), "--json")
    assert code == 0, err
    (job,) = hub.jobs.all()
    assert hub.jobs.secret_values(job["id"]) == {"HF_TOKEN": hub.token, "EXTRA_TOKEN": EXTRA_SECRET}
    assert job["environment"]["FTPIPE_NOTE"] == "a plain variable"
    record = json.loads(
        (path.parent / ".ftpipe" / "runs" / json.loads(out.splitlines()[-1])["run_id"] / "run.json").read_text()
    )
    assert record["steps"]["train"]["status"] == "done"
    captured = capfd.readouterr()
    leaks = _leaks(
        hub,
        path.parent,
        (hub.token, EXTRA_SECRET),
        [("client output", (out + err + captured.out + captured.err).encode())],
    )
    assert not leaks, f"secret found in {leaks}"

    # unchanged: a second Job whose store is seeded from the results repo: every step cached
    code, out, err = cli("run", str(path), "--json")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["steps"] == {"prepare": "cached", "train": "cached"}
    assert len(hub.jobs.all()) == 2


@pytest.mark.integration
def test_kill_9_then_run_again_reattaches_to_the_one_job(hub: HubServer, project, tmp_path: Path) -> None:
    path = project(seconds=4)
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": hub.token,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(path.parent)]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftpipe", "run", str(path)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    state_file = path.parent / ".ftpipe" / "jobs" / "hf-jobs" / "jobby.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            running = [j for j in hub.jobs.all() if j["status"]["stage"] == "RUNNING"]
            if running and "sleepy: training started" in hub.jobs.log_text(running[0]["id"]):
                break
            assert proc.poll() is None, "the runner ended before the Job ran"
            time.sleep(0.1)
        else:
            pytest.fail("the Job never started training")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert json.loads(state_file.read_text())["job_id"] == running[0]["id"]

    code, out, err = cli("run", str(path), "--json")
    assert code == 0, err
    assert "re-attaching to Job" in err or "ended while no runner was attached" in err
    assert json.loads(out.splitlines()[-1])["status"] == "succeeded"
    assert len(hub.jobs.all()) == 1
    assert not state_file.exists()


@pytest.mark.integration
def test_a_job_whose_id_was_never_saved_is_found_by_its_label(hub: HubServer, project) -> None:
    """Killed between the Job's creation and saving its id: the request's label finds it."""
    path = project()
    first = remote.RemoteRun(RunRequest(pipeline_path=path), jobs.JobBackend)
    state = first.new_state()
    first.backend.submit(state, first.persist)
    state.pop("job_id")
    first.persist(state)

    code, out, err = cli("run", str(path), "--json")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["status"] == "succeeded"
    assert len(hub.jobs.all()) == 1


@pytest.mark.integration
def test_a_dropped_answer_to_the_submission_makes_no_second_job(hub: HubServer, project) -> None:
    path = project()
    hub.inject("POST", r"^/api/jobs/tester$", "drop", after_handling=True)
    code, out, err = cli("run", str(path), "--json")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["status"] == "succeeded"
    assert len(hub.jobs.all()) == 1 and hub.faults_fired


@pytest.mark.integration
def test_ctrl_c_cancels_the_job(hub: HubServer, project, monkeypatch: pytest.MonkeyPatch) -> None:
    path = project(seconds=30)
    real_sleep = time.sleep
    calls = {"n": 0}

    def sleep(seconds: float) -> None:
        running = [j for j in hub.jobs.all() if j["status"]["stage"] == "RUNNING"]
        calls["n"] += 1
        if running or calls["n"] > 400:
            raise KeyboardInterrupt
        real_sleep(seconds)

    class Clock:
        monotonic = staticmethod(time.monotonic)

    Clock.sleep = staticmethod(sleep)  # type: ignore[attr-defined]
    monkeypatch.setattr(remote, "time", Clock)
    code, out, err = cli("run", str(path), "--json")
    assert code == 130, err
    (job,) = hub.jobs.all()
    assert job["status"]["stage"] == "CANCELED"
    assert json.loads(out.splitlines()[-1])["status"] == "interrupted"


def test_data_outside_the_repository_is_refused_unless_allowed(hub: HubServer, project, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "id_rsa.jsonl").write_text("not for upload\n")
    path = project(data="../elsewhere/id_rsa.jsonl")
    code, _, err = cli("run", str(path))
    assert code == 2
    assert "outside its repository" in err and "upload_outside_repo" in err and "Traceback" not in err
    assert not hub.jobs.all() and not any(k == "dataset" for k, _ in hub._repos)
    assert not (path.parent / ".ftpipe" / "jobs" / "hf-jobs" / "jobby.json").exists()


def test_ray_refuses_inputs_outside_the_repository_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftpipe.errors import UsageError
    from ftpipe.executors.ray_executor import RayBackend

    monkeypatch.setenv("FTPIPE_NOTE", "a plain variable")  # EXTRA_TOKEN, a secret, may be the cluster's alone
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "d.jsonl").write_text("{}\n")
    (tmp_path / "p").mkdir()
    path = tmp_path / "p" / "p.yaml"
    path.write_text(
        PIPELINE.format(seconds=0, data="../secret/d.jsonl")
        .replace("sleepy, seconds: 0", "trl")
        .replace("type: hf-jobs\n  flavor: cpu-upgrade\n  timeout_s: 300", "type: ray")
    )
    with pytest.raises(UsageError, match="outside its repository"):
        remote.RemoteRun(RunRequest(pipeline_path=path), RayBackend, secrets_elsewhere=True).backend.working_root()
    path.write_text(
        path.read_text()
        .replace("type: ray", "{type: ray, upload_outside_repo: true}")
        .replace("executor:\n  {type", "executor: {type")
    )
    assert (
        remote.RemoteRun(RunRequest(pipeline_path=path), RayBackend, secrets_elsewhere=True).backend.working_root()
        == tmp_path
    )


@pytest.mark.integration
def test_schedule_hf_jobs_creates_updates_and_never_duplicates(hub: HubServer, project) -> None:
    from huggingface_hub import HfApi

    path = project()
    path.write_text(path.read_text() + 'schedule: {cron: "17 3 * * 1", timezone: Asia/Tokyo}\n')
    code, out, err = cli("schedule", "hf-jobs", str(path), "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["action"] == "created" and made["cron_utc"] == "17 18 * * 0"  # 03:17 Monday in Tokyo
    assert made["secrets"] == ["EXTRA_TOKEN", "HF_TOKEN"]
    api = HfApi(token=hub.token)
    (sj,) = api.list_scheduled_jobs()
    assert sj.schedule == "17 18 * * 0" and sj.job_spec.flavor == "cpu-upgrade"
    assert set(sj.job_spec.secrets) == {"HF_TOKEN", "EXTRA_TOKEN"} and "HF_TOKEN" not in sj.job_spec.environment
    assert hub.token not in json.dumps(hub.jobs.scheduled[sj.id]["jobSpec"])

    code, out, err = cli("schedule", "hf-jobs", str(path), "--json")
    assert code == 0 and json.loads(out)["action"] == "unchanged", err
    path.write_text(path.read_text().replace("17 3 * * 1", "30 4 * * *"))
    code, out, err = cli("schedule", "hf-jobs", str(path), "--json")
    assert json.loads(out)["action"] == "updated" and json.loads(out)["scheduled_job_id"] == sj.id
    data = path.parent / "data" / "recipes.jsonl"
    data.write_text("\n".join(data.read_text().splitlines()[:-1]) + "\n")  # new data: a new plan
    code, out, err = cli("schedule", "hf-jobs", str(path), "--json")
    replaced = json.loads(out)
    assert replaced["action"] == "replaced" and replaced["scheduled_job_id"] != sj.id
    (now,) = api.list_scheduled_jobs()
    assert now.id == replaced["scheduled_job_id"] and now.schedule == "30 19 * * *"

    # a run of the scheduled Job (triggered now) runs the pipeline and pushes its run
    job = api.trigger_scheduled_job(scheduled_job_id=now.id)
    final = api.wait_for_job(job.id, timeout=120, poll_interval=0.2)
    assert final.status.stage == "COMPLETED", hub.jobs.log_text(job.id)[-2000:]
    pushed = [f for f in hub.files("tester/ftpipe-jobby-results", "dataset") if f.startswith("requests/scheduled-")]
    assert len(pushed) == 1
