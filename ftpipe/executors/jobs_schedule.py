"""``ftpipe schedule hf-jobs FILE``: the pipeline's ``schedule:`` as a Hugging Face scheduled Job.

The scheduled Job runs what an ``hf-jobs`` run runs (the entry, with the pinned ftpipe),
reading the inputs uploaded now, at a pinned revision; each run pushes its record to the
results repo, and seeds its store from there, so an unchanged pipeline is all cache hits.
Labels identify the pipeline's scheduled Job: running the command again updates it (a
new cron: its schedule; new inputs or settings: a replacement) and never leaves two.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ftpipe.contracts import RunRequest
from ftpipe.executors import hub_run
from ftpipe.executors.jobs import LABEL_PIPELINE, JobBackend
from ftpipe.executors.remote import RemoteRun

LABEL_SCHEDULED = "ftpipe-scheduled"
LABEL_SPEC = "ftpipe-spec"


@dataclass(frozen=True)
class ScheduledJob:
    action: str  # created | updated | replaced | unchanged
    scheduled_job_id: str
    namespace: str
    pipeline: str
    cron_utc: str
    inputs: str
    secrets: list[str]  # names only: the values are stored as the Job's secrets
    flavor: str

    def as_dict(self) -> dict:
        return asdict(self)


def schedule_job(path: Path, *, quiet: bool = False) -> ScheduledJob:
    from ftpipe.schedule import ScheduleError, _scheduled, to_zone

    run = RemoteRun(RunRequest(pipeline_path=path, quiet=quiet), JobBackend)
    ctx, backend = run.ctx, run.backend
    assert isinstance(backend, JobBackend)
    sched = _scheduled(ctx.prepared.loaded, path)
    crons = to_zone(sched.cron, sched.timezone, "UTC", where="Hugging Face Jobs")
    if len(crons) != 1:
        raise ScheduleError(
            f"schedule.cron {sched.cron!r} in {sched.timezone} needs {len(crons)} cron expressions in "
            "UTC; a scheduled Job has one",
            hint="write schedule.cron in UTC (timezone: UTC)",
        )
    cron = crons[0]
    api, call = backend.api, ctx.call
    namespace = hub_run.namespace_of(ctx, api, backend.cfg.namespace)
    slug = hub_run.slug(ctx.pipeline)[:100]
    spec, revision = backend.job_spec(f"scheduled-{slug}"[:100], namespace, scheduled=True)
    fingerprint = _fingerprint(spec, ctx.plan_hash)
    spec["labels"] = {**spec["labels"], LABEL_SCHEDULED: "true", LABEL_SPEC: fingerprint}

    def ours() -> list[Any]:
        found = api.list_scheduled_jobs(labels={LABEL_PIPELINE: slug, LABEL_SCHEDULED: "true"}, namespace=namespace)
        return sorted(found, key=lambda j: str(j.created_at))

    existing = call(f"listing the scheduled Jobs of {ctx.pipeline}", ours)
    same = [j for j in existing if (j.job_spec.labels or {}).get(LABEL_SPEC) == fingerprint]
    if same:
        keep = same[0]
        action = "unchanged"
        if keep.schedule != cron:
            call(
                f"updating the schedule of scheduled Job {keep.id}",
                lambda: api.update_scheduled_job_schedule(scheduled_job_id=keep.id, schedule=cron, namespace=namespace),
            )
            action = "updated"
    else:

        def create_once() -> Any:
            # creating is not idempotent: a retry first looks for the one an earlier attempt made
            made = [j for j in ours() if (j.job_spec.labels or {}).get(LABEL_SPEC) == fingerprint]
            return made[0] if made else api.create_scheduled_job(**spec, schedule=cron, namespace=namespace)

        keep = call(f"creating the scheduled Job of {ctx.pipeline}", create_once)
        action = "replaced" if existing else "created"
    for old in existing:
        if old.id != keep.id:
            call(
                f"deleting the superseded scheduled Job {old.id}",
                lambda old=old: api.delete_scheduled_job(scheduled_job_id=old.id, namespace=namespace),
            )
    return ScheduledJob(
        action=action,
        scheduled_job_id=keep.id,
        namespace=namespace,
        pipeline=ctx.pipeline,
        cron_utc=cron,
        inputs=f"{spec['env']['FTPIPE_INPUTS_REPO']}@{revision}",
        secrets=sorted(spec["secrets"]),
        flavor=backend.cfg.flavor,
    )


def _fingerprint(spec: dict, plan_hash: str) -> str:
    """What the scheduled Job runs: the plan (its steps' keys) and the Job's settings, secret
    values left out (their names are in). Not the inputs revision: a new schedule alone
    rewrites the pipeline file but runs the same plan."""
    env = {k: v for k, v in spec["env"].items() if k != "FTPIPE_INPUTS_REVISION"}
    public = {**spec, "env": env, "secrets": sorted(spec["secrets"]), "plan": plan_hash}
    return hashlib.sha256(json.dumps(public, sort_keys=True, default=str).encode()).hexdigest()[:16]
