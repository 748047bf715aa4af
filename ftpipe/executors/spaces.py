"""The ``hf-spaces`` executor: runs the pipeline inside a private Docker Space, reproducibly.

AutoTrain's Spaces backend installs whatever autotrain-advanced is newest when the
container starts. Here the Space's image pins the ftpipe that made the plan and a lock of
every library the pipeline needs, captured from this environment; the inputs go to a
private dataset repo at a pinned revision; tokens go only into Space secrets.

One run: ``<ns>/ftpipe-<pipeline>-inputs`` (dataset) gets the pipeline file, its local data
and the request; ``<ns>/ftpipe-<pipeline>-<plan hash>`` (Space) gets a Dockerfile whose CMD
is ``python -m ftpipe.executors.space_entry`` (which runs ``ftpipe run ... --executor local
--json``); the entry pushes the run to ``<ns>/ftpipe-<pipeline>-results`` (dataset), and the
client brings it home into the local run store. The Space is paused when the run ends,
whatever the outcome, and on Ctrl-C.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets as _secrets
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import click

from ftpipe import __version__, errors
from ftpipe.contracts import RunRequest
from ftpipe.errors import RemoteError, UsageError
from ftpipe.executors import space_entry as entry
from ftpipe.progress import Reporter
from ftpipe.signals import sigterm_as_interrupt
from ftpipe.spec.interpolate import env_refs, interpolate, redact
from ftpipe.spec.models import SpacesExecutor
from ftpipe.spec.secrets import secret_paths
from ftpipe.store import RunStore, default_store, now_iso, write_json

POLL_MIN_S, POLL_MAX_S = 0.25, 10.0
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
ENDED = frozenset({SpaceStage.NO_APP_FILE, SpaceStage.CONFIG_ERROR, SpaceStage.BUILD_ERROR, SpaceStage.RUNTIME_ERROR,
                   SpaceStage.PAUSED, SpaceStage.STOPPED, SpaceStage.SLEEPING, SpaceStage.DELETING})
ACTIVE = frozenset({SpaceStage.BUILDING, SpaceStage.APP_STARTING, SpaceStage.RUNNING, SpaceStage.RUNNING_BUILDING,
                    SpaceStage.RUNNING_APP_STARTING})
_STAGE_NOTES = {
    SpaceStage.BUILDING: "building the image (the first build installs the pinned libraries: minutes; later builds "
                         "reuse the layers)",
    SpaceStage.APP_STARTING: "the container is starting",
    SpaceStage.RUNNING: "running `ftpipe run {file} --executor local` in the Space",
    SpaceStage.RUNNING_BUILDING: "running; a newer build is in progress",
}


@dataclass
class Submission:
    """What ``<store>/jobs/hf-spaces/<pipeline>.json`` holds while a Space runs a request."""

    request_id: str
    space_id: str
    inputs_repo: str
    inputs_revision: str
    results_repo: str
    fingerprint: str  # the plan's keys and the run options: re-attach only to the same request
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
            return _SpaceRun(request).run()


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower())


def space_names(namespace: str, pipeline: str, plan_hash: str) -> tuple[str, str, str]:
    """(Space, inputs dataset, results dataset) ids of a pipeline's plan."""
    base = f"ftpipe-{slug(pipeline)}"[:80]
    return f"{namespace}/{base}-{plan_hash}", f"{namespace}/{base}-inputs", f"{namespace}/{base}-results"


