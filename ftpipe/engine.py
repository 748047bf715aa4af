"""Runs a plan on this machine: cache lookups, the run record, step contexts, locking,
failure and interrupt handling. Executors other than ``local`` end up calling
:func:`execute` on the machine where the steps run."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from ftpipe import __version__, errors
from ftpipe.contracts import CHECKPOINTS, StepContext, StepResult
from ftpipe.errors import FtpipeError, UsageError
from ftpipe.faults import DiskFull, no_room, release_room, reserved_room, store_full
from ftpipe.heap import frozen_heap
from ftpipe.planner import Plan, PlannedStep, build_plan
from ftpipe.progress import Reporter
from ftpipe.signals import sigterm_as_interrupt
from ftpipe.spec.interpolate import interpolate, redact
from ftpipe.spec.validate import Loaded, load_checked, path_str
from ftpipe.steplog import library_logs_to
from ftpipe.store import RunStore, default_store, now_iso

LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "huggingface_hub", "openai", "ray", "pydantic")

StepRunner = Callable[[PlannedStep, StepContext], StepResult]


@dataclass(frozen=True)
class Prepared:
    """A validated pipeline ready to run: the plan, the resolved config, its secrets."""

    loaded: Loaded
    plan: Plan
    resolved: Any  # Pipeline with ${env:...} replaced (secrets included): never written
    secrets: tuple[str, ...]
    redacted: dict  # the pipeline as data: non-secret references resolved, secrets as references, secret values ***
    unset_secrets: tuple[str, ...] = ()  # secret variables left to the remote side's environment


def prepare(path: Path, *, env: Mapping[str, str] | None = None, secrets_elsewhere: bool = False) -> Prepared:
    """Validate, plan, and resolve references for a run. Every environment variable the
    pipeline needs must be set before the first step starts, except, with
    ``secrets_elsewhere`` (an executor whose workers have their own environment, as a Ray
    cluster's nodes do), secret ones: those are listed in ``unset_secrets``."""
    from ftpipe.registry import pipeline_model
    from ftpipe.spec.secrets import is_secret_var, secret_paths

    loaded = load_checked(path, env=env)
    plan = build_plan(loaded.pipeline, path)
    assert loaded.doc is not None
    full = interpolate(loaded.doc.data, env=os.environ if env is None else env, resolve_secrets=True)
    missing, unset = list(full.missing), []
    if secrets_elsewhere and missing:
        secret_at = secret_paths(pipeline_model(), loaded.doc.data)
        unset = [var for p, var in missing if p in secret_at or is_secret_var(var)]
        missing = [(p, var) for p, var in missing if var not in unset]
    if missing:
        lines = []
        for mpath, var in missing:
            line, col = loaded.doc.pos(mpath)
            lines.append(f"  {path}:{line}:{col}  {path_str(mpath)}: environment variable {var} is not set")
        raise UsageError(
            "the pipeline needs environment variables that are not set:\n" + "\n".join(lines),
            hint="export them (or give a default: ${env:NAME:-value}) and run again",
        )
    resolved = pipeline_model().model_validate(full.data, context={"resolved": True})
    assert loaded.interpolation is not None
    from ftpipe.spec.secrets import redact_data, resolve_secret_defaults, secret_values

    run_env = os.environ if env is None else env
    # every secret value known to the run: resolved Secret fields, the variables Secret fields
    # (defaults too) reference, the well-known token variables; the stored pipeline is redacted
    # with all of them, whichever field a value ended up in
    secrets = tuple(dict.fromkeys([*full.secrets, *secret_values(resolved, run_env)]))
    resolved = resolve_secret_defaults(resolved, run_env)  # a default ${env:HF_TOKEN} becomes the token
    redacted = redact_data(loaded.interpolation.data, secrets)
    return Prepared(loaded, plan, resolved, secrets, redacted, tuple(dict.fromkeys(unset)))


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "ftpipe": __version__}
    for lib in LIBRARIES:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            pass
    return out


