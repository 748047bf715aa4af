"""The ``openai`` trainer backend: the OpenAI fine-tuning API through the official client.

The job is tagged with ``metadata`` naming the step's cache key and step id, so that a run
after a crash finds the job an earlier run submitted (``jobs.list(metadata=...)``) even when
the state record did not get written; the first run id is recorded in it as well.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

from ftpipe.contracts import StepContext, StepResult
from ftpipe.spec.models import OpenAITrainer
from ftpipe.trainers.hosted import (
    HostedService,
    JobRecord,
    cancel_job,
    list_jobs,
    reusable,
    train_hosted,
)

PROVIDER = "openai"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
METHOD_TYPES = {"sft": "supervised", "dpo": "dpo"}


class JobStatus(str, Enum):
    """OpenAI fine-tuning job states."""

    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


# this backend's hints for the service's error answers (remote/openai_errors.translate)
HINTS: dict[int, str] = {
    401: "the API key was refused: set OPENAI_API_KEY (trainer.api_key) to a valid key for this "
    "base_url and organization",
    403: "the key may not do this: check the project's permissions and that fine-tuning is enabled "
    "for it (and for this model)",
    404: "not found: check model.base names a fine-tunable snapshot (e.g. gpt-4o-mini-2024-07-18) "
    "and that trainer.base_url points at the API (…/v1)",
    429: "rate limited or out of quota: wait and run again (a submitted job is re-attached, not "
    "re-submitted); check the organization's usage limits and billing",
}


def make_client(trainer: OpenAITrainer, *, base_url: str | None = None) -> Any:
    """The official client with the trainer block's credentials (``base_url`` overrides)."""
    from ftpipe.remote.openai_client import openai_client

    return openai_client(
        api_key=trainer.api_key,
        base_url=base_url or resolve_base_url(trainer),
        organization=trainer.organization,
        extra="openai",
        what="the openai trainer backend",
    )


def resolve_base_url(trainer: OpenAITrainer) -> str:
    return trainer.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL


def identity(ctx: StepContext) -> dict[str, str]:
    """The metadata that names this step's job (the run id only informs: it changes per run)."""
    key = ctx.cache_key or ctx.state_dir.name
    return {
        "ftpipe_key": key[:512],
        "ftpipe_step": ctx.step_id[:512],
        "ftpipe_pipeline": ctx.pipeline.name[:512],
        "ftpipe_run": ctx.run_id[:512],
    }


def method_block(trainer: OpenAITrainer) -> dict[str, Any]:
    kind = METHOD_TYPES[trainer.method]
    hp = {k: v for k, v in trainer.hyperparameters.model_dump().items() if v is not None and v != "auto"}
    if kind != "dpo":
        hp.pop("beta", None)
    return {"type": kind, kind: {"hyperparameters": hp}}


def create_request(ctx: StepContext, trainer: OpenAITrainer, file_ids: dict[str, str]) -> dict[str, Any]:
    """The body of POST /fine_tuning/jobs (without the None fields)."""
    body: dict[str, Any] = {
        "model": ctx.pipeline.model.base,
        "training_file": file_ids["train"],
        "validation_file": file_ids.get("validation"),
        "suffix": trainer.suffix,
        "seed": trainer.seed,
        "method": method_block(trainer),
        "metadata": identity(ctx),
    }
    return {k: v for k, v in body.items() if v is not None}


def job_finder(client: Any, tags: dict[str, str]) -> Callable[[JobRecord], Any | None]:
    """Finds the newest job tagged with this step's key and id that did not fail or get
    cancelled (the tags are checked here too, in case a server ignores the filter)."""
    wanted = {"ftpipe_key": tags["ftpipe_key"], "ftpipe_step": tags["ftpipe_step"]}

    def find(record: JobRecord) -> Any | None:
        for job in list_jobs(client, metadata=wanted):
            meta = getattr(job, "metadata", None) or {}
            if all(meta.get(k) == v for k, v in wanted.items()) and reusable(job, record):
                return job
        return None

    return find


class OpenAIBackend:
    """Fine-tunes on the OpenAI API; the result is a hosted model id."""

    name = "openai"
    config_model = OpenAITrainer

    def cancel(self, state_dir: Path, trainer: OpenAITrainer) -> dict:
        """Cancel the job this step's state folder records (``ftpipe cancel``)."""
        return cancel_job(
            state_dir,
            lambda address: make_client(trainer, base_url=address),
            provider=PROVIDER,
            terminal=TERMINAL,
            hints=HINTS,
        )

    def chat_client(self, trainer: OpenAITrainer) -> Any:
        """How evaluation reaches a fine-tune of this backend: its chat completions API."""
        return make_client(trainer)

    def preflight(self, ctx: Any, trainer: OpenAITrainer) -> list[Any]:
        """Read-only checks before anything is uploaded (ftpipe.preflight)."""
        from ftpipe.trainers.hosted_preflight import openai_checks

        return list(openai_checks(ctx, trainer))

    def train(self, ctx: StepContext) -> StepResult:
        trainer: OpenAITrainer = ctx.pipeline.trainer
        client = make_client(trainer)
        tags = identity(ctx)
        record_tags = {k: v for k, v in tags.items() if k != "ftpipe_run"}
        service = HostedService(
            provider=PROVIDER,
            client=client,
            address=resolve_base_url(trainer),
            statuses=JobStatus,
            terminal=TERMINAL,
            create=lambda once, file_ids: once.fine_tuning.jobs.create(**create_request(ctx, trainer, file_ids)),
            find=job_finder(client, tags),
            identity=record_tags,
            hints=HINTS,
        )
        return train_hosted(
            ctx, service, method=trainer.method, context_length=trainer.context_length, poll=trainer.poll
        )
