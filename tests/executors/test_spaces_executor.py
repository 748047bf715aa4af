"""The hf-spaces executor against the loopback Hub. The Hub's ``space_runner`` stands in for
Docker: it runs the CMD of the Dockerfile the executor uploaded, as a local subprocess, with
the Space's secrets and variables as its environment — so the Space runs the same entry code
(``python -m ftpipe.executors.space_entry``) it would run on the Hub."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftpipe import __version__, registry
from ftpipe.contracts import RunRequest
from ftpipe.executors import remote, spaces
from tests.executors import sleepy_plugin
from tests.fakes.hub_server import HubServer, hub_fixture  # noqa: F401 - registers the `hub` fixture

REPO = Path(__file__).resolve().parents[2]

PIPELINE = """\
version: 1
name: spacey
description: ${{env:FTPIPE_NOTE}}
dataset:
  source: {{type: local, path: data/recipes.jsonl}}
  format: chat
  split: {{validation: 0.1, test: 0.1, seed: 42}}
model:
  base: builtin:tiny
  token: ${{env:EXTRA_TOKEN}}
trainer: {{backend: sleepy, seconds: 0}}
executor:
  type: hf-spaces
  hardware: cpu-upgrade
  timeout_s: {timeout}
"""
EXTRA_SECRET = "extra-secret-value-5f1c"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """A folder with the sleepy trainer plugin installed (importable here through sys.path, in
    the 'Space' through PYTHONPATH: the Dockerfile pip-installs its distribution)."""
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    sleepy_plugin.install(folder)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("FTPIPE_NOTE", "a plain variable")
    monkeypatch.setenv("EXTRA_TOKEN", EXTRA_SECRET)
    registry.plugins.cache_clear()
    registry.pipeline_model.cache_clear()
    monkeypatch.setattr(spaces.SpaceBackend, "poll_max_s", 0.3)

    def write(*, data: str | None = None, timeout: int = 120) -> Path:
        src = REPO / "pipelines" / "data" / "recipes.jsonl"
        (folder / "data" / "recipes.jsonl").write_text(data if data is not None else src.read_text())
        path = folder / "spacey.yaml"
        path.write_text(PIPELINE.format(timeout=timeout))
        return path

    yield write
    registry.plugins.cache_clear()
    registry.pipeline_model.cache_clear()


def docker_cmd(hub: HubServer, tmp_path: Path, pythonpath: Path, extra_env: dict[str, str] | None = None) -> Callable:
    """A space_runner that runs the Dockerfile's CMD (with its FTPIPE_* ENV) as a subprocess and
    stops it when the Hub stops the Space (SIGTERM, as Docker does)."""

    def run(space_id: str, files: dict[str, bytes], secrets: dict[str, str], variables: dict[str, str]) -> None:
        stop = hub.space_stop_event(space_id)
        docker = files["Dockerfile"].decode()
        env_from_docker: dict[str, str] = {}
        for line in docker.splitlines():
            if line.startswith("ENV "):
                for part in shlex.split(line[4:]):
                    key, _, value = part.partition("=")
                    if key.startswith("FTPIPE_"):
                        env_from_docker[key] = value
        cmd = json.loads(next(ln for ln in docker.splitlines() if ln.startswith("CMD "))[4:])
        assert cmd[0] == "python"
        home = tmp_path / f"space-home-{len(list(tmp_path.glob('space-home-*')))}"
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "HF_HOME": str(home / "hf"),
            "HF_ENDPOINT": hub.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONPATH": os.pathsep.join([str(REPO), str(pythonpath)]),
            "FTPIPE_CACHE": os.environ["FTPIPE_CACHE"],
            "SPACE_ID": space_id,
            **env_from_docker,
            "FTPIPE_SPACE_WORKDIR": str(home / "work"),
            "FTPIPE_STATUS_PORT": "0",
            **variables,
            **secrets,
            **(extra_env or {}),
        }
        proc = subprocess.Popen(
            [sys.executable, *cmd[1:]],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def pump() -> None:
            for line in proc.stdout:
                hub.space_log(space_id, line.rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        while proc.poll() is None:
            if stop.wait(0.05):
                proc.terminate()  # the Hub stops the container: SIGTERM
                proc.wait(30)
        reader.join(10)
        if proc.returncode != 0:
            raise RuntimeError(f"the container's main process exited with {proc.returncode}")

    return run


def cli(*args: str) -> tuple[int, str, str]:
    from ftpipe.cli import commands, main, more  # noqa: F401 - registers the commands

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def space_of(hub: HubServer) -> str:
    ids = [rid for (kind, rid) in hub._repos if kind == "space"]
    assert len(ids) == 1, ids
    return ids[0]


def test_space_files_pin_ftpipe_and_the_libraries() -> None:
    """quickstart-spaces: the Dockerfile pins this ftpipe, installs the lock captured here."""
    from importlib.metadata import version

    from ftpipe.engine import load_checked

    path = REPO / "pipelines" / "quickstart-spaces.yaml"
    pipeline = load_checked(path).pipeline
    sub = spaces.Submission(
        request_id="r",
        space_id="me/ftpipe-quickstart-spaces-0123abcd",
        inputs_repo="me/ftpipe-quickstart-spaces-inputs",
        inputs_revision="a" * 40,
        results_repo="me/ftpipe-quickstart-spaces-results",
        fingerprint="f",
        hardware="cpu-upgrade",
        submitted_at="now",
    )
    files = spaces.space_files(pipeline, sub, "0123abcd")
    docker = files["Dockerfile"]
    assert f'"ftpipe[hub,train]=={__version__}"' in docker
    assert "-c constraints.txt" in docker
    assert f"FTPIPE_INPUTS_REVISION={'a' * 40}" in docker
    assert docker.rstrip().endswith('CMD ["python", "-m", "ftpipe.executors.space_entry"]')
    lock = dict(line.split("==") for line in files["constraints.txt"].splitlines())
    for lib in ("transformers", "trl", "peft", "pydantic", "huggingface-hub"):
        assert lock[lib] == version(lib), lib
    assert "+" not in lock["torch"] and version("torch").startswith(lock["torch"])
    assert "ftpipe" not in lock
    assert "sdk: docker" in files["README.md"]
    assert spaces.space_names("Me", "My.Pipe", "0123abcd") == (
        "Me/ftpipe-my-pipe-0123abcd",
        "Me/ftpipe-my-pipe-inputs",
        "Me/ftpipe-my-pipe-results",
    )


@pytest.mark.integration
def test_round_trip_runs_in_a_private_space_and_comes_home(hub: HubServer, project, tmp_path: Path, capfd) -> None:
    from huggingface_hub import HfApi

    hub.space_stage_after_exit = "RUNTIME_ERROR"  # as the real Hub shows an exited container
    path = project()
    runner_env: dict[str, str] = {}
    hub.space_runner = docker_cmd(hub, tmp_path, path.parent, runner_env)

    code, out, err = cli("run", str(path), "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["executor"] == "hf-spaces"
    space_id = space_of(hub)
    assert space_id.startswith("tester/ftpipe-spacey-") and len(space_id.rsplit("-", 1)[1]) == 8
    assert summary["space"] == space_id
    assert "Space " + space_id + ": RUNNING" in err and "paused" in err

    # the image pins this ftpipe and the plugin that trains; the data is not among the Space's files
    files = hub.files(space_id, "space")
    docker = files["Dockerfile"].decode()
    assert f'"ftpipe[hub]=={__version__}"' in docker and '"ftpipe_sleepy==0.1"' in docker
    assert set(files) == {".gitattributes", "README.md", "Dockerfile", "constraints.txt"}
    api = HfApi()
    assert api.repo_info(space_id, repo_type="space").private
    # the pipeline and its data are in a private dataset repo, at the revision the Dockerfile pins
    inputs = "tester/ftpipe-spacey-inputs"
    assert api.repo_info(inputs, repo_type="dataset").private
    revision = next(ln.split("=", 1)[1] for ln in docker.splitlines() if "FTPIPE_INPUTS_REVISION=" in ln)
    data = hub.files(inputs, "dataset", revision=revision)
    assert data["data/recipes.jsonl"] == (path.parent / "data" / "recipes.jsonl").read_bytes()
    assert data["spacey.yaml"] == path.read_bytes()
    assert api.repo_info("tester/ftpipe-spacey-results", repo_type="dataset").private

    # tokens only as Space secrets; a plain reference as a variable
    assert hub.space_secrets(space_id) == {"HF_TOKEN": hub.token, "EXTRA_TOKEN": EXTRA_SECRET}
    assert hub.space_variables(space_id) == {"FTPIPE_NOTE": "a plain variable"}
    blobs: list[tuple[str, bytes]] = []
    for repo, kind in ((space_id, "space"), (inputs, "dataset"), ("tester/ftpipe-spacey-results", "dataset")):
        for commit in hub.commits(repo, kind):  # every file of every commit
            blobs += [
                (f"{repo}@{commit['oid'][:8]}:{p}", c) for p, c in hub.files(repo, kind, revision=commit["oid"]).items()
            ]
    blobs += [(str(p), p.read_bytes()) for p in (path.parent / ".ftpipe").rglob("*") if p.is_file()]
    blobs += [("variables", json.dumps(hub.space_variables(space_id)).encode())]
    blobs += [("space logs", "\n".join(api.fetch_space_logs(space_id)).encode())]
    captured = capfd.readouterr()
    blobs += [("client output", (out + err + captured.out + captured.err).encode())]
    for secret in (hub.token, EXTRA_SECRET):
        leaks = [where for where, content in blobs if secret.encode() in content]
        assert not leaks, f"secret found in {leaks}"

    # the run record and the model are home; runs list/show read them like a local run
    store = path.parent / ".ftpipe"
    record = json.loads((store / "runs" / summary["run_id"] / "run.json").read_text())
    assert record["status"] == "succeeded" and record["executor"] == "hf-spaces"
    assert record["remote"]["space"] == space_id and record["store"] == str(store)
    train = record["steps"]["train"]
    assert train["status"] == "done"
    assert (store / train["artifact"] / "model" / "weights.txt").read_text() == "zzz\n"
    assert (store / record["steps"]["prepare"]["artifact"] / "train.jsonl").exists()
    assert (store / "runs" / summary["run_id"] / "logs" / "train.log").exists()
    code, out, _ = cli("runs", "list", "--store", str(store), "--json")
    assert [r["run_id"] for r in json.loads(out)] == [summary["run_id"]]
    code, out, _ = cli("runs", "show", summary["run_id"], "--store", str(store))
    assert code == 0 and "succeeded" in out and "hf-spaces" in out and "slept 0s" in out

    assert hub.space_runtime(space_id)["stage"] == "PAUSED"

    # again: the same Space, restarted; its store is seeded from the results repo, so every step is
    # cached. This time the container does not pause itself: it exits, and the Hub shows RUNTIME_ERROR
    # (as it does for any exited container); the pushed result still says how the run went.
    runner_env["FTPIPE_SELF_PAUSE"] = "0"
    code, out, err = cli("run", str(path), "--json")
    assert code == 0, err
    again = json.loads(out.strip().splitlines()[-1])
    assert again["steps"] == {"prepare": "cached", "train": "cached"} and again["run_id"] != summary["run_id"]
    assert "reusing 2 finished steps" in err
    assert space_of(hub) == space_id and hub.space_runtime(space_id)["stage"] == "PAUSED"


@pytest.mark.integration
def test_failing_run_pauses_the_space_and_brings_the_failure_home(hub: HubServer, project, tmp_path: Path) -> None:
    rows = [
        json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]})
        for i in range(30)
    ]
    rows[7] = '{"messages": [{"role": "user", "content": "broken row"'
    path = project(data="\n".join(rows) + "\n")
    hub.space_runner = docker_cmd(hub, tmp_path, path.parent)

    code, out, err = cli("run", str(path), "--json")
    assert code == 1, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "failed" and summary["steps"] == {"prepare": "failed", "train": "not-run"}
    assert "prepare failed" in err
    space_id = space_of(hub)
    assert hub.space_runtime(space_id)["stage"] == "PAUSED"
    store = path.parent / ".ftpipe"
    code, out, _ = cli("runs", "show", summary["run_id"], "--store", str(store))
    assert "error: 1 invalid rows of 30" in out and "data/recipes.jsonl row 8: invalid JSON" in out
    assert (store / "runs" / summary["run_id"] / "logs" / "prepare.log").exists()


@pytest.mark.integration
@pytest.mark.parametrize("stage", ["RUNTIME_ERROR", "BUILD_ERROR"])
def test_a_broken_space_fails_with_its_last_log_lines(hub: HubServer, project, tmp_path: Path, stage: str) -> None:
    path = project()
    line = "ERROR: No matching distribution found for ftpipe_sleepy==0.1"

    def broken(space_id: str, files: dict, secrets: dict, variables: dict) -> None:
        if stage == "BUILD_ERROR":
            hub.space_log(space_id, line, build=True)  # the image failed to build: nothing ran
            return
        hub.space_log(space_id, line)
        raise RuntimeError("exit code 1")

    hub.space_stage_after_exit = stage
    hub.space_runner = broken
    code, out, err = cli("run", str(path), "--json")
    assert code == 1
    assert stage in err and line in err and "last log lines" in err
    space_id = space_of(hub)
    assert hub.space_runtime(space_id)["stage"] == "PAUSED"
    store = path.parent / ".ftpipe"
    (record,) = [json.loads(p.read_text()) for p in store.glob("runs/*/run.json")]
    assert record["status"] == "failed" and line in record["error"] and record["executor"] == "hf-spaces"
    assert json.loads(out.strip().splitlines()[-1])["run_id"] == record["run_id"]
    assert record["steps"]["prepare"]["status"] == "not-run"
    assert hub.token not in json.dumps(record)
    code, out, _ = cli("runs", "show", record["run_id"], "--store", str(store))
    assert f"Space {space_id} {stage}" in out


@pytest.mark.integration
def test_timeout_and_interrupt_pause_the_space(
    hub: HubServer, project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = project(timeout=1)
    stopped: list[str] = []

    def hang(space_id: str, files: dict, secrets: dict, variables: dict) -> None:
        if hub.space_stop_event(space_id).wait(120):
            stopped.append(space_id)

    hub.space_runner = hang
    code, _, err = cli("run", str(path))
    assert code == 1 and "timed out after 1s" in err
    space_id = space_of(hub)
    assert hub.space_runtime(space_id)["stage"] == "PAUSED"

    class CtrlC:
        monotonic = staticmethod(__import__("time").monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(remote, "time", CtrlC)
    code, _, err = cli("run", str(path))
    assert code == 130 and "interrupted" in err
    assert hub.space_runtime(space_id)["stage"] == "PAUSED"
    statuses = sorted(json.loads(p.read_text())["status"] for p in (path.parent / ".ftpipe").glob("runs/*/run.json"))
    assert statuses == ["failed", "interrupted"]
    deadline = __import__("time").monotonic() + 60  # only catches a hang
    while len(stopped) < 2 and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.05)
    assert stopped == [space_id, space_id]  # both runs were stopped by the pause


@pytest.mark.integration
def test_a_killed_runner_reattaches_instead_of_starting_another(hub: HubServer, project, tmp_path: Path) -> None:
    path = project()
    hub.space_runner = docker_cmd(hub, tmp_path, path.parent)
    first = remote.RemoteRun(RunRequest(pipeline_path=path), spaces.SpaceBackend)
    state = first.new_state()
    first.backend.submit(state, first.persist)  # ... and the runner dies (kill -9) before it follows the Space
    space_id = state["space_id"]

    code, out, err = cli("run", str(path), "--json")
    assert code == 0, err
    assert "re-attaching to Space" in err or "finished while no runner was attached" in err
    assert json.loads(out.strip().splitlines()[-1])["status"] == "succeeded"
    assert hub._repos[("space", space_id)].space.runs == 1  # one container run: nothing resubmitted
    assert hub.space_runtime(space_id)["stage"] == "PAUSED"
    assert not (path.parent / ".ftpipe" / "jobs" / "hf-spaces" / "spacey.json").exists()


@pytest.mark.integration
def test_a_run_that_cannot_start_in_the_space_reports_why(hub: HubServer, project, tmp_path: Path) -> None:
    """The image lacks the trainer plugin: `ftpipe run` there rejects the pipeline, no record is made;
    the client still gets the exit code and the Space's last log lines."""
    path = project()
    empty = tmp_path / "no-plugins"
    empty.mkdir()
    hub.space_runner = docker_cmd(hub, tmp_path, empty)

    code, out, err = cli("run", str(path), "--json")
    assert code == 2, err
    assert "reported no run record" in err and "sleepy" in err.split("last log lines:", 1)[1]
    assert json.loads(out.strip().splitlines()[-1])["status"] == "failed"
    assert hub.space_runtime(space_of(hub))["stage"] == "PAUSED"
