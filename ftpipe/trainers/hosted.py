"""What the OpenAI and Azure OpenAI backends share: the job record in the step's state
folder, uploading (or reusing) the training files, submitting a job exactly once,
re-attaching to it after a crash, polling it with backoff while streaming its events, and
turning its end into a model reference or a typed error.

A backend describes its service in a :class:`~ftpipe.trainers.hosted_job.HostedService`
(how to create a job, how to find one it may have created already, its job states) and
calls :func:`train_hosted`. The job record, the service description, listing and
cancelling jobs live in :mod:`ftpipe.trainers.hosted_job`; this module is the flow.

Exactly one job per step key: the record (``state_dir/job.json``) is written right after a
job is created; a run that finds a record re-attaches. Because the client's retries of a
POST carry no idempotency key, jobs are created with client retries off: after a create
that failed (a 500 after the service stored the job, a dropped connection), the backend
looks for the job before it tries again. A job that ended failed or cancelled is not
re-attached: the next run submits a new one.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ftpipe.contracts import ModelRef, StepContext, StepResult
from ftpipe.errors import RemoteError, StepError
from ftpipe.remote.openai_errors import (
    is_not_found,
    is_retriable,
    retry_after,
    translate,
)
from ftpipe.remote.retry import RetryPolicy, call_with_retries
from ftpipe.trainers.hosted_job import (  # re-exported: the backends build on these
    CANCELLED,
    FAILED,
    RECORD,
    SUCCEEDED,
    UNSUCCESSFUL,
    HostedService,
    JobRecord,
    cancel_job,
    list_jobs,
    read_record,
    reusable,
)
from ftpipe.trainers.openai_data import ServiceData, build_service_data

__all__ = [
    "CANCELLED",
    "FAILED",
    "RECORD",
    "SUCCEEDED",
    "UNSUCCESSFUL",
    "HostedService",
    "JobRecord",
    "cancel_job",
    "list_jobs",
    "read_record",
    "reusable",
    "train_hosted",
]

MAX_CREATE_ATTEMPTS = 6
MAX_POLL_FAILURES = 8
BACKOFF = 1.5


# --------------------------------------------------------------------------- the flow


def train_hosted(
    ctx: StepContext, service: HostedService, *, method: str, context_length: int | None, poll: Any
) -> StepResult:
    """Check and convert the data, upload it, submit (or re-attach to) the job, follow it
    to its end. ``method``: "sft" | "dpo"; ``poll``: the trainer's Poll block."""
    base = ctx.pipeline.model.base
    record = JobRecord.load(ctx.state_dir, service.provider)
    record.address = service.address
    record.identity = record.identity or dict(service.identity)
    if ctx.run_id not in record.runs:
        record.runs.append(ctx.run_id)
    record.save()

    data = build_service_data(
        Path(ctx.inputs["prepare"]),
        ctx.state_dir / "upload",
        method=method,
        model=base,
        context_length=context_length,
        service=service.label,
    )
    for warning in data.warnings:
        ctx.log(f"warning: {warning}")
    ctx.log(
        f"{service.label} data: {data.train.examples} training examples (~{data.train.tokens:,} tokens an epoch)"
        + (f", {data.validation.examples} validation examples" if data.validation else "")
    )

    job = reattach(ctx, service, record)
    if job is None:
        file_ids = upload_files(ctx, service, record, data, poll=poll)
        job = submit(ctx, service, record, file_ids, poll=poll)
    job, history = follow(ctx, service, job, poll=poll)
    return finish(ctx, service, record, job, history, data)


