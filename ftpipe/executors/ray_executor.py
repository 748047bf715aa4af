"""The ``ray`` executor: runs the pipeline as a Ray job on a cluster, by address, on the
remote skeleton (:mod:`ftpipe.executors.remote`).

The job runs ``python -m ftpipe.executors.ray_job FILE`` (the local engine, with a run id
chosen here) through the Ray Jobs API, with the pipeline's folder as its ``working_dir``
and this very ftpipe package as a ``py_module``, so the cluster runs the same code. The
job's last log line carries its exit code and run record; the run's files come home from
the client's own store (a local cluster writes straight into it), from
``executor.storage``, or not at all (the record only, with a note saying where they are).

Secrets never travel with the job (anyone who can list the cluster's jobs reads a
runtime_env): the cluster's environment provides them, so they need not be set here.
"""

from __future__ import annotations

import os
import secrets as _secrets
import shlex
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml

from ftpipe.contracts import RunRequest
from ftpipe.errors import FtpipeError, RemoteError
from ftpipe.executors.hub_run import check_inside_repository
from ftpipe.executors.ray_job import RESULT_MARKER, RemoteStore, artifact_rels, is_uri, parse_result, storage_path
from ftpipe.executors.remote import Poll, RemoteContext, RemoteRun
from ftpipe.signals import sigterm_as_interrupt
from ftpipe.spec.interpolate import ENV_REF
from ftpipe.spec.models import RayExecutor
from ftpipe.store import write_json

# Never uploaded with the working_dir (gitignore syntax; .gitignore and .rayignore apply too).
EXCLUDES = [
    ".ftpipe/",
    "outputs/",
    "__pycache__/",
    "*.pyc",
    ".git/",
    ".venv/",
    "venv/",
    ".pytest_cache/",
    "wandb/",
    "mlruns/",
    "checkpoint-*/",
    ".ipynb_checkpoints/",
]
STOP_WAIT_S = 30.0


class RayExecutorImpl:
    name = "ray"
    config_model = RayExecutor

    def preflight(self, ctx: Any, executor: RayExecutor) -> list[Any]:
        """The cluster answers (ftpipe.preflight)."""
        from ftpipe.executors.preflight_checks import ray_checks

        return list(ray_checks(ctx, executor))

    def execute(self, request: RunRequest) -> int:
        with sigterm_as_interrupt():
            run = RemoteRun(request, RayBackend, secrets_elsewhere=True)
            if run.in_flight() is None and nothing_to_send(run):
                return run_here(run)
            return run.run()


def nothing_to_send(run: RemoteRun) -> bool:
    """Every step's result is already in the local store (and every secret is set here):
    a job would execute nothing, so none is sent."""
    req, prepared = run.ctx.request, run.ctx.prepared
    if req.force or req.from_step or prepared.unset_secrets:
        return False
    return all(run.ctx.store.artifact(s.key) is not None for s in prepared.plan.steps)


def run_here(run: RemoteRun) -> int:
    """The all-cached run, without a cluster: an unchanged scheduled pipeline costs a second."""
    import json

    from ftpipe.engine import execute

    req = run.ctx.request
    run.reporter.message("every step is cached in the local store: nothing to send to the cluster")
    outcome = execute(
        req.pipeline_path, store=run.ctx.store.root, wait=req.wait_lock, reporter=run.reporter, executor_name="ray"
    )
    if req.json_output:
        click.echo(json.dumps(outcome.summary(), default=str))
    return outcome.exit_code


