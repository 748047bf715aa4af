"""The ``hf-spaces`` executor: runs the pipeline inside a private Docker Space, reproducibly.

AutoTrain's Spaces backend installs whatever autotrain-advanced is newest when the
container starts. Here the Space's image pins the ftpipe that made the plan and a lock of
every library the pipeline needs, captured from this environment; the inputs go to a
private dataset repo at a pinned revision (:mod:`ftpipe.executors.hub_run`); tokens go
only into Space secrets.

The Space ``<ns>/ftpipe-<pipeline>-<plan hash>`` gets a Dockerfile whose CMD is ``python -m
ftpipe.executors.space_entry`` (which runs ``ftpipe run ... --executor local --json`` and
pushes the run to the results repo). Submitting, re-attaching, retries, logs and bringing
the run home are the remote skeleton's (:mod:`ftpipe.executors.remote`). The Space is
paused when the run is over, whatever the outcome, and on Ctrl-C — never while its run is
still going because a Hub call failed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ftpipe import __version__
from ftpipe.contracts import RunRequest
from ftpipe.executors import hub_run
from ftpipe.executors import space_entry as entry
from ftpipe.executors.remote import Poll, RemoteContext, RemoteRun
from ftpipe.signals import sigterm_as_interrupt
from ftpipe.spec.models import SpacesExecutor

APP_PORT = 7860
SPACE_HOME = "/home/user"


class SpaceStage(str, Enum):
    """A Space's runtime stage, as the Hub reports it."""

    NO_APP_FILE = "NO_APP_FILE"
    CONFIG_ERROR = "CONFIG_ERROR"
    BUILDING = "BUILDING"
    BUILD_ERROR = "BUILD_ERROR"
    APP_STARTING = "APP_STARTING"
    RUNNING = "RUNNING"
    RUNNING_BUILDING = "RUNNING_BUILDING"
    RUNNING_APP_STARTING = "RUNNING_APP_STARTING"
    RUNTIME_ERROR = "RUNTIME_ERROR"
    PAUSED = "PAUSED"
    STOPPED = "STOPPED"
    SLEEPING = "SLEEPING"
    DELETING = "DELETING"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def of(cls, value: str) -> SpaceStage:
        try:
            return cls(str(value))
        except ValueError:
            return cls.UNKNOWN


# The Space's process is gone (or never started): only a pushed result can still say how the run went.
ENDED = frozenset(
    {
        SpaceStage.NO_APP_FILE,
        SpaceStage.CONFIG_ERROR,
        SpaceStage.BUILD_ERROR,
        SpaceStage.RUNTIME_ERROR,
        SpaceStage.PAUSED,
        SpaceStage.STOPPED,
        SpaceStage.SLEEPING,
        SpaceStage.DELETING,
    }
)
ACTIVE = frozenset(
    {
        SpaceStage.BUILDING,
        SpaceStage.APP_STARTING,
        SpaceStage.RUNNING,
        SpaceStage.RUNNING_BUILDING,
        SpaceStage.RUNNING_APP_STARTING,
    }
)
_STAGE_NOTES = {
    SpaceStage.BUILDING: "building the image (the first build installs the pinned libraries: minutes; later builds "
    "reuse the layers)",
    SpaceStage.APP_STARTING: "the container is starting",
    SpaceStage.RUNNING: "running `ftpipe run {file} --executor local` in the Space",
    SpaceStage.RUNNING_BUILDING: "running; a newer build is in progress",
    SpaceStage.BUILD_ERROR: "the image failed to build",
    SpaceStage.RUNTIME_ERROR: "the container stopped",
    SpaceStage.CONFIG_ERROR: "the Space's configuration is invalid",
    SpaceStage.NO_APP_FILE: "the Space lost its Dockerfile",
}


@dataclass
class Submission:
    """The Space's side of a request (what its Dockerfile pins)."""

    request_id: str
    space_id: str
    inputs_repo: str
    inputs_revision: str
    results_repo: str
    fingerprint: str
    hardware: str
    submitted_at: str


class SpacesExecutorImpl:
    name = "hf-spaces"
    config_model = SpacesExecutor

    def preflight(self, ctx: Any, executor: SpacesExecutor) -> list[Any]:
        """Hardware and Hub write access (ftpipe.preflight)."""
        from ftpipe.executors.preflight_checks import spaces_checks

        return list(spaces_checks(ctx, executor))

    def execute(self, request: RunRequest) -> int:
        with sigterm_as_interrupt():
            return RemoteRun(request, SpaceBackend).run()