def reattach(ctx: StepContext, service: HostedService, record: JobRecord) -> Any | None:
    """The job an earlier run of this step submitted, if it is still worth following."""
    if record.job_id:
        job_id = record.job_id
        with service.errors(f"fetching fine-tuning job {job_id}", job_id):
            job = service.checked(_call(lambda: service.client.fine_tuning.jobs.retrieve(job_id), not_found=True))
        if job is None:
            ctx.log(f"the recorded job {job_id} no longer exists on {service.label}; looking for another")
            record.retire(job_id, "missing")
        elif reusable(job, record):
            ctx.log(
                f"re-attached to {service.label} fine-tuning job {job_id} ({job.status}), submitted by an "
                "earlier run of this step"
            )
            return job
        else:
            ctx.log(f"the earlier job {job_id} ended {job.status}: submitting a new job")
            record.retire(job_id, str(job.status))
    with service.errors("looking for a job this step submitted before"):
        job = service.checked(service.find(record))
    if job is not None:
        ctx.log(f"re-attached to {service.label} fine-tuning job {job.id} ({job.status}), found on the service")
        record.job_id = job.id
        record.save()
    return job


def upload_files(
    ctx: StepContext, service: HostedService, record: JobRecord, data: ServiceData, *, poll: Any
) -> dict[str, str]:
    """File ids by split: reused from the record when the same bytes were uploaded before."""
    files = service.client.files
    out: dict[str, str] = {}
    for f in data.files():
        known = record.files.get(f.split)
        obj = None
        if known and known.get("sha256") == f.sha256:
            with service.errors(f"checking the uploaded {f.split} file {known['id']}"):
                obj = _call(partial(files.retrieve, known["id"]), not_found=True)
            if obj is not None and getattr(obj, "status", None) not in ("error", "deleted", "deleting"):
                ctx.log(f"reusing the {f.split} file {obj.id} uploaded by an earlier run")
        if obj is None or getattr(obj, "status", None) in ("error", "deleted", "deleting"):
            name = f"{ctx.pipeline.name}-{f.split}.jsonl"
            with service.errors(f"uploading the {f.split} file ({f.path.stat().st_size:,} bytes)"):
                obj = files.create(file=(name, f.path.read_bytes(), "application/jsonl"), purpose="fine-tune")
            record.files[f.split] = {"id": obj.id, "sha256": f.sha256, "bytes": f.path.stat().st_size}
            record.save()
            ctx.log(f"uploaded {f.split} file {obj.id} ({f.examples} examples)")
        if getattr(obj, "status", None) != "processed":
            obj = _wait_for_file(ctx, service, obj.id, poll=poll)
        out[f.split] = obj.id
    return out


FILE_POLL_FIRST_S = 0.2  # services process a small file in well under a second: ask soon, then back off


def _wait_for_file(ctx: StepContext, service: HostedService, file_id: str, *, poll: Any) -> Any:
    """Poll the file until it is processed: the first look after 0.2 s, then backing off
    (x2) up to ``poll.interval``, giving up after ``poll.timeout_minutes``."""
    ctx.log(f"waiting for {service.label} to process file {file_id}")
    deadline = time.monotonic() + poll.timeout_minutes * 60
    interval = min(FILE_POLL_FIRST_S, poll.interval)
    while True:
        with service.errors(f"waiting for file {file_id} to be processed"):
            obj = service.client.files.retrieve(file_id)
        if obj.status in ("processed", "error", "deleted", "deleting"):
            break
        if time.monotonic() >= deadline:
            raise RemoteError(
                service.label,
                f"file {file_id} was not processed within {poll.timeout_minutes:g} minutes (status {obj.status})",
                hint="run again later: the file is reused",
            )
        time.sleep(interval)
        interval = min(interval * 2, poll.interval)
    if obj.status != "processed":
        details = getattr(obj, "status_details", None) or "no details given"
        raise RemoteError(
            service.label,
            f"file {file_id} could not be processed ({obj.status}): {details}",
            hint="the service rejected the file; its message says why",
        )
    return obj


