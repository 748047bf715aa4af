"""The ``ray`` executor: runs the pipeline as a Ray job on a cluster, by address.

``ftpipe run FILE`` with ``executor: {type: ray}`` submits ``python -m
ftpipe.executors.ray_job FILE`` (the local engine, i.e. ``ftpipe run FILE --executor
local``, with a run id chosen here) through the Ray Jobs API. The job gets the pipeline's
folder as its ``working_dir`` and this very ftpipe package as a ``py_module``, so the
cluster runs the same code. The client follows the job's log, maps its end to ftpipe's
exit codes, and brings the run record (and, where it can reach them, the artifacts) home
into the local run store.

The in-flight submission is kept in ``<store>/jobs/ray/<pipeline>.json``: a runner that
was killed and is started again re-attaches to the job instead of submitting another.
"""

from __future__ import annotations

import json
import os
import secrets as _secrets
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from ftpipe import errors
from ftpipe.contracts import RunRequest
from ftpipe.errors import LockHeld, RemoteError
from ftpipe.executors.hub_run import check_inside_repository
from ftpipe.executors.ray_job import (
    RESULT_MARKER,
    RemoteStore,
    artifact_rels,
    is_uri,
    state_file,
    storage_path,
)
from ftpipe.executors.remote import fingerprints, report
from ftpipe.progress import Reporter
from ftpipe.signals import sigterm_as_interrupt
from ftpipe.spec.interpolate import ENV_REF, interpolate, redact
from ftpipe.spec.models import RayExecutor
from ftpipe.store import RunStore, default_store, now_iso, write_json

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
POLL_MIN_S, POLL_MAX_S = 0.5, 2.0
STOP_WAIT_S = 30.0


@dataclass
class Submission:
    """What ``<store>/jobs/ray/<pipeline>.json`` holds while a job is in flight."""

    submission_id: str
    run_id: str
    address: str
    pipeline: str
    fingerprint: str  # the plan's keys and the run options: re-attach only to the same request
    nonce: str  # the job finds it in the client's store iff it shares this filesystem
    storage: str | None
    submitted_at: str


class RayExecutorImpl:
    name = "ray"
    config_model = RayExecutor

    def preflight(self, ctx: Any, executor: RayExecutor) -> list[Any]:
        """The cluster answers (ftpipe.preflight)."""
        from ftpipe.executors.preflight_checks import ray_checks

        return list(ray_checks(ctx, executor))

    def execute(self, request: RunRequest) -> int:
        with sigterm_as_interrupt():
            return _Run(request).run()