def space_names(namespace: str, pipeline: str, plan_hash: str) -> tuple[str, str, str]:
    """(Space, inputs dataset, results dataset) ids of a pipeline's plan."""
    inputs, results = hub_run.repo_names(namespace, pipeline)
    return inputs.removesuffix("-inputs") + f"-{plan_hash}", inputs, results


class SpaceBackend:
    """One request run by a private Docker Space (see :class:`ftpipe.executors.remote.RemoteBackend`)."""

    name = "hf-spaces"
    poll_max_s = 10.0
    stop_on_interrupt = True

    def __init__(self, ctx: RemoteContext) -> None:
        from huggingface_hub import HfApi

        self.ctx = ctx
        self.cfg = hub_run.executor_config(ctx, SpacesExecutor, "hf-spaces")
        self.timeout_s = self.cfg.timeout_s
        self.api = HfApi(token=self.cfg.token)

    def where(self, state: dict) -> str:
        return f"Space {state.get('space_id', '?')}"

    # ------------------------------------------------------------------ submit
    def submit(self, state: dict, persist: Callable[[dict], None]) -> None:
        ctx, api, call = self.ctx, self.api, self.ctx.call
        hub_run.input_files(ctx, allow_outside=self.cfg.upload_outside_repo)  # refuse before any upload
        space_id, inputs_repo, results_repo = space_names(
            hub_run.namespace_of(ctx, api, self.cfg.namespace), ctx.pipeline, ctx.plan_hash
        )
        state.update(space_id=space_id, inputs_repo=inputs_repo, results_repo=results_repo, hardware=self.cfg.hardware)
        persist(state)
        note = hub_run.source_checkout_note()
        if note:
            ctx.reporter.message(f"note: {note}")
        secrets_, variables = hub_run.environment(ctx, self.cfg.token)
        hub_run.ensure_private(
            ctx,
            api,
            [(inputs_repo, "dataset"), (results_repo, "dataset"), (space_id, "space")],
            space_sdk="docker",
            space_hardware=_flavor(self.cfg.hardware),
        )
        # nothing starts until the restart below, whatever was running before
        call(f"pausing Space {space_id} while it is set up", lambda: api.pause_space(space_id))
        state["inputs_revision"] = hub_run.upload_inputs(
            ctx, api, inputs_repo, state["request_id"], sorted(secrets_), allow_outside=self.cfg.upload_outside_repo
        )
        ctx.reporter.message(f"inputs: private dataset {inputs_repo} @ {state['inputs_revision'][:12]}")
        for key, value in sorted(secrets_.items()):
            call(
                f"setting secret {key} of Space {space_id}",
                lambda key=key, value=value: api.add_space_secret(
                    space_id, key, value, description="set by ftpipe run"
                ),
            )
        for key, value in sorted(variables.items()):
            call(
                f"setting variable {key} of Space {space_id}",
                lambda key=key, value=value: api.add_space_variable(
                    space_id, key, value, description="set by ftpipe run"
                ),
            )
        runtime = call(f"reading the runtime of Space {space_id}", lambda: api.get_space_runtime(space_id))
        if runtime.requested_hardware != self.cfg.hardware:
            call(
                f"requesting {self.cfg.hardware} for Space {space_id}",
                lambda: api.request_space_hardware(space_id, _flavor(self.cfg.hardware)),
            )
        self._upload_space_files(state)
        # the Hub may keep earlier containers' logs: show only what this run adds
        state["log_base"] = {kind: len(self._logs(space_id, kind)) for kind in ("build", "run")}
        state["started"] = True
        persist(state)
        call(f"starting Space {space_id}", lambda: api.restart_space(space_id))
        ctx.reporter.message(
            f"Space {space_id} ({self.cfg.hardware}) started for {ctx.pipeline} — {api.endpoint}/spaces/{space_id}"
        )

    def _upload_space_files(self, state: dict) -> None:
        from huggingface_hub import CommitOperationAdd

        sub = submission(state)
        files = space_files(self.ctx.prepared.resolved, sub, self.ctx.plan_hash)
        ops = [CommitOperationAdd(path, text.encode()) for path, text in files.items()]
        self.ctx.call(
            f"uploading the files of Space {sub.space_id}",
            lambda: self.api.create_commit(
                sub.space_id,
                ops,
                repo_type="space",
                commit_message=f"ftpipe {__version__}: run {self.ctx.pipeline} ({sub.request_id})",
            ),
        )

    # ------------------------------------------------------------------ follow
    def alive(self, state: dict) -> bool | None:
        if not state.get("started"):
            return None  # killed while setting up: nothing runs yet
        if self.result(state) is not None:
            return False
        if self._stage(state) in ACTIVE:
            return True
        return None  # ended without a result (paused by someone): start afresh

    def _stage(self, state: dict) -> SpaceStage:
        return SpaceStage.of(self.poll(state).stage)

    def poll(self, state: dict) -> Poll:
        space_id = state["space_id"]
        runtime = self.ctx.call(
            f"reading the runtime of Space {space_id}", lambda: self.api.get_space_runtime(space_id)
        )
        stage = SpaceStage.of(runtime.stage)
        note = _STAGE_NOTES.get(stage, "").format(file=self.ctx.path.name) or None
        return Poll(stage=stage.value, ended=stage in ENDED, message=runtime.raw.get("errorMessage"), note=note)

    def _logs(self, space_id: str, kind: str) -> list[str]:
        try:
            return [ln.rstrip("\n") for ln in self.api.fetch_space_logs(space_id, build=kind == "build")]
        except Exception:  # noqa: BLE001 - logs are a convenience; the pushed result is what counts
            return []

    def logs(self, state: dict) -> list[str]:
        base = state.get("log_base") or {}
        build = self._logs(state["space_id"], "build")[base.get("build", 0) :]
        run = self._logs(state["space_id"], "run")[base.get("run", 0) :]
        return [f"[build] {ln}" for ln in build] + run

    def result(self, state: dict) -> dict | None:
        return hub_run.read_result(self.ctx, self.api, state["results_repo"], state["request_id"])

    def download(self, state: dict, result: dict, dest: Path) -> None:
        hub_run.download_run(self.ctx, self.api, state["results_repo"], result, dest)

    def cancel(self, state: dict) -> None:
        self.cleanup(state)

    def cleanup(self, state: dict) -> None:
        space_id = state.get("space_id")
        if not space_id:
            return
        try:
            self.ctx.call(f"pausing Space {space_id}", lambda: self.api.pause_space(space_id))
        except Exception as exc:  # noqa: BLE001 - say so, with the way to do it by hand
            self.ctx.reporter.error(
                f"could not pause Space {space_id} ({type(exc).__name__}): it may keep running "
                f"on {self.cfg.hardware}; pause it at {self.api.endpoint}/spaces/{space_id}/settings"
            )
            return
        self.ctx.reporter.message(f"Space {space_id} paused (no charges while paused)")

    def info(self, state: dict) -> dict:
        return {
            "space": state.get("space_id"),
            "hardware": state.get("hardware"),
            "inputs": f"{state.get('inputs_repo')}@{state.get('inputs_revision')}",
            "results": state.get("results_repo"),
        }