class RayBackend:
    """One request run as a Ray job (see :class:`ftpipe.executors.remote.RemoteBackend`)."""

    name = "ray"
    poll_max_s = 2.0

    def __init__(self, ctx: RemoteContext) -> None:
        ex = ctx.prepared.resolved.executor
        self.ctx = ctx
        self.cfg: RayExecutor = ex if isinstance(ex, RayExecutor) else RayExecutor(type="ray")
        self.timeout_s = self.cfg.timeout_s
        self.stop_on_interrupt = self.cfg.stop_on_interrupt
        self._jobs: Any = None
        self._text: str | None = None  # the job log read by result(), reused by the logs() that follows

    @property
    def jobs(self) -> Any:
        """The Jobs API client (made on first use: a run with nothing to send never connects)."""
        from ftpipe.remote.ray import RayJobs

        if self._jobs is None:
            self._jobs = RayJobs(self.cfg.address, log=self.ctx.reporter.message)
        return self._jobs

    def where(self, state: dict) -> str:
        return f"Ray job {state.get('submission_id') or state['request_id']}"

    # ------------------------------------------------------------------ submit
    def submit(self, state: dict, persist: Callable[[dict], None]) -> None:
        ctx, jobs = self.ctx, self.jobs
        run_id = ctx.store.new_run_id()
        sid = f"ftpipe-{ctx.pipeline}-{run_id}"
        root = self.working_root()
        args = ["python", "-m", "ftpipe.executors.ray_job", str(ctx.path.resolve().relative_to(root))]
        args += ["--run-id", run_id]
        nonce = _secrets.token_hex(8)  # the job finds it in the client's store iff it shares this filesystem
        if self.cfg.storage:
            args += ["--storage", self.cfg.storage]
        else:
            args += ["--client-store", str(ctx.store.root), "--nonce", nonce]
        req = ctx.request
        for flag, on in (("--force", req.force), ("--wait", req.wait_lock), ("--quiet", req.quiet)):
            args += [flag] if on else []
        if req.from_step:
            args += ["--from", req.from_step]
        env_vars, secret_vars = self.env_for_job()
        if secret_vars:
            ctx.reporter.message(
                f"secrets are not sent with the job: the cluster's environment must provide "
                f"{', '.join(sorted(secret_vars))} (docs/ray.md)"
            )
        state.update(submission_id=sid, run_id=run_id, address=jobs.address, nonce=nonce, storage=self.cfg.storage)
        persist(state)  # first: the job looks for the nonce, and a killed runner must find the job
        ctx.reporter.message(f"submitting {ctx.pipeline} to Ray at {jobs.address} as job {sid} (uploading {root})")
        res = self.cfg.resources
        jobs.submit(
            entrypoint=shlex.join(args),
            submission_id=sid,
            runtime_env=self.runtime_env(root, env_vars),
            metadata={"ftpipe_pipeline": ctx.pipeline, "ftpipe_run_id": run_id},
            num_cpus=res.cpus,
            num_gpus=res.gpus,
            memory=res.memory,
        )

    def runtime_env(self, root: Path, env_vars: dict[str, str]) -> dict[str, Any]:
        import ftpipe

        excludes = list(EXCLUDES)
        if self.ctx.store.root.is_relative_to(root):
            excludes.append("/" + str(self.ctx.store.root.relative_to(root)) + "/")
        env: dict[str, Any] = {
            "working_dir": str(root),
            "py_modules": [str(Path(ftpipe.__file__).parent)],
            "excludes": excludes,
            "env_vars": env_vars,
        }
        if self.cfg.pip:
            env["pip"] = list(self.cfg.pip)
        return env

    def working_root(self) -> Path:
        """The folder uploaded as working_dir: the pipeline's, widened to hold local inputs."""
        from ftpipe.planner import resolve_local_files

        pipeline = self.ctx.prepared.loaded.pipeline
        base = self.ctx.path.resolve().parent
        paths = [base]
        for src in pipeline.dataset.all_sources():
            if src.type == "local":
                for rel in src.path.values() if isinstance(src.path, dict) else [src.path]:
                    paths += [p.resolve() for p in resolve_local_files(base, rel)]
        model = (base / pipeline.model.base).expanduser()
        if not pipeline.model.base.startswith("builtin:") and model.is_dir():
            paths.append(model.resolve())
        check_inside_repository(base, paths, allow_outside=self.cfg.upload_outside_repo)
        root = Path(os.path.commonpath([str(p) for p in paths]))
        if root != base:
            self.ctx.reporter.message(f"the pipeline reads files outside its folder: uploading {root}")
        return root

    def env_for_job(self) -> tuple[dict[str, str], set[str]]:
        """(variables sent with the job, secret variables kept back): the non-secret
        ${env:NAME} references set here travel; secrets do not."""
        from ftpipe.registry import pipeline_model
        from ftpipe.spec.secrets import is_secret_var, secret_paths

        data = self.ctx.prepared.loaded.doc.data
        secret_at = secret_paths(pipeline_model(), data)
        plain: set[str] = set()
        secret: set[str] = set()

        def walk(value: Any, path: tuple) -> None:
            if isinstance(value, dict | list):
                for k, v in value.items() if isinstance(value, dict) else enumerate(value):
                    walk(v, path + (k,))
            elif isinstance(value, str) and path[:1] != ("executor",):
                for m in ENV_REF.finditer(value):
                    (secret if path in secret_at or is_secret_var(m.group(1)) else plain).add(m.group(1))

        walk(data, ())
        plain -= {"RAY_ADDRESS"}
        return {n: os.environ[n] for n in sorted(plain) if n in os.environ}, secret

    # ------------------------------------------------------------------ follow
    def _info(self, state: dict) -> Any:
        return self.jobs.info(state["submission_id"]) if state.get("submission_id") else None

    def alive(self, state: dict) -> bool | None:
        if state.get("address") and state["address"] != self.jobs.address:
            self.ctx.reporter.message(f"{self.where(state)} ran at {state['address']}; the address is now another")
            return None
        info = self._info(state)
        return None if info is None else not info.terminal

    def poll(self, state: dict) -> Poll:
        info = self._info(state)
        if info is None:
            raise RemoteError(
                "Ray",
                f"{self.where(state)} disappeared from the cluster (was it restarted?)",
                job_id=state["submission_id"],
            )
        state.update(stage=info.state.value, message=info.message)
        note = None
        if info.state.value == "PENDING":
            r = self.cfg.resources
            note = f"waiting for the cluster to free {r.cpus:g} CPU" + (f", {r.gpus:g} GPU" if r.gpus else "")
            note += " for it (and to set up its environment)"
        return Poll(stage=info.state.value, ended=info.terminal, message=info.message, note=note)

    def logs(self, state: dict) -> list[str]:
        text, self._text = self._text or self.jobs.logs(state["submission_id"]), None
        complete = text[: text.rfind("\n") + 1]  # a line still being written is shown once it ends
        return [ln.rstrip("\r") for ln in complete.splitlines() if not ln.startswith(RESULT_MARKER)]

    def result(self, state: dict) -> dict | None:
        if not state.get("submission_id"):
            return None
        self._text = self.jobs.logs(state["submission_id"])
        payload = parse_result(self._text)
        if payload is None:
            return None
        record = payload.get("record") or {}
        state.update(store_mode=payload.get("store_mode"))
        return {
            "exit_code": payload.get("exit_code"),
            "run_id": record.get("run_id"),
            "record": record,
            "artifacts": artifact_rels(record),
            "summary": {"store": payload.get("store")},
            "error": payload.get("error"),
        }

    # ------------------------------------------------------------------ results
    def download(self, state: dict, result: dict, dest: Path) -> None:
        self._until_ended(state, STOP_WAIT_S)  # the result is the job's last line: its process is ending
        store, run_id = self.ctx.store, result["run_id"]
        cluster_store = result["summary"]["store"]
        if cluster_store and Path(cluster_store) == store.root:  # the job wrote into this very store
            shutil.copytree(store.run_dir(run_id), dest / "runs" / run_id)
            return
        storage = state.get("storage")
        if storage and (is_uri(storage) or storage_path(storage).is_dir()):
            try:
                remote = RemoteStore(storage)
                remote.pull(f"runs/{run_id}", dest)
                for rel in result["artifacts"]:
                    if store.artifact(rel.split("/", 1)[-1]) is None:
                        remote.pull(rel, dest)
                return
            except FtpipeError:
                raise
            except Exception as exc:  # noqa: BLE001 - the record still comes home from the log
                self.ctx.reporter.error(f"could not copy the run back from {storage}: {type(exc).__name__}: {exc}")
        where = f"{storage} (not visible from here)" if storage else f"{cluster_store} on the cluster node"
        self.ctx.reporter.message(
            f"the run record came back; the artifacts stay at {where} — set executor.storage "
            "to a shared path or URI to bring them home (docs/ray.md)"
        )
        shutil.rmtree(dest / "runs" / run_id, ignore_errors=True)
        write_json(dest / "runs" / run_id / "run.json", result["record"])
        (dest / "runs" / run_id / "pipeline.yaml").write_text(
            yaml.safe_dump(self.ctx.prepared.redacted, sort_keys=False)
        )

    def _until_ended(self, state: dict, wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while not self.poll(state).ended:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def cancel(self, state: dict) -> None:
        info = self._info(state)
        if info is None or info.terminal:
            return
        self.jobs.stop(state["submission_id"])
        if not self._until_ended(state, STOP_WAIT_S):
            raise RemoteError("Ray", f"{self.where(state)} did not stop within {STOP_WAIT_S:.0f}s")

    def cleanup(self, state: dict) -> None:
        pass  # a job's resources are the cluster's: nothing is left to release

    def info(self, state: dict) -> dict:
        return {
            "ray_job": state.get("submission_id"),
            "address": state.get("address"),
            "state": state.get("stage"),
            "message": state.get("message"),
            "store_mode": state.get("store_mode"),
        }
