"""Multi-worker training on Ray Train, on a real local cluster: 2 CPU workers (gloo) train
the tiny model like one worker with the same global batch, and a worker killed mid-run is
restarted from the last checkpoint."""

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
from ray_cluster import ray_cluster_fixture  # noqa: F401 - the module-scoped `ray_cluster` fixture

REPO = Path(__file__).resolve().parents[2]
FTPIPE = [sys.executable, "-c", "from ftpipe.cli import run_cli; run_cli()"]
LOSS_TOLERANCE = 0.02  # relative, per logged step: float reductions differ, the examples do not

PIPELINE = """\
version: 1
name: {name}
dataset:
  source: {{type: local, path: data/recipes.jsonl}}
  format: chat
  split: {{validation: 0.0, test: 0.1, seed: 42}}
model:
  base: builtin:tiny
trainer:
  backend: trl
  peft: {{type: none}}
  hyperparameters: {{max_steps: {steps}, batch_size: {batch}, learning_rate: 5.0e-3, max_seq_length: 256,
                    logging_steps: 1}}
  checkpoint: {{every_steps: {every}, keep: 2}}
  resources: {{workers: {workers}, cpus_per_worker: 0.5, max_failures: {failures}}}
executor: {executor}
"""
RAY = "{type: ray, resources: {cpus: 0.5}}"


def write(
    folder: Path,
    *,
    name: str,
    workers: int,
    batch: int,
    steps: int,
    every: int = 50,
    failures: int = 0,
    executor: str = RAY,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "data").exists():
        shutil.copytree(REPO / "pipelines" / "data", folder / "data")
    path = folder / f"{name}.yaml"
    path.write_text(
        PIPELINE.format(
            name=name, workers=workers, batch=batch, steps=steps, every=every, failures=failures, executor=executor
        )
    )
    return path


def env_for(cluster, folder: Path) -> dict[str, str]:
    return cluster.client_env(REPO, FTPIPE_STORE=str(folder / ".ftpipe"))


def train_record(folder: Path, run_id: str) -> tuple[dict, list[dict]]:
    store = folder / ".ftpipe"
    record = json.loads((store / "runs" / run_id / "run.json").read_text())
    artifact = store / record["steps"]["train"]["artifact"]
    return record, json.loads((artifact / "loss.json").read_text())


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.ray
@pytest.mark.integration
def test_two_workers_train_like_one_worker_with_the_same_global_batch(ray_cluster, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    two = write(folder, name="ddp2", workers=2, batch=4, steps=6)
    r = subprocess.run(
        [*FTPIPE, "run", two.name, "--json"],
        env=env_for(ray_cluster, folder),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert r.returncode in (0, 3), r.stderr[-4000:]
    record, history = train_record(folder, last_json(r.stdout)["run_id"])
    train = record["steps"]["train"]
    assert train["metrics"]["ray_workers"] == 2 and train["metrics"]["global_step"] == 6

    one = write(folder, name="ddp1", workers=1, batch=8, steps=6, executor="{type: local}")
    r1 = subprocess.run(
        [*FTPIPE, "run", one.name, "--json"],
        env=env_for(ray_cluster, folder),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert r1.returncode in (0, 3), r1.stderr[-4000:]
    _, history1 = train_record(folder, last_json(r1.stdout)["run_id"])

    losses = [h["loss"] for h in history if "loss" in h]
    losses1 = [h["loss"] for h in history1 if "loss" in h]
    assert len(losses) == len(losses1) == 6
    for step, (a, b) in enumerate(zip(losses, losses1, strict=True), start=1):
        assert abs(a - b) <= LOSS_TOLERANCE * b, f"step {step}: 2 workers {a:.4f} vs 1 worker {b:.4f}"
    assert losses[-1] < losses[0]  # it learned
    # one model, in the artifact, loadable
    model = folder / ".ftpipe" / train["artifact"] / "model"
    assert (model / "config.json").exists() and len(list(model.glob("*.safetensors"))) == 1


def _registered(snapshot: Path) -> bool:
    """Ray Train has registered a checkpoint (a folder alone may still be uploading)."""
    try:
        return bool(json.loads(snapshot.read_text()).get("latest_checkpoint_result"))
    except (OSError, ValueError):
        return False


def _worker_pids() -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines() if "RayTrainWorker" in line]


@pytest.mark.ray
@pytest.mark.integration
def test_a_killed_worker_resumes_from_the_last_checkpoint(ray_cluster, tmp_path: Path) -> None:
    folder = tmp_path / "k"
    path = write(folder, name="rayfail", workers=2, batch=2, steps=60, every=5, failures=2)
    proc = subprocess.Popen(
        [*FTPIPE, "run", path.name, "--json"],
        env=env_for(ray_cluster, folder),
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        killed = None
        while time.monotonic() < deadline and proc.poll() is None:
            reported = [
                f
                for f in (folder / ".ftpipe" / "state").glob("*/ray-train/*/checkpoint_manager_snapshot.json")
                if _registered(f)
            ]
            pids = _worker_pids()
            if reported and pids:
                killed = pids[-1]
                victim = subprocess.run(
                    ["ps", "-o", "args=", "-p", str(killed)], capture_output=True, text=True, check=False
                ).stdout.strip()
                os.kill(killed, signal.SIGKILL)
                break
            time.sleep(0.2)
        assert killed is not None, "no checkpoint was reported while the workers ran"
        stdout, stderr = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 3), stderr[-4000:]
    record, _ = train_record(folder, last_json(stdout)["run_id"])
    metrics = record["steps"]["train"]["metrics"]
    log = (folder / ".ftpipe" / record["steps"]["train"]["log"]).read_text()
    assert metrics["restarts"] >= 1 and metrics["global_step"] == 60, (victim, metrics, log[-3000:])
    resumed = [int(s) for s in str(metrics["restarted_at_steps"]).split(",")]
    assert all(s > 0 and s % 5 == 0 for s in resumed), metrics  # from a checkpoint, not from scratch
    shown = subprocess.run(
        [*FTPIPE, "runs", "show", record["run_id"], "--json"],
        env=env_for(ray_cluster, folder),
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(shown.stdout)["steps"]["train"]["metrics"]["restarts"] >= 1