def submission(state: dict) -> Submission:
    return Submission(
        request_id=state["request_id"],
        space_id=state["space_id"],
        inputs_repo=state["inputs_repo"],
        inputs_revision=state["inputs_revision"],
        results_repo=state["results_repo"],
        fingerprint=state["fingerprint"],
        hardware=state["hardware"],
        submitted_at=state["submitted_at"],
    )


# ---------------------------------------------------------------------- the Space's files


def space_files(pipeline: Any, sub: Submission, plan_hash: str) -> dict[str, str]:
    """Dockerfile, README.md (front matter: sdk docker) and constraints.txt of the Space."""
    extras, dists = requirements_for(pipeline)
    lock = dependency_lock(extras, dists)
    return {
        "Dockerfile": dockerfile(pipeline, sub, plan_hash, extras, dists, lock),
        "README.md": _readme(pipeline.name, plan_hash),
        "constraints.txt": "".join(f"{n}=={v}\n" for n, v in sorted(lock.items())),
    }


def requirements_for(pipeline: Any) -> tuple[list[str], list[str]]:
    """The ftpipe extras and the plugin distributions (``name==version``) the pipeline's steps need."""
    from importlib.metadata import entry_points

    from ftpipe.extras import HUB_EXTRA, step_extras

    backend = pipeline.trainer.backend
    # the entry downloads the inputs and pushes the results; the steps need what their plugins declare
    extras = {HUB_EXTRA} | step_extras(pipeline)
    dists = []
    wanted = [("ftpipe.trainers", backend)] + [("ftpipe.targets", t.type) for t in pipeline.deploy]
    for group, name in wanted:
        for ep in entry_points(group=group, name=name):
            if ep.dist is not None and ep.dist.name.lower() != "ftpipe":
                dists.append(f"{ep.dist.name}=={ep.dist.version}")
    return sorted(extras), sorted(set(dists))


