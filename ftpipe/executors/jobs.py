"""The ``hf-jobs`` executor: runs the pipeline as a Hugging Face Job (a container on the
Hub's CPU or GPU hardware), on the remote skeleton (:mod:`ftpipe.executors.remote`).

The Job runs ``python -m ftpipe.executors.space_entry`` — the same entry a Space runs —
after installing the ftpipe that made the plan (pinned, with a lock of every library the
pipeline needs, captured here) unless its image already has that version. Inputs and
results travel through the private dataset repos of :mod:`ftpipe.executors.hub_run`.
Tokens reach the Job only as Job secrets. Labels (``ftpipe-request``) name the request,
so a runner killed before it saved the Job's id finds the Job instead of starting a
second one; Ctrl-C cancels the Job.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftpipe import __version__
from ftpipe.contracts import RunRequest
from ftpipe.errors import UsageError
from ftpipe.executors import hub_run
from ftpipe.executors import space_entry as entry
from ftpipe.executors.remote import Poll, RemoteContext, RemoteRun
from ftpipe.signals import sigterm_as_interrupt
from ftpipe.spec.models import HfJobsExecutor

TERMINAL = frozenset({"COMPLETED", "CANCELED", "ERROR", "DELETED"})
LABEL_REQUEST = "ftpipe-request"
LABEL_PIPELINE = "ftpipe-pipeline"
ENV_CONSTRAINTS = "FTPIPE_CONSTRAINTS"
_NOTES = {"SCHEDULING": "waiting for hardware", "RUNNING": "running `ftpipe run {file} --executor local` in the Job"}


class HfJobsExecutorImpl:
    name = "hf-jobs"
    config_model = HfJobsExecutor

    def preflight(self, ctx: Any, executor: HfJobsExecutor) -> list[Any]:
        """The token may run Jobs and create the run's datasets (ftpipe.preflight); the
        flavor is checked by validation."""
        from ftpipe.preflight import hub_write_access

        ns = executor.namespace
        return [
            hub_write_access(
                "executor",
                token=executor.token,
                repo_id=f"{ns}/job" if ns else None,
                what=f"Hub token can run Jobs and create the run's datasets in {ns or 'its own namespace'}",
            )
        ]

    def execute(self, request: RunRequest) -> int:
        with sigterm_as_interrupt():
            return RemoteRun(request, JobBackend).run()


def job_command(pipeline: Any, flavor: str) -> tuple[list[str], str]:
    """(command, constraints) of the Job: install the pinned ftpipe unless the image has it,
    then run the entry. The lock travels in an environment variable (not a secret)."""
    from ftpipe.executors.spaces import dependency_lock, requirements_for

    extras, dists = requirements_for(pipeline)
    lock = dependency_lock(extras, dists)
    install = [f"ftpipe[{','.join(extras)}]=={__version__}", *dists]
    check = f'import ftpipe, sys; sys.exit(ftpipe.__version__ != "{__version__}")'
    steps = [f'printf "%s\\n" "${ENV_CONSTRAINTS}" > /tmp/ftpipe-constraints.txt']
    torch = lock.get("torch")
    if torch and flavor.startswith("cpu"):
        steps.append(f"pip install --no-cache-dir torch=={torch} --index-url https://download.pytorch.org/whl/cpu")
    steps.append(
        "pip install --no-cache-dir -c /tmp/ftpipe-constraints.txt " + " ".join(shlex.quote(r) for r in install)
    )
    script = (
        f"set -e; if ! python -c {shlex.quote(check)} 2>/dev/null; then {'; '.join(steps)}; fi; "
        "exec python -m ftpipe.executors.space_entry"
    )
    constraints = "\n".join(f"{n}=={v}" for n, v in sorted(lock.items()))
    return ["/bin/sh", "-c", script], constraints


class JobBackend:
    """One request run by a Hugging Face Job (see :class:`ftpipe.executors.remote.RemoteBackend`)."""

    name = "hf-jobs"
    poll_max_s = 10.0
    stop_on_interrupt = True

    def __init__(self, ctx: RemoteContext) -> None:
        from huggingface_hub import HfApi, JobHardware

        self.ctx = ctx
        self.cfg = hub_run.executor_config(ctx, HfJobsExecutor, "hf-jobs")
        known = [h.value for h in JobHardware]
        if self.cfg.flavor not in known:  # the installed client's list, should it differ from ours
            raise UsageError(
                f"executor.flavor: unknown Jobs hardware flavor '{self.cfg.flavor}'",
                hint=f"available: {', '.join(known)}",
            )
        self.timeout_s = self.cfg.timeout_s
        self.api = HfApi(token=self.cfg.token)

    def where(self, state: dict) -> str:
        return f"Job {state.get('namespace', '?')}/{state.get('job_id') or state['request_id']}"

    # ------------------------------------------------------------------ submit
    def submit(self, state: dict, persist: Callable[[dict], None]) -> None:
        ctx, api = self.ctx, self.api
        hub_run.input_files(ctx, allow_outside=self.cfg.upload_outside_repo)  # refuse before any upload
        namespace = hub_run.namespace_of(ctx, api, self.cfg.namespace)
        inputs_repo, results_repo = hub_run.repo_names(namespace, ctx.pipeline)
        state.update(namespace=namespace, inputs_repo=inputs_repo, results_repo=results_repo, flavor=self.cfg.flavor)
        persist(state)
        note = hub_run.source_checkout_note()
        if note:
            ctx.reporter.message(f"note: {note}")
        spec, revision = self.job_spec(state["request_id"], namespace)
        state["inputs_revision"] = revision
        persist(state)
        ctx.reporter.message(f"inputs: private dataset {inputs_repo} @ {revision[:12]}")

        def submit_once() -> Any:
            # creating is not idempotent: a retry first looks for the Job an earlier attempt made
            found = self._find(state)
            if found is not None:
                return found
            return api.run_job(**spec, namespace=namespace)

        job = ctx.call(f"submitting the Job for {ctx.pipeline}", submit_once)
        state["job_id"] = job.id
        persist(state)
        ctx.reporter.message(f"Job {namespace}/{job.id} ({self.cfg.flavor}) submitted for {ctx.pipeline} — {job.url}")

    def job_spec(self, request_id: str, namespace: str, *, scheduled: bool = False) -> tuple[dict, str]:
        """(``run_job`` keyword arguments, inputs revision): uploads the inputs for ``request_id``."""
        ctx, api = self.ctx, self.api
        inputs_repo, results_repo = hub_run.repo_names(namespace, ctx.pipeline)
        secrets_, variables = hub_run.environment(ctx, self.cfg.token)
        hub_run.ensure_private(ctx, api, [(inputs_repo, "dataset"), (results_repo, "dataset")])
        revision = hub_run.upload_inputs(
            ctx,
            api,
            inputs_repo,
            request_id,
            sorted(secrets_),
            allow_outside=self.cfg.upload_outside_repo,
            scheduled=scheduled,
        )
        command, constraints = job_command(ctx.prepared.resolved, self.cfg.flavor)
        env = {
            **variables,
            entry.ENV_INPUTS: inputs_repo,
            entry.ENV_REVISION: revision,
            entry.ENV_RESULTS: results_repo,
            entry.ENV_PORT: "",
            entry.ENV_SELF_PAUSE: "0",
            ENV_CONSTRAINTS: constraints,
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        py = ".".join(str(n) for n in sys.version_info[:2])  # the interpreter that planned the run
        labels = {LABEL_REQUEST: request_id, LABEL_PIPELINE: hub_run.slug(ctx.pipeline)[:100]}
        spec = {
            "image": self.cfg.image or f"python:{py}-slim",
            "command": command,
            "env": env,
            "secrets": secrets_,
            "flavor": self.cfg.flavor,
            "timeout": self.cfg.timeout_s,
            "labels": labels,
            "name": f"ftpipe-{hub_run.slug(ctx.pipeline)}"[:60],
        }
        return spec, revision

    def _find(self, state: dict) -> Any:
        jobs = list(self.api.list_jobs(labels={LABEL_REQUEST: state["request_id"]}, namespace=state["namespace"]))
        return jobs[0] if jobs else None

    # ------------------------------------------------------------------ follow
    def alive(self, state: dict) -> bool | None:
        if not state.get("job_id"):
            if not state.get("inputs_revision"):
                return None  # killed before anything was submitted
            job = self.ctx.call(f"looking for the Job of request {state['request_id']}", lambda: self._find(state))
            if job is None:
                return None
            state["job_id"] = job.id
        if self.result(state) is not None:
            return False
        return self.poll(state).stage not in TERMINAL

    def _inspect(self, state: dict) -> Any:
        return self.ctx.call(
            f"reading the status of {self.where(state)}",
            lambda: self.api.inspect_job(job_id=state["job_id"], namespace=state["namespace"]),
        )

    def poll(self, state: dict) -> Poll:
        job = self._inspect(state)
        stage = str(getattr(job.status.stage, "value", job.status.stage))
        note = _NOTES.get(stage, "").format(file=self.ctx.path.name) or None
        return Poll(stage=stage, ended=stage in TERMINAL, message=job.status.message, note=note)

    def logs(self, state: dict) -> list[str]:
        return self.ctx.call(
            f"reading the logs of {self.where(state)}",
            lambda: [
                ln.rstrip("\n") for ln in self.api.fetch_job_logs(job_id=state["job_id"], namespace=state["namespace"])
            ],
        )

    def result(self, state: dict) -> dict | None:
        return hub_run.read_result(self.ctx, self.api, state["results_repo"], state["request_id"])

    def download(self, state: dict, result: dict, dest: Path) -> None:
        hub_run.download_run(self.ctx, self.api, state["results_repo"], result, dest)

    def cancel(self, state: dict) -> None:
        if state.get("job_id") and self.poll(state).stage not in TERMINAL:
            self.ctx.call(
                f"cancelling {self.where(state)}",
                lambda: self.api.cancel_job(job_id=state["job_id"], namespace=state["namespace"]),
            )
            self.ctx.reporter.message(f"{self.where(state)} cancelled")

    def cleanup(self, state: dict) -> None:
        pass  # a Job ends by itself: nothing keeps costing money

    def info(self, state: dict) -> dict:
        return {
            "job_id": state.get("job_id"),
            "namespace": state.get("namespace"),
            "flavor": state.get("flavor"),
            "inputs": f"{state.get('inputs_repo')}@{state.get('inputs_revision')}",
            "results": state.get("results_repo"),
        }