class _SpaceRun:
    def __init__(self, request: RunRequest) -> None:
        from ftpipe.engine import prepare

        self.request = request
        self.path = request.pipeline_path
        self.prepared = prepare(self.path)  # validates, plans, and checks every ${env:...} is set
        self.plan = self.prepared.plan
        if request.from_step and request.from_step not in {s.id for s in self.plan.steps}:
            raise UsageError(f"--from {request.from_step}: no such step "
                             f"(steps: {', '.join(s.id for s in self.plan.steps)})")
        ex = self.prepared.resolved.executor
        # defaults (token: ${env:HF_TOKEN}) are references too, and `--executor hf-spaces` on a
        # pipeline that names another executor gets the defaults
        raw = ex.model_dump() if isinstance(ex, SpacesExecutor) else {"type": "hf-spaces"}
        block = SpacesExecutor.model_validate(raw, context={"resolved": True}).model_dump()
        full = interpolate(block, resolve_secrets=True, secret_paths=secret_paths(SpacesExecutor, block))
        if full.missing:
            names = ", ".join(sorted({var for _, var in full.missing}))
            raise UsageError(f"the hf-spaces executor needs a Hub token with write access: {names} is not set",
                             hint=f"export {names}=hf_... (or set executor.token)")
        self.cfg = SpacesExecutor.model_validate(full.data, context={"resolved": True})
        self.secret_values = tuple({*self.prepared.secrets, self.cfg.token})
        self.rs = RunStore((request.store or default_store(self.path)).resolve())
        self.reporter = Reporter(quiet=request.quiet)
        keys = [[s.id, s.key] for s in self.plan.steps]
        self.plan_hash = hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:8]
        self.fingerprint = hashlib.sha256(json.dumps(keys + [request.force, request.from_step]).encode()).hexdigest()[:16]
        self.log_lines: list[str] = []
        self.t0 = time.monotonic()
        self.log_seen = {"build": 0, "run": 0}

    # ------------------------------------------------------------------ top level
    def run(self) -> int:
        from huggingface_hub import HfApi

        self.api = HfApi(token=self.cfg.token)
        name = self.plan.pipeline
        with self.rs.lock(f"{name}.hf-spaces", wait=self.request.wait_lock,
                          on_wait=lambda h: self.reporter.message(f"waiting for the runner that holds the lock ({h})")):
            sub = self._reattach()
            if sub is None:
                sub = self._submit()
            try:
                return self._follow(sub)
            except KeyboardInterrupt:
                self.reporter.error(f"interrupted: pausing Space {sub.space_id}")
                record = self._local_record(sub, errors.EXIT_INTERRUPTED, "interrupted before the Space reported a result")
                return self._report(record, sub)
            finally:
                self._pause(sub)
                self._clear_state()

    # ------------------------------------------------------------------ submit
    def _namespace(self) -> str:
        if self.cfg.namespace:
            return self.cfg.namespace
        from ftpipe.remote.hf import hub_errors

        with hub_errors("finding the token's user (whoami)"):
            return self.api.whoami()["name"]

    def _submit(self) -> Submission:
        from ftpipe.remote.hf import hub_errors

        space_id, inputs_repo, results_repo = space_names(self._namespace(), self.plan.pipeline, self.plan_hash)
        note = source_checkout_note()
        if note:
            self.reporter.message(f"note: {note}")
        request_id = self.rs.new_run_id() + "-" + _secrets.token_hex(2)
        secrets_, variables = self._space_environment()
        api = self.api
        with hub_errors("creating the private repos"):
            api.create_repo(inputs_repo, repo_type="dataset", private=True, exist_ok=True)
            api.create_repo(results_repo, repo_type="dataset", private=True, exist_ok=True)
            api.create_repo(space_id, repo_type="space", space_sdk="docker", space_hardware=_flavor(self.cfg.hardware),
                            private=True, exist_ok=True)
            for repo, kind in ((inputs_repo, "dataset"), (results_repo, "dataset"), (space_id, "space")):
                if not api.repo_info(repo, repo_type=kind).private:
                    raise UsageError(f"{kind} repo {repo} is public; ftpipe keeps a run's data private",
                                     hint="make it private on the Hub (Settings) or delete it, and run again")
        with hub_errors(f"pausing Space {space_id} while it is set up"):
            api.pause_space(space_id)  # nothing starts until the restart below, whatever was running before
        with hub_errors(f"uploading the inputs to {inputs_repo}"):
            revision = self._upload_inputs(inputs_repo, request_id, sorted(secrets_))
        self.reporter.message(f"inputs: private dataset {inputs_repo} @ {revision[:12]}")
        with hub_errors(f"setting up Space {space_id}"):
            for key, value in sorted(secrets_.items()):
                api.add_space_secret(space_id, key, value, description="set by ftpipe run")
            for key, value in sorted(variables.items()):
                api.add_space_variable(space_id, key, value, description="set by ftpipe run")
            if api.get_space_runtime(space_id).requested_hardware != self.cfg.hardware:
                api.request_space_hardware(space_id, _flavor(self.cfg.hardware))
            sub = Submission(request_id=request_id, space_id=space_id, inputs_repo=inputs_repo,
                             inputs_revision=revision, results_repo=results_repo, fingerprint=self.fingerprint,
                             hardware=self.cfg.hardware, submitted_at=now_iso())
            self._upload_space_files(sub)
            self._write_state(sub)
            # the Hub may keep earlier containers' logs: show only what this run adds
            self.log_seen = {kind: len(self._logs(space_id, build=kind == "build")) for kind in ("build", "run")}
            api.restart_space(space_id)
        self.reporter.message(f"Space {space_id} ({self.cfg.hardware}) started for {self.plan.pipeline} — "
                              f"{api.endpoint}/spaces/{space_id}")
        return sub

    def _space_environment(self) -> tuple[dict[str, str], dict[str, str]]:
        """(secrets, variables) the Space needs: every ${env:NAME} the pipeline references and
        that is set here. Secret ones, and any whose value holds a secret, go to secrets only."""
        assert self.prepared.loaded.doc is not None
        names = {ref.name: ref.secret for ref in env_refs(self.prepared.loaded.doc.data)}
        secrets_ = {entry.TOKEN_VAR: self.cfg.token}
        variables: dict[str, str] = {}
        for name, secret in names.items():
            value = os.environ.get(name)
            if value is None or name == entry.TOKEN_VAR:
                continue
            if secret or redact(value, self.secret_values) != value:
                secrets_[name] = value
            else:
                variables[name] = value
        return secrets_, variables

    def _input_files(self) -> tuple[Path, list[Path]]:
        """The pipeline file and the local files it reads, with their common folder."""
        from ftpipe.plan import resolve_local_files

        pipeline = self.path.resolve()
        base = pipeline.parent
        files = [pipeline]
        for src in self.prepared.resolved.dataset.all_sources():
            if src.type == "local":
                for rel in (src.path.values() if isinstance(src.path, dict) else [src.path]):
                    files += [p.resolve() for p in resolve_local_files(base, rel)]
        model = (base / self.prepared.resolved.model.base).expanduser()
        if not self.prepared.resolved.model.base.startswith("builtin:") and model.is_dir():
            files += sorted(p.resolve() for p in model.rglob("*") if p.is_file())
        root = Path(os.path.commonpath([str(base)] + [str(p.parent) for p in files]))
        return root, sorted(set(files))

    def _upload_inputs(self, repo: str, request_id: str, secret_names: list[str]) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        root, files = self._input_files()
        rel_pipeline = self.path.resolve().relative_to(root).as_posix()
        request = {"request_id": request_id, "pipeline": rel_pipeline, "force": self.request.force,
                   "from_step": self.request.from_step, "secret_env": secret_names, "ftpipe": __version__,
                   "plan": {s.id: s.key for s in self.plan.steps}}
        ops: list[Any] = [CommitOperationAdd(p.relative_to(root).as_posix(), str(p)) for p in files]
        ops.append(CommitOperationAdd(entry.REQUEST_FILE, json.dumps(request, indent=2).encode()))
        keep = {op.path_in_repo for op in ops} | {".gitattributes"}
        ops += [CommitOperationDelete(f) for f in self.api.list_repo_files(repo, repo_type="dataset") if f not in keep]
        info = self.api.create_commit(repo, ops, repo_type="dataset",
                                      commit_message=f"ftpipe inputs for {self.plan.pipeline} ({request_id})")
        return info.oid

    def _upload_space_files(self, sub: Submission) -> None:
        from huggingface_hub import CommitOperationAdd

        files = space_files(self.prepared.resolved, sub, self.plan_hash)
        ops = [CommitOperationAdd(path, text.encode()) for path, text in files.items()]
        self.api.create_commit(sub.space_id, ops, repo_type="space",
                               commit_message=f"ftpipe {__version__}: run {self.plan.pipeline} ({sub.request_id})")

    # ------------------------------------------------------------------ follow
    def _follow(self, sub: Submission) -> int:
        from ftpipe.remote.hf import hub_errors, is_retryable
        from ftpipe.remote.retry import call_with_retries

        deadline = time.monotonic() + self.cfg.timeout_s
        interval, last = POLL_MIN_S, None
        seen = dict(self.log_seen)
        while True:
            result = self._result(sub)
            if result is not None:
                break
            with hub_errors(f"reading the runtime of Space {sub.space_id}"):
                runtime = call_with_retries(lambda: self.api.get_space_runtime(sub.space_id),
                                            what=f"reading the runtime of Space {sub.space_id}",
                                            is_transient=is_retryable)
            stage = SpaceStage.of(runtime.stage)
            if stage != last:
                note = _STAGE_NOTES.get(stage, "").format(file=self.path.name)
                self.reporter.message(f"Space {sub.space_id}: {stage.value}" + (f" — {note}" if note else ""))
                last = stage
            self._pump_logs(sub, seen, build=stage in (SpaceStage.BUILDING, SpaceStage.BUILD_ERROR))
            if stage in ENDED:
                result = self._result(sub)  # the entry pushes its result before its process ends
                if result is not None:
                    break
                return self._failed(sub, stage, runtime.raw.get("errorMessage"), seen)
            if time.monotonic() > deadline:
                msg = f"timed out after {self.cfg.timeout_s}s (executor.timeout_s) waiting for the run in Space {sub.space_id}"
                self.reporter.error(msg)
                self._pump_logs(sub, seen, build=False)
                return self._report(self._local_record(sub, errors.EXIT_STEP_FAILED, msg), sub)
            time.sleep(interval)
            interval = min(POLL_MAX_S, interval * 1.5)
        self._pump_logs(sub, seen, build=False)
        return self._bring_home(sub, result)

    def _result(self, sub: Submission) -> dict | None:
        from ftpipe.remote.hf import hub_errors

        name = entry.result_file(sub.request_id)
        with hub_errors(f"looking for the run's result in {sub.results_repo}"):
            if not self.api.file_exists(sub.results_repo, name, repo_type="dataset"):
                return None
            tmp = self.rs.root / "tmp" / f"space-{sub.request_id}"
            path = self.api.hf_hub_download(sub.results_repo, name, repo_type="dataset", local_dir=tmp)
            result = json.loads(Path(path).read_text())
            shutil.rmtree(tmp, ignore_errors=True)
        return result

    def _pump_logs(self, sub: Submission, seen: dict[str, int], *, build: bool) -> None:
        """Show the Space's new log lines (build or run), secrets redacted; keep them for the run's logs."""
        kind = "build" if build else "run"
        lines = self._logs(sub.space_id, build=build)
        new = lines[seen[kind]:] if len(lines) >= seen[kind] else lines  # shorter: a new container's log
        seen[kind] = len(lines)
        for line in new:
            clean = redact(line, self.secret_values)
            self.log_lines.append(f"[{kind}] {clean}")
            if not self.request.quiet:
                click.echo(f"  │ {clean}", err=True)

    def _logs(self, space_id: str, *, build: bool) -> list[str]:
        try:
            return [ln.rstrip("\n") for ln in self.api.fetch_space_logs(space_id, build=build)]
        except Exception:  # noqa: BLE001 - logs are a convenience; the pushed result is what counts
            return []

    def _failed(self, sub: Submission, stage: SpaceStage, message: str | None, seen: dict[str, int]) -> int:
        build = stage in (SpaceStage.BUILD_ERROR, SpaceStage.CONFIG_ERROR)
        self._pump_logs(sub, seen, build=build)
        what = {SpaceStage.BUILD_ERROR: "the image failed to build",
                SpaceStage.RUNTIME_ERROR: "the container stopped",
                SpaceStage.CONFIG_ERROR: "the Space's configuration is invalid",
                SpaceStage.NO_APP_FILE: "the Space lost its Dockerfile"}.get(
            stage, f"the Space was {stage.value.lower()} by someone else")
        msg = f"Space {sub.space_id} {stage.value}: {what} before the run reported a result"
        if message:
            msg += f": {redact(str(message), self.secret_values)}"
        tail = [ln for ln in self.log_lines if ln.startswith(f"[{'build' if build else 'run'}]")][-15:]
        if tail:
            msg += "\n  last log lines:\n" + "\n".join(f"    {ln.split('] ', 1)[1]}" for ln in tail)
        else:
            msg += f"\n  logs: {self.api.endpoint}/spaces/{sub.space_id}?logs={'build' if build else 'container'}"
        self.reporter.error(msg)
        return self._report(self._local_record(sub, errors.EXIT_STEP_FAILED, msg), sub)

    # ------------------------------------------------------------------ bring home
    def _bring_home(self, sub: Submission, result: dict) -> int:
        from ftpipe.remote.hf import hub_errors

        code = int(result.get("exit_code", errors.EXIT_STEP_FAILED))
        run_id = result.get("run_id")
        if not run_id:
            msg = redact(f"the run in Space {sub.space_id} reported no run record: {result.get('error')}",
                         self.secret_values)
            tail = result.get("log_tail") or []
            if tail:
                msg += "\n  last log lines:\n" + "\n".join(f"    {redact(ln, self.secret_values)}" for ln in tail[-15:])
            self.reporter.error(msg)
            return self._report(self._local_record(sub, code or errors.EXIT_STEP_FAILED, msg), sub)
        wanted = [f"runs/{run_id}/**"] + [f"{rel}/**" for rel in result.get("artifacts", [])
                                           if self.rs.artifact(rel.split("/", 1)[1]) is None]
        tmp = self.rs.root / "tmp" / f"space-{sub.request_id}"
        with hub_errors(f"bringing run {run_id} home from {sub.results_repo}"), _no_progress_bars():
            self.api.snapshot_download(sub.results_repo, repo_type="dataset", local_dir=tmp, allow_patterns=wanted)
        brought = 0
        for rel in result.get("artifacts", []):
            dest = self.rs.root / rel
            if (tmp / rel / "_result.json").exists() and self.rs.artifact(rel.split("/", 1)[1]) is None:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(dest, ignore_errors=True)  # a half-written leftover without _result.json
                os.replace(tmp / rel, dest)
                brought += 1
        if not (tmp / "runs" / run_id / "run.json").exists():
            raise RemoteError("Hugging Face Hub", f"the results repo {sub.results_repo} has no record of run {run_id} "
                              f"although request {sub.request_id} says it finished",
                              hint="look at the repo's latest commit; `ftpipe run` again starts a new run")
        run_dir = self.rs.run_dir(run_id)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / "runs" / run_id, run_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        record = json.loads((run_dir / "run.json").read_text())
        record.update(store=str(self.rs.root), pipeline_path=str(self.path.resolve()), executor="hf-spaces",
                      space=self._space_info(sub, result))
        self._write_space_log(run_dir)
        self.rs.write_run(record)
        had = len(result.get("artifacts", [])) - brought
        self.reporter.message(f"brought run {run_id} home from {sub.results_repo}: {brought} new artifact"
                              f"{'s' if brought != 1 else ''}" + (f", {had} already here" if had else ""))
        return self._report(record, sub)

    def _space_info(self, sub: Submission, result: dict | None) -> dict:
        info: dict[str, Any] = {"space_id": sub.space_id, "hardware": sub.hardware,
                                "inputs": f"{sub.inputs_repo}@{sub.inputs_revision}",
                "results": sub.results_repo, "request_id": sub.request_id}
        if result:
            info["remote_store"] = (result.get("summary") or {}).get("store")
        info["client_wall_s"] = round(time.monotonic() - self.t0, 3)  # build and start-up included
        return info

    def _write_space_log(self, run_dir: Path) -> None:
        if self.log_lines:
            (run_dir / "logs").mkdir(parents=True, exist_ok=True)
            (run_dir / "logs" / "space.log").write_text("\n".join(self.log_lines) + "\n")

    def _local_record(self, sub: Submission, code: int, error: str) -> dict:
        """A run record for a run whose own record never came back (build error, timeout, Ctrl-C)."""
        import yaml

        run_id = self.rs.new_run_id()
        run_dir = self.rs.run_dir(run_id)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (run_dir / "pipeline.yaml").write_text(yaml.safe_dump(self.prepared.redacted, sort_keys=False))
        self._write_space_log(run_dir)
        status = "interrupted" if code == errors.EXIT_INTERRUPTED else "failed"
        record: dict[str, Any] = {
                  "run_id": run_id, "pipeline": self.plan.pipeline, "pipeline_path": str(self.path.resolve()),
                  "store": str(self.rs.root), "status": status, "exit_code": code, "started_at": sub.submitted_at,
                  "finished_at": now_iso(), "duration_s": None, "host": f"hf-space {sub.space_id}",
                  "executor": "hf-spaces", "error": redact(error, self.secret_values),
                  "steps": {s.id: {"kind": s.kind, "status": "not-run", "key": s.key, "needs": list(s.needs)}
                            for s in self.plan.steps},
                  "space": self._space_info(sub, None)}
        # `ftpipe runs show` prints a step's reason: say there why nothing ran
        record["steps"][self.plan.steps[0].id]["reason"] = str(record["error"]).splitlines()[0]
        self.rs.write_run(record)
        return record

    def _report(self, record: dict, sub: Submission) -> int:
        from ftpipe.engine import RunOutcome
        from ftpipe.store_location import store_arg

        code = int(record.get("exit_code") or 0)
        line = f"run {record['run_id']} in Space {sub.space_id}: {record.get('status')} (exit {code}) — " \
               f"ftpipe runs show {record['run_id']}{store_arg(self.rs.root)}"
        (self.reporter.message if code == errors.EXIT_OK else self.reporter.error)(line)
        for sid, step in record.get("steps", {}).items():
            if step.get("status") == "failed" and step.get("error"):
                self.reporter.error(f"  {sid} failed: {step['error']}")
        if self.request.json_output:
            summary = RunOutcome(code, record["run_id"], record).summary()
            summary.update(executor="hf-spaces", space=sub.space_id)
            click.echo(json.dumps(summary, default=str))
        return code

    # ------------------------------------------------------------------ pause, state
    def _pause(self, sub: Submission) -> None:
        try:
            self.api.pause_space(sub.space_id)
        except Exception as exc:  # noqa: BLE001 - say so, with the way to do it by hand
            self.reporter.error(f"could not pause Space {sub.space_id} ({type(exc).__name__}): it may keep "
                                f"running on {sub.hardware}; pause it at {self.api.endpoint}/spaces/{sub.space_id}/settings")
            return
        self.reporter.message(f"Space {sub.space_id} paused (no charges while paused)")

    def _state_path(self) -> Path:
        return self.rs.root / "jobs" / "hf-spaces" / f"{self.plan.pipeline}.json"

    def _write_state(self, sub: Submission) -> None:
        write_json(self._state_path(), asdict(sub))

    def _clear_state(self) -> None:
        self._state_path().unlink(missing_ok=True)

    def _reattach(self) -> Submission | None:
        """A runner that was killed left its request here: follow that Space instead of starting
        another, when it runs the same plan with the same options."""
        try:
            sub = Submission(**json.loads(self._state_path().read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if sub.fingerprint != self.fingerprint:
            return None
        try:
            if self._result(sub) is not None:
                self.reporter.message(f"request {sub.request_id} finished while no runner was attached: bringing it home")
                return sub
            if SpaceStage.of(self.api.get_space_runtime(sub.space_id).stage) in ACTIVE:
                self.reporter.message(f"re-attaching to Space {sub.space_id} (request {sub.request_id}, "
                                      f"started {sub.submitted_at})")
                return sub
        except Exception:  # noqa: BLE001 - a Space or repo that is gone: start afresh
            return None
        return None


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was:
            enable_progress_bars()


# ---------------------------------------------------------------------- the Space's files

def space_files(pipeline: Any, sub: Submission, plan_hash: str) -> dict[str, str]:
    """Dockerfile, README.md (front matter: sdk docker) and constraints.txt of the Space."""
    extras, dists = requirements_for(pipeline)
    lock = dependency_lock(extras, dists)
    return {"Dockerfile": dockerfile(pipeline, sub, plan_hash, extras, dists, lock),
            "README.md": _readme(pipeline.name, plan_hash),
            "constraints.txt": "".join(f"{n}=={v}\n" for n, v in sorted(lock.items()))}


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
        (d.split("==")[0], frozenset()) for d in dists]
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


def dockerfile(pipeline: Any, sub: Submission, plan_hash: str, extras: list[str], dists: list[str],
               lock: dict[str, str]) -> str:
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
        lines.append(f"RUN pip install --no-cache-dir --user torch=={torch} "
                     "--index-url https://download.pytorch.org/whl/cpu")
    lines.append("RUN pip install --no-cache-dir --user -c constraints.txt " + " ".join(f'"{r}"' for r in install))
    from ftpipe.extras import managed_env

    managed = managed_env(pipeline)
    if managed:  # the backend's own environment, built into the image (FTPIPE_<NAME>_ENV says where)
        var = "FTPIPE_" + re.sub(r"[^A-Z0-9]", "_", managed.upper()) + "_ENV"
        lines += [f"ENV {var}={SPACE_HOME}/{managed}-env", f"RUN ftpipe backends install {managed}"]
    env = {entry.ENV_INPUTS: sub.inputs_repo, entry.ENV_REVISION: sub.inputs_revision,
           entry.ENV_RESULTS: sub.results_repo, entry.ENV_SPACE: sub.space_id, entry.ENV_PORT: str(APP_PORT),
           entry.ENV_WORKDIR: f"{SPACE_HOME}/work"}
    lines += [f"ENV {k}={v}" for k, v in env.items()]
    lines += [f"EXPOSE {APP_PORT}", 'CMD ["python", "-m", "ftpipe.executors.space_entry"]']
    return "\n".join(lines) + "\n"


def _readme(name: str, plan_hash: str) -> str:
    return (f"---\ntitle: ftpipe {name}\nemoji: 🛠\ncolorFrom: gray\ncolorTo: blue\nsdk: docker\n"
            f"app_port: {APP_PORT}\npinned: false\n---\n\n"
            f"Runs the ftpipe pipeline `{name}` (plan {plan_hash}) once per `ftpipe run`, pushes the run to the "
            "results dataset, and pauses itself. Made by ftpipe; its files are rewritten on every run.\n")


def source_checkout_note() -> str | None:
    """ftpipe runs from a source tree here: the Space installs the released version of that number."""
    import ftpipe

    parts = Path(ftpipe.__file__).resolve().parts
    if "site-packages" in parts or "dist-packages" in parts:
        return None
    return (f"ftpipe runs from a source checkout ({Path(ftpipe.__file__).parent.parent}); the Space installs "
            f"the released ftpipe=={__version__}, which may differ from your working tree")


def _flavor(name: str) -> Any:
    """A hardware flavor for the Hub client: its ``SpaceHardware`` member when it knows the
    name, else the name itself (the Hub accepts flavors newer than the client's enum)."""
    from huggingface_hub import SpaceHardware

    try:
        return SpaceHardware(name)
    except ValueError:
        return name