def default_step_runner(step: PlannedStep, ctx: StepContext) -> StepResult:
    """Look up the implementation of a step by kind (and plugin name) and run it."""
    from ftpipe import registry

    if step.kind == "prepare":
        from ftpipe.data.prepare import run_prepare

        return run_prepare(ctx)
    if step.kind == "train":
        return registry.get("trainer", step.plugin or "").load().train(ctx)
    if step.kind == "evaluate":
        from ftpipe.evaluation.step import run_evaluate

        return run_evaluate(ctx)
    if step.kind == "gate":
        from ftpipe.evaluation.gate import run_gate

        return run_gate(ctx)
    if step.kind == "deploy":
        return registry.get("target", step.plugin or "").load().deploy(ctx)
    raise UsageError(f"unknown step kind {step.kind!r}")


@dataclass
class RunOutcome:
    exit_code: int
    run_id: str
    record: dict = field(default_factory=dict)

    def summary(self) -> dict:
        steps = self.record.get("steps", {})
        return {
            "run_id": self.run_id,
            "pipeline": self.record.get("pipeline"),
            "status": self.record.get("status"),
            "exit_code": self.exit_code,
            "up_to_date": bool(steps) and all(s["status"] in ("cached", "skipped") for s in steps.values()),
            "steps": {k: v["status"] for k, v in steps.items()},
            "duration_s": self.record.get("duration_s"),
            "store": self.record.get("store"),
        }