def submit(ctx: StepContext, service: HostedService, record: JobRecord, file_ids: dict[str, str], *, poll: Any) -> Any:
    """Create the job once: after a failed create, look for it before trying again."""
    once = service.client.with_options(max_retries=0)
    for attempt in range(1, MAX_CREATE_ATTEMPTS + 1):
        try:
            job = service.checked(service.create(once, file_ids))
            break
        except Exception as exc:
            if not _is_openai_error(exc) or not is_retriable(exc):
                if _is_openai_error(exc):
                    raise translate(
                        exc,
                        "creating the fine-tuning job",
                        provider=service.provider,
                        hints=service.hints,
                        where=service.address,
                    ) from None
                raise
            found = _find_after_failed_create(service, record, exc, poll)
            if found is not None:
                ctx.log(
                    f"creating the job failed ({_describe(exc)}), but {service.label} had stored it: "
                    f"re-attached to {found.id}"
                )
                job = service.checked(found)
                break
            if attempt == MAX_CREATE_ATTEMPTS:
                raise translate(
                    exc,
                    f"creating the fine-tuning job ({attempt} attempts)",
                    provider=service.provider,
                    hints=service.hints,
                    where=service.address,
                ) from None
            wait = retry_after(exc)
            if wait is None:
                wait = min(poll.interval * BACKOFF ** (attempt - 1), poll.max_interval)
            ctx.log(f"creating the job failed ({_describe(exc)}); no job was stored; trying again in {wait:.2f}s")
            time.sleep(wait)
    record.job_id = job.id
    record.save()
    ctx.log(f"submitted {service.label} fine-tuning job {job.id} ({job.status}) on {ctx.pipeline.model.base}")
    return job


@dataclass
class _History:
    events: int = 0
    losses: list[dict] = field(default_factory=list)  # from metrics events, oldest first


def follow(ctx: StepContext, service: HostedService, job: Any, *, poll: Any) -> tuple[Any, _History]:
    """Poll ``job`` until it ends, logging its new events; Ctrl-C leaves it running."""
    job_id = job.id
    history = _History()
    seen: set[str] = set()
    interval = poll.interval
    deadline = time.monotonic() + poll.timeout_minutes * 60
    last_status = None
    first = True
    try:
        while True:
            if not first:
                time.sleep(interval)
            first = False
            try:
                job = service.checked(
                    call_with_retries(
                        lambda: service.client.fine_tuning.jobs.retrieve(job_id),
                        what=f"polling the job {job_id} (the job is unaffected)",
                        log=ctx.log,
                        attempts=MAX_POLL_FAILURES,
                        is_transient=_transient,
                        policy=RetryPolicy(base_delay=interval, max_delay=poll.max_interval, backoff=BACKOFF),
                    )
                )
            except Exception as exc:
                if _is_openai_error(exc):
                    raise translate(
                        exc,
                        f"polling fine-tuning job {job_id}",
                        provider=service.provider,
                        hints=service.hints,
                        job_id=job_id,
                        where=service.address,
                    ) from None
                raise
            status = service.status(job)
            changed = status != last_status
            if changed:
                known = "" if isinstance(status, service.statuses) else " (a state ftpipe does not know; still polling)"
                ctx.log(f"job {job_id}: {job.status}{known}")
                ctx.progress(0, None, f"{service.label} job {job.status}")
                last_status = status
            new = _new_events(ctx, service, job_id, seen, history)
            if status in service.terminal:
                return job, history
            if time.monotonic() > deadline:
                raise StepError(
                    f"{service.label} fine-tuning job {job_id} is still {job.status} after "
                    f"{poll.timeout_minutes:g} minutes (trainer.poll.timeout_minutes)",
                    hint=f"the job keeps running: `ftpipe run` again re-attaches to it; "
                    f"`ftpipe cancel {ctx.run_id}` cancels it",
                )
            interval = poll.interval if (changed or new) else min(interval * BACKOFF, poll.max_interval)
    except KeyboardInterrupt:
        msg = (
            f"interrupted: {service.label} fine-tuning job {job_id} keeps running. `ftpipe run` again "
            f"re-attaches to it; `ftpipe cancel {ctx.run_id}` cancels it"
        )
        ctx.log(msg)
        print(msg, file=sys.stderr, flush=True)
        raise