def dependency_lock(extras: list[str], dists: list[str]) -> dict[str, str]:
    """``name -> version`` of every installed distribution that ftpipe[extras] and the plugin
    distributions need, transitively: a ``pip freeze`` of exactly what the pipeline uses.
    Local version labels (``+cpu``) are dropped: the registry's wheels do not carry them."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lock: dict[str, str] = {}
    skip = {"ftpipe"} | {canonicalize_name(d.split("==")[0]) for d in dists}
    todo: list[tuple[str, frozenset[str]]] = [("ftpipe", frozenset(extras))] + [
        (d.split("==")[0], frozenset()) for d in dists
    ]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, req_extras = todo.pop()
        if (name, req_extras) in done:
            continue
        done.add((name, req_extras))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        cname = canonicalize_name(dist.metadata["Name"] or name)
        if cname not in skip:
            lock[cname] = dist.version.split("+")[0]
        for line in dist.requires or []:
            try:
                req = Requirement(line)
            except ValueError:
                continue
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (*req_extras, "")):
                continue
            if canonicalize_name(req.name) == cname:  # "pkg[a]; extra == 'all'" style self-references
                todo.append((req.name, frozenset(req_extras | req.extras)))
                continue
            todo.append((req.name, frozenset(req.extras)))
    return lock


def dockerfile(
    pipeline: Any, sub: Submission, plan_hash: str, extras: list[str], dists: list[str], lock: dict[str, str]
) -> str:
    py = ".".join(str(n) for n in sys.version_info[:3])  # the interpreter that planned the run
    install = [f"ftpipe[{','.join(extras)}]=={__version__}", *dists]
    lines = [
        f"# Made by ftpipe {__version__} to run pipeline '{pipeline.name}' (plan {plan_hash}).",
        "# Reproducible: ftpipe and every library the pipeline needs are pinned (constraints.txt was",
        "# captured from the environment that planned the run). Inputs are read from a private dataset",
        "# repo at a pinned revision; tokens come only from the Space's secrets.",
        f"FROM python:{py}-slim",
        "RUN useradd -m -u 1000 user",
        "USER user",
        f"ENV HOME={SPACE_HOME} PATH={SPACE_HOME}/.local/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_DISABLE_TELEMETRY=1",
        f"WORKDIR {SPACE_HOME}/app",
        "COPY --chown=user constraints.txt .",
    ]
    torch = lock.get("torch")
    if torch and sub.hardware.startswith("cpu"):
        lines.append(
            f"RUN pip install --no-cache-dir --user torch=={torch} --index-url https://download.pytorch.org/whl/cpu"
        )
    lines.append("RUN pip install --no-cache-dir --user -c constraints.txt " + " ".join(f'"{r}"' for r in install))
    from ftpipe.extras import managed_env

    managed = managed_env(pipeline)
    if managed:  # the backend's own environment, built into the image (FTPIPE_<NAME>_ENV says where)
        var = "FTPIPE_" + "".join(c if c.isalnum() else "_" for c in managed.upper()) + "_ENV"
        lines += [f"ENV {var}={SPACE_HOME}/{managed}-env", f"RUN ftpipe backends install {managed}"]
    env = {
        entry.ENV_INPUTS: sub.inputs_repo,
        entry.ENV_REVISION: sub.inputs_revision,
        entry.ENV_RESULTS: sub.results_repo,
        entry.ENV_SPACE: sub.space_id,
        entry.ENV_PORT: str(APP_PORT),
        entry.ENV_WORKDIR: f"{SPACE_HOME}/work",
    }
    lines += [f"ENV {k}={v}" for k, v in env.items()]
    lines += [f"EXPOSE {APP_PORT}", 'CMD ["python", "-m", "ftpipe.executors.space_entry"]']
    return "\n".join(lines) + "\n"


def _readme(name: str, plan_hash: str) -> str:
    return (
        f"---\ntitle: ftpipe {name}\nemoji: 🛠\ncolorFrom: gray\ncolorTo: blue\nsdk: docker\n"
        f"app_port: {APP_PORT}\npinned: false\n---\n\n"
        f"Runs the ftpipe pipeline `{name}` (plan {plan_hash}) once per `ftpipe run`, pushes the run to the "
        "results dataset, and pauses itself. Made by ftpipe; its files are rewritten on every run.\n"
    )


def _flavor(name: str) -> Any:
    """A hardware flavor for the Hub client: its ``SpaceHardware`` member when it knows the
    name, else the name itself (the Hub accepts flavors newer than the client's enum)."""
    from huggingface_hub import SpaceHardware

    try:
        return SpaceHardware(name)
    except ValueError:
        return name