def execute(
    path: Path,
    *,
    store: Path | None = None,
    force: bool = False,
    from_step: str | None = None,
    wait: bool = False,
    reporter: Reporter | None = None,
    step_runner: StepRunner = default_step_runner,
    prepared: Prepared | None = None,
    executor_name: str = "local",
    run_id: str | None = None,
    preflight: bool | None = None,
) -> RunOutcome:
    """Run the pipeline at ``path`` here. Returns the exit code and the run record.

    ``preflight`` (default: when the plugins' own steps run, i.e. ``step_runner`` is the
    default) runs every plugin's read-only checks first (ftpipe.preflight)."""
    reporter = reporter or Reporter()
    prepared = prepared or prepare(path)
    plan = prepared.plan
    if from_step is not None and from_step not in {s.id for s in plan.steps}:
        raise UsageError(f"--from {from_step}: no such step (steps: {', '.join(s.id for s in plan.steps)})")
    rerun = set()
    if force:
        rerun = {s.id for s in plan.steps}
    elif from_step:
        rerun = plan.downstream(from_step)

    # the libraries' own progress bars would fight ours; their warnings go to the step logs
    for var, value in (
        ("TQDM_DISABLE", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(var, value)
    rs = RunStore((store or default_store(path)).resolve())
    if store is None:
        from ftpipe.store_location import nested_store_note

        note = nested_store_note(rs.root, path)
        if note:
            reporter.message(note)
    if preflight if preflight is not None else step_runner is default_step_runner:
        _preflight(prepared, rs, rerun, reporter)
    with (
        sigterm_as_interrupt(),
        rs.lock(
            plan.pipeline, wait=wait, on_wait=lambda h: reporter.message(f"waiting for the lock held by {h}")
        ) as stale,
    ):
        if stale:
            reporter.message(stale)
        with reserved_room(rs.root):
            return _run_locked(path, rs, prepared, rerun, reporter, step_runner, executor_name, run_id)


def _still_current(step: PlannedStep, artifact: Path) -> bool:
    """A deploy target may say that what a cached deploy produced is gone (a deleted
    output folder), so that the step runs again instead of reporting a stale success."""
    if step.kind != "deploy":
        return True
    from ftpipe import registry

    check = getattr(registry.get("target", step.plugin or "").load(), "is_current", None)
    return bool(check(artifact)) if callable(check) else True


def _preflight(prepared: Prepared, rs: RunStore, rerun: set[str], reporter: Reporter) -> None:
    """Every plugin's read-only checks for the steps that will run, before the first of
    them: a missing prerequisite is a usage error (exit 2) naming its fix, not a step
    that fails after paid work (ftpipe.preflight)."""
    from ftpipe import preflight

    steps = preflight.steps_to_run(prepared.plan, rs, rerun)
    # the executor is checked where the run is submitted (the CLI), not where its steps run
    preflight.enforce(prepared, cache_dir=rs.cache_dir(), steps=steps, log=reporter.message, with_executor=False)


def _run_locked(
    path: Path,
    rs: RunStore,
    prepared: Prepared,
    rerun: set[str],
    reporter: Reporter,
    step_runner: StepRunner,
    executor_name: str,
    run_id: str | None,
) -> RunOutcome:
    plan = prepared.plan
    run_id = run_id or rs.new_run_id()
    rs.note_lock_run(plan.pipeline, run_id)
    run_dir = rs.run_dir(run_id)
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    (run_dir / "pipeline.yaml").write_text(yaml.safe_dump(prepared.redacted, sort_keys=False))
    t0 = time.monotonic()
    record: dict[str, Any] = {
        "run_id": run_id,
        "pipeline": plan.pipeline,
        "pipeline_path": str(path.resolve()),
        "store": str(rs.root),
        "status": "running",
        "exit_code": None,
        "started_at": now_iso(),
        "finished_at": None,
        "duration_s": None,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "executor": executor_name,
        "argv": [redact(a, prepared.secrets) for a in sys.argv],
        "versions": library_versions(),
        "fingerprints": plan.fingerprints,
        "steps": {
            s.id: {"kind": s.kind, "status": "pending", "key": s.key, "needs": list(s.needs)} for s in plan.steps
        },
    }
    rs.write_run(record)
    reporter.message(f"run {run_id} of {plan.pipeline} ({len(plan.steps)} steps) — store {rs.root}")
    exit_code = errors.EXIT_OK
    blocked_reason: str | None = None
    artifacts: dict[str, Path] = {}
    try:
        for step in plan.steps:
            srec = record["steps"][step.id]
            if exit_code == errors.EXIT_STEP_FAILED:
                srec.update(status="not-run")
                continue
            if blocked_reason is not None and step.kind == "deploy":
                srec.update(status="skipped", reason=f"gate blocked deployment: {blocked_reason}")
                reporter.step_finished(step.id, "skipped", None, "gate blocked deployment")
                continue
            cached = rs.artifact(step.key) if step.id not in rerun else None
            if cached is not None and not _still_current(step, cached):
                reporter.message(f"{step.id}: its output is gone since it was cached: running it again")
                cached = None
            if cached is not None:
                result = rs.artifact_result(step.key) or {}
                artifacts[step.id] = cached
                srec.update(
                    status="cached",
                    artifact=str(cached.relative_to(rs.root)),
                    metrics=result.get("metrics", {}),
                    summary=result.get("summary", ""),
                    from_run=result.get("run_id"),
                )
                if result.get("outcome") == "blocked":
                    srec["status"] = "blocked"
                    blocked_reason = result.get("summary") or "gate failed"
                    exit_code = errors.EXIT_GATE_BLOCKED
                reporter.step_finished(step.id, "cached", None, result.get("summary", ""))
                rs.write_run(record)
                continue
            status = _run_one(step, rs, record, prepared, path, run_id, artifacts, reporter, step_runner, rerun)
            if status == "blocked":
                blocked_reason = record["steps"][step.id].get("summary") or "gate failed"
                exit_code = errors.EXIT_GATE_BLOCKED
            elif status == "failed":
                exit_code = errors.EXIT_STEP_FAILED
    except KeyboardInterrupt:
        exit_code = errors.EXIT_INTERRUPTED
        for srec in record["steps"].values():
            if srec["status"] == "running":
                srec.update(status="interrupted", finished_at=now_iso())
            elif srec["status"] == "pending":
                srec["status"] = "not-run"
        reporter.error("interrupted: finished steps are kept; `ftpipe run` again resumes from here")
    except BaseException as exc:  # a bug in the engine or the store: close the record, then raise
        _close(record, rs, t0, errors.EXIT_STEP_FAILED, f"internal error: {type(exc).__name__}: {exc}")
        raise
    statuses = {s["status"] for s in record["steps"].values()}
    record["status"] = {
        errors.EXIT_OK: "succeeded",
        errors.EXIT_STEP_FAILED: "failed",
        errors.EXIT_GATE_BLOCKED: "blocked",
        errors.EXIT_INTERRUPTED: "interrupted",
    }[exit_code]
    if exit_code == errors.EXIT_OK and statuses <= {"cached"}:
        record["up_to_date"] = True
    record.update(exit_code=exit_code, finished_at=now_iso(), duration_s=round(time.monotonic() - t0, 3))
    try:
        rs.write_run(record)
    except OSError as exc:
        if not no_room(exc):
            raise
        release_room(rs.root)
        try:
            rs.write_run(record)
        except OSError:
            reporter.error(f"run {run_id}: {DiskFull(rs.root, exc)}")
            return RunOutcome(errors.EXIT_STEP_FAILED, run_id, record)
    if record.get("up_to_date"):
        reporter.message(f"up to date: every step's inputs are unchanged (run {run_id}, {record['duration_s']:.2f}s)")
    elif exit_code == errors.EXIT_OK:
        from ftpipe.store_location import store_arg

        reporter.message(
            f"run {run_id} succeeded in {record['duration_s']:.1f}s — ftpipe runs show {run_id}{store_arg(rs.root)}"
        )
    elif exit_code == errors.EXIT_GATE_BLOCKED:
        reporter.error(f"run {run_id}: the evaluation gate blocked deployment: {blocked_reason}")
    elif exit_code == errors.EXIT_STEP_FAILED:
        reporter.error(f"run {run_id} failed — logs in {run_dir / 'logs'}")
    return RunOutcome(exit_code, run_id, record)


def _close(record: dict, rs: RunStore, t0: float, exit_code: int, error: str) -> None:
    """Write the run record as finished after an unexpected failure (never left "running")."""
    for srec in record["steps"].values():
        if srec["status"] == "running":
            srec.update(status="failed", finished_at=now_iso(), error=error)
        elif srec["status"] == "pending":
            srec["status"] = "not-run"
    record.update(
        status="failed",
        exit_code=exit_code,
        error=error,
        finished_at=now_iso(),
        duration_s=round(time.monotonic() - t0, 3),
    )
    try:
        rs.write_run(record)
    except Exception:  # noqa: BLE001 - the original error matters more
        pass


def _run_one(
    step: PlannedStep,
    rs: RunStore,
    record: dict,
    prepared: Prepared,
    path: Path,
    run_id: str,
    artifacts: dict[str, Path],
    reporter: Reporter,
    step_runner: StepRunner,
    forced: set[str],
) -> str:
    srec = record["steps"][step.id]
    log_path = rs.run_dir(run_id) / "logs" / f"{step.id}.log"
    secrets = prepared.secrets
    log_file = open(log_path, "a", encoding="utf-8")

    def log(line: str) -> None:
        clean = redact(str(line), secrets)
        log_file.write(f"{now_iso()} {clean}\n")
        log_file.flush()

    def progress(done: int, total: int | None, what: str) -> None:
        reporter.progress(step.id, done, total, redact(what, secrets))

    if step.id in forced:  # a deliberate rerun does not resume from the last run's checkpoints
        # (other state, such as the record of a finished remote job, stays: never pay twice)
        shutil.rmtree(rs.root / "state" / step.key / CHECKPOINTS, ignore_errors=True)
    scratch = rs.scratch(step.key)
    options: dict[str, Any] = {}
    if step.kind == "deploy" and step.index is not None:
        options["target"] = prepared.resolved.deploy[step.index]
    ctx = StepContext(
        run_id=run_id,
        step_id=step.id,
        pipeline=prepared.resolved,
        pipeline_path=path.resolve(),
        out_dir=scratch,
        inputs={n: artifacts[n] for n in step.needs if n in artifacts},
        state_dir=rs.state_dir(step.key),
        cache_dir=rs.cache_dir(),
        log=log,
        progress=progress,
        secrets=secrets,
        cache_key=step.key,
        options=options,
    )
    srec.update(status="running", started_at=now_iso(), log=str(log_path.relative_to(rs.root)))
    rs.write_run(record)
    reporter.step_started(step.id)
    t0 = time.monotonic()
    try:
        with library_logs_to(log), frozen_heap():
            result = step_runner(step, ctx)
        if not isinstance(result, StepResult):
            raise TypeError(
                f"step {step.id} returned {type(result).__name__}, not a StepResult "
                f"(a bug in the {step.plugin or step.kind} implementation)"
            )
        seconds = time.monotonic() - t0
        metrics = json.loads(redact(json.dumps(dict(result.metrics), default=str), secrets))
        summary = redact(str(result.summary), secrets)
        artifact = rs.commit_artifact(
            step.key,
            scratch,
            {
                "run_id": run_id,
                "step": step.id,
                "metrics": metrics,
                "summary": summary,
                "outcome": result.outcome,
                "finished_at": now_iso(),
                "duration_s": round(seconds, 3),
            },
        )
    except KeyboardInterrupt:
        log("interrupted")
        log_file.close()
        raise
    except Exception as exc:  # noqa: BLE001 - a step's bug must not lose the run record
        if no_room(exc) or store_full(rs.root):  # drop the half-written output: the record needs the room
            shutil.rmtree(scratch, ignore_errors=True)
            release_room(rs.root)
            msg = redact(str(DiskFull(rs.root, exc)), secrets)
            return _fail(
                step,
                srec,
                rs,
                record,
                reporter,
                log,
                log_file,
                msg,
                t0,
                None if no_room(exc) else redact(traceback.format_exc(), secrets),
            )
        if isinstance(exc, FtpipeError):
            return _fail(step, srec, rs, record, reporter, log, log_file, redact(str(exc), secrets), t0, None)
        tb = redact(traceback.format_exc(), secrets)
        msg = redact(f"{type(exc).__name__}: {exc}", secrets)
        return _fail(step, srec, rs, record, reporter, log, log_file, msg, t0, tb)
    artifacts[step.id] = artifact
    status = "blocked" if result.outcome == "blocked" else "done"
    srec.update(
        status=status,
        finished_at=now_iso(),
        duration_s=round(seconds, 3),
        metrics=metrics,
        summary=summary,
        artifact=str(artifact.relative_to(rs.root)),
    )
    log(f"{status} in {seconds:.2f}s {summary}")
    log_file.close()
    rs.write_run(record)
    reporter.step_finished(step.id, status, seconds, summary)
    return status


def _fail(step, srec, rs, record, reporter, log, log_file, msg, t0, tb) -> str:
    seconds = time.monotonic() - t0
    srec.update(status="failed", finished_at=now_iso(), duration_s=round(seconds, 3), error=msg)
    try:
        if tb:
            log(tb)
        log(f"failed: {msg}")
        log_file.close()
        rs.write_run(record)
    except OSError as exc:  # still no room: the last record written stays (atomic writes)
        if not no_room(exc):
            raise
        reporter.error(f"could not record the failure of {step.id}: {DiskFull(rs.root, exc).message}")
    reporter.step_finished(step.id, "failed", seconds)
    reporter.error(
        f"{step.id} failed: {msg}" + ("" if not tb else "\n  (traceback in the step log; FTPIPE_DEBUG=1 shows it here)")
    )
    if tb and os.environ.get("FTPIPE_DEBUG"):
        reporter.error(tb)
    return "failed"