def _new_events(ctx: StepContext, service: HostedService, job_id: str, seen: set[str], history: _History) -> int:
    """Log the events not seen yet, oldest first. Events are a nicety: errors are logged."""
    fresh: list[Any] = []
    try:
        for event in service.client.fine_tuning.jobs.list_events(job_id, limit=100):
            if event.id in seen:
                break  # newest first: the rest were seen
            fresh.append(event)
    except Exception as exc:
        if not _is_openai_error(exc):
            raise
        ctx.log(f"could not read the job's events ({_describe(exc)})")
        return 0
    for event in reversed(fresh):
        seen.add(event.id)
        level = getattr(event, "level", "info")
        ctx.log(f"[{service.provider} {level}] {event.message}")
        data = getattr(event, "data", None)
        if getattr(event, "type", None) == "metrics" and isinstance(data, dict) and "step" in data:
            history.losses.append(
                {k: data[k] for k in ("step", "train_loss", "valid_loss", "train_mean_token_accuracy") if k in data}
            )
            total = data.get("total_steps")
            loss = data.get("train_loss")
            ctx.progress(
                int(data["step"]),
                int(total) if total else None,
                f"train_loss {loss:.4f}" if isinstance(loss, (int, float)) else "training",
            )
    history.events += len(fresh)
    return len(fresh)


# --------------------------------------------------------------------------- the end


