"""The ray executor against a real local Ray cluster (marked ``ray``), plus the parts that
need no cluster: error translation, exit codes, the job side, store sync."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sleepy_plugin
from ray_cluster import ray_cluster_fixture  # noqa: F401 - the module-scoped `ray_cluster` fixture

from ftpipe import errors
from tests.procs import sigint_default

REPO = Path(__file__).resolve().parents[2]
FTPIPE = [sys.executable, "-c", "from ftpipe.cli import run_cli; run_cli()"]


def ftpipe(*args: str, env: dict, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*FTPIPE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        if proc.poll() is not None:
            pytest.fail(f"the runner exited {proc.returncode} before {text!r}:\n{path.read_text()}")
        time.sleep(0.3)
    pytest.fail(f"{text!r} did not appear in {timeout:.0f}s:\n{path.read_text() if path.exists() else ''}")


# --------------------------------------------------------------------------- no cluster needed


def test_ray_errors_become_remote_errors_with_hints() -> None:
    from ftpipe.remote.ray import normalize_address, translate

    class AuthenticationError(Exception):
        pass

    e = translate(
        AuthenticationError("Authentication failed: Forbidden: Invalid authentication token\n\nmore"),
        "connecting",
        "http://h:8265",
    )
    assert e.status == 403 and "RAY_AUTH_TOKEN" in (e.hint or "") and "\n\nmore" not in e.message
    e = translate(ConnectionError("Failed to connect to Ray at address: http://h:1."), "connecting", "http://h:1")
    assert e.code == "unreachable" and "http://h:1" in e.message
    raw = (
        'Request failed with status code 500: Traceback (most recent call last):\n  File "x", line 1\n'
        "RuntimeError: Request failed with status code 400: Traceback ...\n"
        "ValueError: Job with submission_id ftpipe-x already exists. Please use a different submission_id.\n."
    )
    e = translate(RuntimeError(raw), "submitting the job", "http://h:8265", "ftpipe-x")
    assert (
        e.status == 400
        and "already exists. Please use a different submission_id (status 400" in e.message
        and e.job_id == "ftpipe-x"
    )
    e = translate(RuntimeError("Request failed with status code 404: Job nope does not exist."), "reading", "http://h")
    assert e.code == "not-found"
    assert normalize_address("head:8265") == "http://head:8265"
    with pytest.raises(errors.UsageError, match="Ray Client address"):
        normalize_address("ray://head:10001")


def test_unreachable_address_is_a_clear_error(tmp_path: Path) -> None:
    path = sleepy_plugin.write_pipeline(tmp_path / "p")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(path.parent), os.environ.get("PYTHONPATH")])),
        RAY_ADDRESS="http://127.0.0.1:1",
    )
    r = ftpipe("run", path.name, env=env, cwd=path.parent, timeout=120)
    assert r.returncode == errors.EXIT_INVALID, r.stderr  # a preflight check: nothing was submitted
    assert "cannot reach the Ray Jobs API at http://127.0.0.1:1" in r.stderr and "ray start --head" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (path.parent / ".ftpipe" / "jobs" / "ray" / "sleepy.json").exists()


def test_job_side_falls_back_to_a_node_store_when_the_client_store_is_not_visible(tmp_path: Path) -> None:
    path = sleepy_plugin.write_pipeline(tmp_path / "p", executor_extra="")
    node_store = tmp_path / "node-store"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(path.parent), os.environ.get("PYTHONPATH")])),
        FTPIPE_STORE=str(node_store),
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ftpipe.executors.ray_job",
            path.name,
            "--run-id",
            "r1",
            "--client-store",
            str(tmp_path / "elsewhere"),
            "--nonce",
            "n0",
        ],
        env=env,
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1].split(" ", 1)[1])
    assert result["exit_code"] == 0 and result["store"] == str(node_store)
    assert result["record"]["run_id"] == "r1" and result["record"]["executor"] == "ray"
    assert (node_store / "runs" / "r1" / "run.json").exists()


def test_storage_sync_pulls_cached_results_and_pushes_the_run(tmp_path: Path) -> None:
    from ftpipe.executors.ray_job import RemoteStore, pull_for_plan, push_run

    remote_root, node = tmp_path / "remote", tmp_path / "node"
    done = remote_root / "cache" / "k1"
    done.mkdir(parents=True)
    (done / "model.json").write_text("{}")
    (done / "_result.json").write_text("{}")
    (remote_root / "cache" / "k2").mkdir()  # an upload cut short: no _result.json
    (remote_root / "cache" / "k2" / "model.json").write_text("{}")
    remote = RemoteStore(str(remote_root))
    pull_for_plan(remote, node, ["k1", "k2"], lambda _t: None)
    assert (node / "cache" / "k1" / "_result.json").exists()
    assert not (node / "cache" / "k2").exists()
    (node / "runs" / "r1").mkdir(parents=True)
    (node / "runs" / "r1" / "run.json").write_text("{}")
    (node / "cache" / "k3").mkdir()
    (node / "cache" / "k3" / "_result.json").write_text("{}")
    (node / "state" / "k4").mkdir(parents=True)
    (node / "state" / "k4" / "checkpoint.txt").write_text("7")
    record = {
        "run_id": "r1",
        "steps": {
            "a": {"artifact": "cache/k3", "status": "done", "key": "k3"},
            "b": {"status": "interrupted", "key": "k4"},
        },
    }
    push_run(remote, node, record, lambda _t: None)
    assert (remote_root / "runs" / "r1" / "run.json").exists()
    assert (remote_root / "cache" / "k3" / "_result.json").exists()
    assert (remote_root / "state" / "k4" / "checkpoint.txt").read_text() == "7"


def test_secrets_are_not_forwarded_to_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftpipe.contracts import RunRequest
    from ftpipe.executors.ray_executor import RayBackend, nothing_to_send
    from ftpipe.executors.remote import RemoteRun

    path = sleepy_plugin.write_pipeline(tmp_path / "p")
    text = path.read_text().replace(
        "model:\n  base: builtin:tiny", "model:\n  base: ${env:BASE_MODEL:-builtin:tiny}\n  token: ${env:HF_TOKEN}"
    )
    path.write_text(text)
    monkeypatch.syspath_prepend(str(path.parent))
    from ftpipe import registry

    registry.plugins.cache_clear()
    registry.pipeline_model.cache_clear()
    try:
        monkeypatch.setenv("BASE_MODEL", "builtin:tiny")
        monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
        backend = RemoteRun(RunRequest(pipeline_path=path), RayBackend, secrets_elsewhere=True).backend
        env_vars, secret = backend.env_for_job()
        # a secret only the cluster's environment holds: the run is still sent (and never run here)
        monkeypatch.delenv("HF_TOKEN")
        with pytest.raises(errors.UsageError, match="HF_TOKEN is not set"):
            RemoteRun(RunRequest(pipeline_path=path), RayBackend)
        elsewhere = RemoteRun(RunRequest(pipeline_path=path), RayBackend, secrets_elsewhere=True)
        assert elsewhere.ctx.prepared.unset_secrets == ("HF_TOKEN",)
        assert not nothing_to_send(elsewhere)
    finally:
        registry.plugins.cache_clear()
        registry.pipeline_model.cache_clear()
    assert env_vars == {"BASE_MODEL": "builtin:tiny"}
    assert secret == {"HF_TOKEN"}


# --------------------------------------------------------------------------- a real cluster


@pytest.mark.ray
def test_runs_on_ray_then_is_up_to_date_without_a_job(ray_cluster, tmp_path: Path) -> None:
    path = sleepy_plugin.write_pipeline(tmp_path / "p", name="rayok", seconds=0.5)
    env = ray_cluster.client_env(path.parent)
    r = ftpipe("run", path.name, "--json", env=env, cwd=path.parent)
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert (
        out["status"] == "succeeded"
        and out["executor"] == "ray"
        and out["steps"] == {"prepare": "done", "train": "done"}
    )
    assert out["ray_job"] == f"ftpipe-rayok-{out['run_id']}"
    assert "train: started" in r.stderr and "sleepy: training started" in r.stderr  # the job's log, streamed
    store = path.parent / ".ftpipe"
    record = json.loads((store / "runs" / out["run_id"] / "run.json").read_text())
    assert record["remote"]["state"] == "SUCCEEDED" and record["pipeline_path"] == str(path.resolve())
    assert (store / record["steps"]["train"]["artifact"] / "model" / "weights.txt").exists()
    assert (store / "runs" / out["run_id"] / "logs" / "ray.log").exists()
    assert not (store / "jobs" / "ray" / "rayok.json").exists()  # nothing in flight
    job = ray_cluster.job(out["ray_job"])
    assert job["status"] == "SUCCEEDED" and job["metadata"]["ftpipe_run_id"] == out["run_id"]

    again = ftpipe("run", path.name, "--json", env=env, cwd=path.parent)
    assert again.returncode == 0, again.stderr
    assert last_json(again.stdout)["up_to_date"] is True
    assert len(ray_cluster.jobs("rayok")) == 1  # an unchanged pipeline sends nothing to the cluster


@pytest.mark.ray
def test_a_failed_step_fails_the_run_with_its_error(ray_cluster, tmp_path: Path) -> None:
    path = sleepy_plugin.write_pipeline(tmp_path / "p", name="rayfail", fail=True)
    r = ftpipe("run", path.name, "--json", env=ray_cluster.client_env(path.parent), cwd=path.parent)
    assert r.returncode == errors.EXIT_STEP_FAILED, r.stderr
    out = last_json(r.stdout)
    assert out["status"] == "failed" and out["steps"]["train"] == "failed"
    record = json.loads((path.parent / ".ftpipe" / "runs" / out["run_id"] / "run.json").read_text())
    assert "sleepy failed on purpose" in record["steps"]["train"]["error"]
    assert "Traceback" not in r.stderr


@pytest.mark.ray
def test_storage_path_brings_artifacts_back(ray_cluster, tmp_path: Path) -> None:
    shared = tmp_path / "cluster-store"
    path = sleepy_plugin.write_pipeline(tmp_path / "p", name="raystore", executor_extra=f"  storage: {shared}\n")
    local = tmp_path / "local-store"
    r = ftpipe(
        "run", path.name, "--json", "--store", str(local), env=ray_cluster.client_env(path.parent), cwd=path.parent
    )
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert (shared / "runs" / out["run_id"] / "run.json").exists()  # the job wrote there
    record = json.loads((local / "runs" / out["run_id"] / "run.json").read_text())
    assert record["store"] == str(local.resolve())
    assert (local / record["steps"]["train"]["artifact"] / "_result.json").exists()
    assert "brought run" in r.stderr


@pytest.mark.ray
def test_auth_failure_is_a_clear_error(ray_cluster, tmp_path: Path) -> None:
    path = sleepy_plugin.write_pipeline(tmp_path / "p", name="rayauth")
    r = ftpipe(
        "run", path.name, env=ray_cluster.client_env(path.parent, RAY_AUTH_TOKEN="not-the-token"), cwd=path.parent
    )
    assert r.returncode == errors.EXIT_INVALID  # refused by the preflight check, before any upload
    assert "authentication failed" in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr
    assert ray_cluster.jobs("rayauth") == []


@pytest.mark.ray
def test_plan_check_on_the_ray_example_reaches_the_cluster(ray_cluster, tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    shutil.copytree(REPO / "pipelines" / "data", folder / "data")
    shutil.copy(REPO / "pipelines" / "ray-cluster.yaml", folder / "ray-cluster.yaml")
    r = ftpipe("plan", "ray-cluster.yaml", "--check", "--json", env=ray_cluster.client_env(), cwd=folder)
    assert r.returncode == 0, r.stdout + r.stderr
    checks = json.loads(r.stdout)["checks"]
    assert any("Ray cluster reachable" in c["what"] and c["ok"] for c in checks), checks
    assert ray_cluster.jobs("ray-cluster") == []  # looking submits nothing


@pytest.mark.ray
def test_ctrl_c_stops_the_job(ray_cluster, tmp_path: Path) -> None:
    path = sleepy_plugin.write_pipeline(tmp_path / "p", name="raystop", seconds=120)
    err = tmp_path / "stderr.txt"
    with open(err, "w") as ferr:
        proc = subprocess.Popen(
            [*FTPIPE, "run", path.name, "--json"],
            env=ray_cluster.client_env(path.parent),
            cwd=path.parent,
            stdout=subprocess.PIPE,
            stderr=ferr,
            text=True,
            preexec_fn=sigint_default,
        )
    try:
        wait_for(err, "sleepy: training started", proc)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == errors.EXIT_INTERRUPTED, err.read_text()
    out = last_json(stdout)
    assert out["status"] == "interrupted"
    assert ray_cluster.job(out["ray_job"])["status"] == "STOPPED"
    record = json.loads((path.parent / ".ftpipe" / "runs" / out["run_id"] / "run.json").read_text())
    assert record["steps"]["train"]["status"] == "interrupted"  # the job's engine saw the stop
    assert not (path.parent / ".ftpipe" / "jobs" / "ray" / "raystop.json").exists()


@pytest.mark.ray
def test_ctrl_c_leaves_the_job_running_when_told_to_and_the_next_run_reattaches(ray_cluster, tmp_path: Path) -> None:
    path = sleepy_plugin.write_pipeline(
        tmp_path / "p", name="raykeep", seconds=6, executor_extra="  stop_on_interrupt: false\n"
    )
    env = ray_cluster.client_env(path.parent)
    err = tmp_path / "stderr.txt"
    with open(err, "w") as ferr:
        proc = subprocess.Popen(
            [*FTPIPE, "run", path.name],
            env=env,
            cwd=path.parent,
            stdout=subprocess.DEVNULL,
            stderr=ferr,
            preexec_fn=sigint_default,
        )
    try:
        wait_for(err, "sleepy: training started", proc)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == errors.EXIT_INTERRUPTED, err.read_text()
    assert "keeps running" in err.read_text()
    state = json.loads((path.parent / ".ftpipe" / "jobs" / "ray" / "raykeep.json").read_text())
    assert ray_cluster.job(state["submission_id"])["status"] in ("PENDING", "RUNNING")

    r = ftpipe("run", path.name, "--json", env=env, cwd=path.parent)
    assert r.returncode == 0, r.stderr
    assert f"re-attaching to Ray job {state['submission_id']}" in r.stderr
    out = last_json(r.stdout)
    assert out["run_id"] == state["run_id"] and out["steps"]["train"] == "done"
    assert len(ray_cluster.jobs("raykeep")) == 1


@pytest.mark.ray
def test_a_killed_runner_reattaches_instead_of_resubmitting(ray_cluster, tmp_path: Path) -> None:
    path = sleepy_plugin.write_pipeline(tmp_path / "p", name="rayattach", seconds=8)
    env = ray_cluster.client_env(path.parent)
    err = tmp_path / "stderr.txt"
    with open(err, "w") as ferr:
        first = subprocess.Popen(
            [*FTPIPE, "run", path.name], env=env, cwd=path.parent, stdout=subprocess.DEVNULL, stderr=ferr
        )
    try:
        wait_for(err, "sleepy: training started", first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    state = json.loads((path.parent / ".ftpipe" / "jobs" / "ray" / "rayattach.json").read_text())
    assert ray_cluster.job(state["submission_id"])["status"] in ("PENDING", "RUNNING")

    r = ftpipe("run", path.name, "--json", env=env, cwd=path.parent)
    assert r.returncode == 0, r.stderr
    assert f"re-attaching to Ray job {state['submission_id']}" in r.stderr
    out = last_json(r.stdout)
    assert out["run_id"] == state["run_id"] and out["steps"]["train"] == "done"
    assert [j["submission_id"] for j in ray_cluster.jobs("rayattach")] == [state["submission_id"]]


@pytest.mark.ray
@pytest.mark.integration
def test_the_ray_cluster_example_pipeline_runs_on_ray(ray_cluster, tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    shutil.copytree(REPO / "pipelines" / "data", folder / "data")
    shutil.copy(REPO / "pipelines" / "ray-cluster.yaml", folder / "ray-cluster.yaml")
    r = ftpipe("run", "ray-cluster.yaml", "--json", env=ray_cluster.client_env(), cwd=folder, timeout=560)
    # the example trains a model that passes its gate and is deployed, on the cluster as here
    assert r.returncode == 0, r.stderr[-4000:]
    out = last_json(r.stdout)
    assert out["steps"]["train"] == "done" and out["steps"]["evaluate"] == "done"
    assert out["steps"]["gate"] == "done" and out["steps"]["deploy.local"] == "done"
    assert out["exit_code"] == 0 and out["status"] == "succeeded"


@pytest.mark.ray
def test_a_job_that_finished_while_no_runner_watched_is_reported_not_rerun(ray_cluster, tmp_path: Path) -> None:
    path = sleepy_plugin.write_pipeline(tmp_path / "p", name="rayaway", seconds=1)
    env = ray_cluster.client_env(path.parent)
    err = tmp_path / "stderr.txt"
    with open(err, "w") as ferr:
        first = subprocess.Popen(
            [*FTPIPE, "run", path.name], env=env, cwd=path.parent, stdout=subprocess.DEVNULL, stderr=ferr
        )
    try:
        wait_for(err, "Running entrypoint for job", first)  # the job exists
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    state = json.loads((path.parent / ".ftpipe" / "jobs" / "ray" / "rayaway.json").read_text())
    deadline = time.monotonic() + 120
    while ray_cluster.job(state["submission_id"])["status"] not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    r = ftpipe("run", path.name, "--json", env=env, cwd=path.parent)
    assert r.returncode == 0, r.stderr
    assert "ended while no runner was attached" in r.stderr
    out = last_json(r.stdout)
    assert out["run_id"] == state["run_id"] and out["steps"]["train"] == "done"
    assert len(ray_cluster.jobs("rayaway")) == 1