class _Run:
    def __init__(self, request: RunRequest) -> None:
        from ftpipe.engine import load_checked
        from ftpipe.plan import build_plan

        self.request = request
        self.path = request.pipeline_path
        self.loaded = load_checked(self.path)
        self.pipeline = self.loaded.pipeline
        self.plan = build_plan(self.pipeline, self.path)
        ex = self.pipeline.executor
        self.cfg: RayExecutor = ex if isinstance(ex, RayExecutor) else RayExecutor(type="ray")
        self.address = interpolate({"a": self.cfg.address}, resolve_secrets=False).data["a"]
        self.rs = RunStore((request.store or default_store(self.path)).resolve())
        self.reporter = Reporter(quiet=request.quiet)
        self.fingerprint = fingerprints(self.plan, request)[1]

    # ------------------------------------------------------------------ top level
    def run(self) -> int:
        from ftpipe.remote.ray import RayJobs

        name = self.plan.pipeline
        with self.rs.lock(
            f"{name}.ray-client",
            wait=self.request.wait_lock,
            on_wait=lambda h: self.reporter.message(f"waiting for the runner that holds the lock ({h})"),
        ):
            sub = self._read_state()
            if sub is None and self._all_cached_here():
                return self._run_here()
            jobs = RayJobs(self.address)
            self.jobs = jobs
            if sub is not None and sub.address == jobs.address:
                info = jobs.info(sub.submission_id)
                if info is None:
                    self.reporter.message(
                        f"Ray job {sub.submission_id} is unknown to the cluster (restarted?): "
                        "submitting a new job; finished steps stay cached"
                    )
                    self._clear_state()
                elif not info.terminal:
                    if sub.fingerprint != self.fingerprint:
                        raise LockHeld(
                            f"Ray job {sub.submission_id} runs an earlier version of '{name}' "
                            f"(or other run options) at {jobs.address}",
                            hint=f"wait for it and run again, or stop it: ray job stop --address {jobs.address} "
                            f"{sub.submission_id}",
                        )
                    self.reporter.message(
                        f"re-attaching to Ray job {sub.submission_id} (run {sub.run_id}, "
                        f"{info.state.value.lower()}, submitted {sub.submitted_at})"
                    )
                    return self._follow(sub, reattached=True)
                else:
                    code, record = self._finish(sub, info)
                    if sub.fingerprint == self.fingerprint and code in (errors.EXIT_OK, errors.EXIT_GATE_BLOCKED):
                        self.reporter.message(
                            f"Ray job {sub.submission_id} finished while no runner was "
                            f"attached: run {sub.run_id} {record.get('status')}"
                        )
                        return self._report(code, record, sub)
                    self.reporter.message(
                        f"Ray job {sub.submission_id} ended ({info.state.value.lower()}) while no "
                        "runner was attached: submitting a new job; finished steps stay cached"
                    )
            elif sub is not None:
                self.reporter.message(
                    f"not following Ray job {sub.submission_id} at {sub.address}: the address is now {jobs.address}"
                )
            if self._all_cached_here():
                return self._run_here()
            return self._follow(self._submit(), reattached=False)

    def _all_cached_here(self) -> bool:
        if self.request.force or self.request.from_step:
            return False
        if not all(self.rs.artifact(s.key) is not None for s in self.plan.steps):
            return False
        # a run here resolves every reference; secrets kept on the cluster only mean: submit
        assert self.loaded.doc is not None
        return not interpolate(self.loaded.doc.data, env=os.environ, resolve_secrets=True).missing

    def _run_here(self) -> int:
        """Every step's result is in the local store: a run would execute nothing, so it
        runs here, without a cluster (an unchanged scheduled pipeline costs a second)."""
        from ftpipe.engine import execute

        self.reporter.message("every step is cached in the local store: nothing to send to the cluster")
        outcome = execute(
            self.path, store=self.rs.root, wait=self.request.wait_lock, reporter=self.reporter, executor_name="ray"
        )
        if self.request.json_output:
            click.echo(json.dumps(outcome.summary(), default=str))
        return outcome.exit_code

    # ------------------------------------------------------------------ submit
    def _submit(self) -> Submission:
        run_id = self.rs.new_run_id()
        sub = Submission(
            submission_id=f"ftpipe-{self.plan.pipeline}-{run_id}",
            run_id=run_id,
            address=self.jobs.address,
            pipeline=self.plan.pipeline,
            fingerprint=self.fingerprint,
            nonce=_secrets.token_hex(8),
            storage=self.cfg.storage,
            submitted_at=now_iso(),
        )
        root = self._working_root()
        rel = self.path.resolve().relative_to(root)
        args = ["python", "-m", "ftpipe.executors.ray_job", str(rel), "--run-id", run_id]
        if self.cfg.storage:
            args += ["--storage", self.cfg.storage]
        else:
            args += ["--client-store", str(self.rs.root), "--nonce", sub.nonce]
        if self.request.force:
            args.append("--force")
        if self.request.from_step:
            args += ["--from", self.request.from_step]
        if self.request.wait_lock:
            args.append("--wait")
        if self.request.quiet:
            args.append("--quiet")
        env_vars, secret_vars = self._env_for_job()
        import ftpipe

        excludes = list(EXCLUDES)
        for inside in (self.rs.root,):
            try:
                excludes.append("/" + str(inside.relative_to(root)) + "/")
            except ValueError:
                pass
        runtime_env: dict[str, Any] = {
            "working_dir": str(root),
            "py_modules": [str(Path(ftpipe.__file__).parent)],
            "excludes": excludes,
            "env_vars": env_vars,
        }
        if self.cfg.pip:
            runtime_env["pip"] = list(self.cfg.pip)
        if secret_vars:
            self.reporter.message(
                f"secrets are not sent with the job: the cluster's environment must provide "
                f"{', '.join(sorted(secret_vars))} (docs/ray.md)"
            )
        self._write_state(sub)  # first: the job looks for the nonce, and a crash must not lose the job
        res = self.cfg.resources
        self.reporter.message(
            f"submitting {self.plan.pipeline} to Ray at {self.jobs.address} as job "
            f"{sub.submission_id} (uploading {root})"
        )
        try:
            self.jobs.submit(
                entrypoint=shlex.join(args),
                submission_id=sub.submission_id,
                runtime_env=runtime_env,
                metadata={"ftpipe_pipeline": self.plan.pipeline, "ftpipe_run_id": run_id},
                num_cpus=res.cpus,
                num_gpus=res.gpus,
                memory=res.memory,
            )
        except BaseException:
            self._clear_state()
            raise
        return sub

    def _working_root(self) -> Path:
        """The folder uploaded as working_dir: the pipeline's, widened to hold local inputs."""
        from ftpipe.plan import resolve_local_files

        base = self.path.resolve().parent
        paths = [base]
        for src in self.pipeline.dataset.all_sources():
            if src.type == "local":
                for rel in src.path.values() if isinstance(src.path, dict) else [src.path]:
                    paths += [p.resolve() for p in resolve_local_files(base, rel)]
        model = (base / self.pipeline.model.base).expanduser()
        if not self.pipeline.model.base.startswith("builtin:") and model.is_dir():
            paths.append(model.resolve())
        check_inside_repository(base, paths, allow_outside=self.cfg.upload_outside_repo)
        root = Path(os.path.commonpath([str(p) for p in paths]))
        if root != base:
            self.reporter.message(f"the pipeline reads files outside its folder: uploading {root}")
        return root

    def _env_for_job(self) -> tuple[dict[str, str], set[str]]:
        """Non-secret ${env:NAME} references set here travel with the job; secrets do not
        (a runtime_env is visible to everyone who can read the cluster's job list)."""
        from ftpipe.registry import pipeline_model
        from ftpipe.spec.secrets import is_secret_var, secret_paths

        plain: set[str] = set()
        secret: set[str] = set()
        assert self.loaded.doc is not None
        secret_at = secret_paths(pipeline_model(), self.loaded.doc.data)

        def walk(value: Any, path: tuple) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(v, path + (k,))
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    walk(v, path + (i,))
            elif isinstance(value, str) and path[:1] != ("executor",):
                for m in ENV_REF.finditer(value):
                    (secret if path in secret_at or is_secret_var(m.group(1)) else plain).add(m.group(1))

        walk(self.loaded.doc.data, ())
        plain -= {"RAY_ADDRESS"}
        return {n: os.environ[n] for n in sorted(plain) if n in os.environ}, secret

    # ------------------------------------------------------------------ follow
    def _follow(self, sub: Submission, *, reattached: bool) -> int:
        from ftpipe.remote.ray import JobState

        offset, carry = 0, ""
        if reattached:
            text = self.jobs.logs(sub.submission_id)
            tail = text[: text.rfind("\n") + 1].splitlines()[-10:]
            if tail and not self.request.quiet:
                self.reporter.message(f"(last {len(tail)} log lines of the job so far)")
            self._print_lines(tail)
            offset = text.rfind("\n") + 1
        interval, t0, noted = POLL_MIN_S, time.monotonic(), False
        try:
            while True:
                info = self._info(sub)
                offset, carry = self._pump(sub, offset, carry)
                if info.terminal:
                    break
                if info.state == JobState.PENDING and not noted and time.monotonic() - t0 > 15:
                    noted = True
                    r = self.cfg.resources
                    self.reporter.message(
                        f"the job is pending: waiting for the cluster to free {r.cpus:g} CPU"
                        + (f", {r.gpus:g} GPU" if r.gpus else "")
                        + " for it (and to set up its environment)"
                    )
                time.sleep(interval)
                interval = min(POLL_MAX_S, interval * 1.5)
        except KeyboardInterrupt:
            return self._interrupted(sub, offset, carry)
        self._pump(sub, offset, carry, final=True)
        code, record = self._finish(sub, info)
        return self._report(code, record, sub)

    def _info(self, sub: Submission):
        info = self.jobs.info(sub.submission_id)
        if info is None:
            self._clear_state()
            raise RemoteError(
                "Ray",
                f"job {sub.submission_id} disappeared from the cluster (was it restarted?)",
                job_id=sub.submission_id,
                hint="run again: finished steps are cached",
            )
        return info

    def _pump(self, sub: Submission, offset: int, carry: str, final: bool = False) -> tuple[int, str]:
        text = self.jobs.logs(sub.submission_id)
        if len(text) < offset:  # the log was rotated or truncated: start over
            offset = 0
        chunk = carry + text[offset:]
        lines = chunk.split("\n")
        carry = "" if final else lines.pop()
        self._print_lines([ln for ln in lines if ln or not final])
        return len(text), carry

    def _print_lines(self, lines: list[str]) -> None:
        for line in lines:
            if line.startswith(RESULT_MARKER):
                continue
            if self.request.quiet and not line.startswith(("error", "  ")) and "failed" not in line:
                continue
            click.echo(line.rstrip("\r"), err=True)

    def _interrupted(self, sub: Submission, offset: int, carry: str) -> int:
        from ftpipe.remote.ray import TERMINAL

        if not self.cfg.stop_on_interrupt:
            self.reporter.error(
                f"interrupted: Ray job {sub.submission_id} keeps running on the cluster "
                f"(executor.stop_on_interrupt is false). `ftpipe run {self.path}` re-attaches to it; "
                f"`ray job stop --address {self.jobs.address} {sub.submission_id}` stops it"
            )
            return errors.EXIT_INTERRUPTED
        self.reporter.error(f"interrupted: stopping Ray job {sub.submission_id} (Ctrl-C again to leave it running)")
        try:
            self.jobs.stop(sub.submission_id)
            deadline = time.monotonic() + STOP_WAIT_S
            info = self._info(sub)
            while info.state not in TERMINAL and time.monotonic() < deadline:
                time.sleep(0.5)
                info = self._info(sub)
            offset, carry = self._pump(sub, offset, carry, final=True)
        except KeyboardInterrupt:
            self.reporter.error(f"left Ray job {sub.submission_id} as it was; `ftpipe run {self.path}` re-attaches")
            return errors.EXIT_INTERRUPTED
        if info.state not in TERMINAL:
            self.reporter.error(
                f"Ray job {sub.submission_id} did not stop within {STOP_WAIT_S:.0f}s; "
                f"`ftpipe run {self.path}` re-attaches to it"
            )
            return errors.EXIT_INTERRUPTED
        _, record = self._finish(sub, info)
        return self._report(errors.EXIT_INTERRUPTED, record, sub)

    # ------------------------------------------------------------------ finish
    def _finish(self, sub: Submission, info) -> tuple[int, dict]:
        """The exit code and the run record of a finished job, brought into the local store."""
        text = self.jobs.logs(sub.submission_id)
        result = _parse_result(text)
        record = dict(result.get("record") or {}) if result else {}
        code = exit_code_for(info.state.value, result, info.driver_exit_code)
        if result is None:
            self.reporter.error(
                f"Ray job {sub.submission_id} {info.state.value.lower()} before ftpipe reported a "
                f"result: {info.message or 'no message'}"
            )
        self._bring_back(sub, result or {}, record)
        if not record:
            record = {
                "run_id": sub.run_id,
                "pipeline": sub.pipeline,
                "status": _status_for(code),
                "exit_code": code,
                "started_at": sub.submitted_at,
                "finished_at": now_iso(),
                "duration_s": None,
                "host": f"ray {sub.address}",
                "steps": {},
                "error": (result or {}).get("error") or info.message,
            }
        record.update(
            executor="ray",
            store=str(self.rs.root),
            pipeline_path=str(self.path.resolve()),
            remote={
                "address": sub.address,
                "submission_id": sub.submission_id,
                "state": info.state.value,
                "message": info.message,
                "cluster_store": (result or {}).get("store"),
                "store_mode": (result or {}).get("store_mode"),
            },
        )
        run_dir = self.rs.run_dir(sub.run_id)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        from ftpipe.spec.secrets import redact_data, secret_values

        known = secret_values(self.loaded.pipeline)  # the cluster redacts too; this is the second barrier
        kept = "".join(ln + "\n" for ln in text.splitlines() if not ln.startswith(RESULT_MARKER))
        (run_dir / "logs" / "ray-job.log").write_text(redact(kept, known))
        if not (run_dir / "pipeline.yaml").exists() and self.loaded.interpolation is not None:
            import yaml

            (run_dir / "pipeline.yaml").write_text(
                yaml.safe_dump(redact_data(self.loaded.interpolation.data, known), sort_keys=False)
            )
        self.rs.write_run(record)
        self._clear_state(sub)
        return code, record

    def _bring_back(self, sub: Submission, result: dict, record: dict) -> None:
        cluster_store = result.get("store")
        if cluster_store and Path(cluster_store) == self.rs.root:
            fresh = self.rs.run_dir(sub.run_id) / "run.json"  # the job wrote into this very store
            if fresh.exists():
                record.clear()
                record.update(json.loads(fresh.read_text()))
            return
        if not record:
            return
        storage = sub.storage
        if storage and (is_uri(storage) or storage_path(storage).is_dir()):
            try:
                remote = RemoteStore(storage)
                remote.pull(f"runs/{sub.run_id}", self.rs.root)
                got = sum(
                    remote.pull(rel, self.rs.root)
                    for rel in artifact_rels(record)
                    if not (self.rs.root / rel / "_result.json").exists()
                )
                self.reporter.message(
                    f"brought run {sub.run_id} and {got} artifact{'s' if got != 1 else ''} back from {storage}"
                )
            except errors.FtpipeError:
                raise
            except Exception as exc:  # noqa: BLE001 - the record still comes home from the log
                self.reporter.error(f"could not copy the run back from {storage}: {type(exc).__name__}: {exc}")
            return
        where = f"{storage} (not visible from here)" if storage else f"{cluster_store} on the cluster node"
        self.reporter.message(
            f"the run record came back; the artifacts stay at {where} — set executor.storage "
            "to a shared path or URI to bring them home (docs/ray.md)"
        )

    def _report(self, code: int, record: dict, sub: Submission) -> int:
        return report(
            self.request,
            self.reporter,
            record,
            code,
            where=f"Ray job {sub.submission_id}",
            extra={"executor": "ray", "ray_job": sub.submission_id, "address": sub.address},
        )

    # ------------------------------------------------------------------ state
    def _state_path(self) -> Path:
        return state_file(self.rs.root, self.plan.pipeline)

    def _read_state(self) -> Submission | None:
        try:
            return Submission(**json.loads(self._state_path().read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _write_state(self, sub: Submission) -> None:
        write_json(self._state_path(), asdict(sub))

    def _clear_state(self, sub: Submission | None = None) -> None:
        current = self._read_state()
        if sub is None or (current is not None and current.submission_id == sub.submission_id):
            try:
                self._state_path().unlink()
            except FileNotFoundError:
                pass


def _parse_result(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                return json.loads(line[len(RESULT_MARKER) :])
            except ValueError:
                return None
    return None


def _status_for(code: int) -> str:
    return {
        errors.EXIT_OK: "succeeded",
        errors.EXIT_GATE_BLOCKED: "blocked",
        errors.EXIT_INTERRUPTED: "interrupted",
        errors.EXIT_LOCKED: "locked",
        errors.EXIT_INVALID: "invalid",
    }.get(code, "failed")


def exit_code_for(state: str, result: dict | None, driver_exit_code: int | None) -> int:
    """The ftpipe exit code of a finished job (exposed for tests and tools)."""
    if result is not None and result.get("exit_code") is not None:
        return int(result["exit_code"])
    if state == "STOPPED":
        return errors.EXIT_INTERRUPTED
    if state == "SUCCEEDED":
        return errors.EXIT_OK
    if driver_exit_code in (1, 2, 3, 4, 130):
        return int(driver_exit_code)
    return errors.EXIT_STEP_FAILED