def finish(
    ctx: StepContext, service: HostedService, record: JobRecord, job: Any, history: _History, data: ServiceData
) -> StepResult:
    status = service.status(job)
    if status == CANCELLED:
        raise StepError(
            f"{service.label} fine-tuning job {job.id} was cancelled", hint="`ftpipe run` again submits a new job"
        )
    if status == FAILED:
        error = _as_dict(getattr(job, "error", None))
        code, message = error.get("code"), error.get("message") or "no message given"
        param = error.get("param")
        raise RemoteError(
            service.label,
            f"fine-tuning job failed: {message}" + (f" (parameter {param})" if param else ""),
            code=code,
            job_id=job.id,
            hint="fix what the service says and run again: a new job is submitted",
        )
    model_id = getattr(job, "fine_tuned_model", None)
    if not isinstance(model_id, str) or not model_id:
        raise RemoteError(service.label, f"job {job.id} succeeded but names no fine_tuned_model", job_id=job.id)
    checkpoints = _checkpoints(ctx, service, job.id)
    metrics = _metrics(job, checkpoints, history, data)
    for c in checkpoints:
        loss = c["metrics"].get("train_loss")
        ctx.progress(
            c["step"],
            metrics.get("steps"),
            f"checkpoint step {c['step']}" + (f": train_loss {loss:.4f}" if isinstance(loss, (int, float)) else ""),
        )
    ModelRef(
        kind="hosted", base=ctx.pipeline.model.base, provider=service.provider, model_id=model_id, job_id=job.id
    ).write(ctx.out_dir)
    (ctx.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    (ctx.out_dir / "loss.json").write_text(json.dumps(history.losses, indent=2) + "\n")
    (ctx.out_dir / "job.json").write_text(json.dumps(_job_summary(job), indent=2, default=str) + "\n")
    record.fine_tuned_model = model_id
    record.save()
    loss = metrics.get("train_loss")
    summary = (
        f"{model_id} (job {job.id}"
        + (f", {metrics['trained_tokens']:,} tokens" if metrics.get("trained_tokens") else "")
        + (f", train loss {loss:.4g}" if isinstance(loss, float) else "")
        + ")"
    )
    ctx.log(f"succeeded: {summary}")
    return StepResult(metrics=metrics, summary=summary)


def _checkpoints(ctx: StepContext, service: HostedService, job_id: str) -> list[dict]:
    try:
        items = list(service.client.fine_tuning.jobs.checkpoints.list(job_id, limit=100))
    except Exception as exc:
        if not _is_openai_error(exc):
            raise
        ctx.log(f"could not list the job's checkpoints ({_describe(exc)})")
        return []
    out = []
    for c in items:
        m = _as_dict(getattr(c, "metrics", None))
        out.append(
            {
                "step": getattr(c, "step_number", None),
                "model": getattr(c, "fine_tuned_model_checkpoint", None),
                "metrics": {k: v for k, v in m.items() if isinstance(v, (int, float))},
            }
        )
    return sorted((c for c in out if isinstance(c["step"], int)), key=lambda c: c["step"])


def _metrics(job: Any, checkpoints: list[dict], history: _History, data: ServiceData) -> dict[str, Any]:
    out: dict[str, Any] = {
        "job_id": job.id,
        "fine_tuned_model": job.fine_tuned_model,
        "train_examples": data.train.examples,
        "estimated_tokens_per_epoch": data.train.tokens,
    }
    if data.validation:
        out["validation_examples"] = data.validation.examples
    trained = getattr(job, "trained_tokens", None)
    if isinstance(trained, int):
        out["trained_tokens"] = trained
    hp = _as_dict(getattr(job, "hyperparameters", None))
    for key in ("n_epochs", "batch_size", "learning_rate_multiplier"):
        value = hp.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value != -1:
            out[key] = value
    created, finished = getattr(job, "created_at", None), getattr(job, "finished_at", None)
    if isinstance(created, int) and isinstance(finished, int):
        out["service_seconds"] = finished - created
    final = checkpoints[-1]["metrics"] if checkpoints else (history.losses[-1] if history.losses else {})
    for key in (
        "train_loss",
        "train_mean_token_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
        "full_valid_loss",
        "full_valid_mean_token_accuracy",
    ):
        if isinstance(final.get(key), (int, float)):
            out[key] = float(final[key])
    steps = max([c["step"] for c in checkpoints] + [int(x["step"]) for x in history.losses], default=None)
    if steps:
        out["steps"] = steps
    if checkpoints:
        out["checkpoints"] = [
            {
                "step": c["step"],
                "model": c["model"],
                **{k: c["metrics"][k] for k in ("train_loss", "valid_loss") if k in c["metrics"]},
            }
            for c in checkpoints
        ]
    return out


def _job_summary(job: Any) -> dict:
    keys = (
        "id",
        "status",
        "model",
        "fine_tuned_model",
        "training_file",
        "validation_file",
        "hyperparameters",
        "trained_tokens",
        "seed",
        "created_at",
        "finished_at",
        "result_files",
        "metadata",
        "suffix",
    )
    dump = job.model_dump() if hasattr(job, "model_dump") else dict(job)
    return {k: dump.get(k) for k in keys if dump.get(k) is not None}


# --------------------------------------------------------------------------- helpers


def _call(fn: Callable[[], Any], *, not_found: bool = False) -> Any:
    """``fn()``; with ``not_found``, a 404 gives None instead of an error."""
    try:
        return fn()
    except Exception as exc:
        if not_found and _is_openai_error(exc) and is_not_found(exc):
            return None
        raise


def _transient(exc: BaseException) -> bool:
    """The openai client's own rule for what is worth trying again."""
    return _is_openai_error(exc) and is_retriable(exc)


def _find_after_failed_create(
    service: HostedService, record: JobRecord, create_error: BaseException, poll: Any
) -> Any | None:
    """Look for the job after a create that failed. If the lookup keeps failing too, stop:
    creating again without knowing could make a second job."""
    wait = poll.interval
    for attempt in range(1, MAX_CREATE_ATTEMPTS + 1):
        try:
            return service.find(record)
        except Exception as exc:  # noqa: BLE001 - only the client's retriable errors are retried
            if not (_is_openai_error(exc) and is_retriable(exc)) or attempt == MAX_CREATE_ATTEMPTS:
                error = translate(
                    create_error,
                    "creating the fine-tuning job",
                    provider=service.provider,
                    hints=service.hints,
                    where=service.address,
                )
                error.hint = (
                    "the service may have stored the job, and looking for it failed too: run again "
                    "later (ftpipe looks for the job before it submits another)"
                )
                raise error from None
            time.sleep(retry_after(exc) or wait)
            wait = min(wait * BACKOFF, poll.max_interval)
    return None


def _is_openai_error(exc: BaseException) -> bool:
    import openai

    return isinstance(exc, openai.OpenAIError)


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__


def _as_dict(value: Any) -> dict:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return dict(getattr(value, "__dict__", {}))
