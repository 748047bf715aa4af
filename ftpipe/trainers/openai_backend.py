"""The ``openai`` trainer backend: the OpenAI fine-tuning API through the official client.

The job is tagged with ``metadata`` naming the step's cache key and step id, so that a run
after a crash finds the job an earlier run submitted (``jobs.list(metadata=...)``) even when
the state record did not get written; the first run id is recorded in it as well.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from enum import Enum
from typing import Any

from ftpipe.contracts import StepContext, StepResult
from ftpipe.errors import MissingDependency
from ftpipe.spec.models import OpenAITrainer
from ftpipe.trainers.hosted import (
    HostedService,
    JobRecord,
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


def make_client(trainer: OpenAITrainer, *, base_url: str | None = None) -> Any:
    """The official client with the trainer block's credentials (``base_url`` overrides)."""
    try:
        import openai
    except ImportError:
        raise MissingDependency("openai", "openai", "the openai trainer backend") from None
    return openai.OpenAI(api_key=trainer.api_key, base_url=base_url or resolve_base_url(trainer),
                         organization=trainer.organization, max_retries=3)


def resolve_base_url(trainer: OpenAITrainer) -> str:
    return trainer.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL


def identity(ctx: StepContext) -> dict[str, str]:
    """The metadata that names this step's job (the run id only informs: it changes per run)."""
    key = ctx.cache_key or ctx.state_dir.name
    return {"ftpipe_key": key[:512], "ftpipe_step": ctx.step_id[:512],
            "ftpipe_pipeline": ctx.pipeline.name[:512], "ftpipe_run": ctx.run_id[:512]}


def method_block(trainer: OpenAITrainer) -> dict[str, Any]:
    kind = METHOD_TYPES[trainer.method]
    hp = {k: v for k, v in trainer.hyperparameters.model_dump().items() if v is not None and v != "auto"}
    if kind != "dpo":
        hp.pop("beta", None)
    return {"type": kind, kind: {"hyperparameters": hp}}


def create_request(ctx: StepContext, trainer: OpenAITrainer, file_ids: dict[str, str]) -> dict[str, Any]:
    """The body of POST /fine_tuning/jobs (without the None fields)."""
    body: dict[str, Any] = {"model": ctx.pipeline.model.base, "training_file": file_ids["train"],
                            "validation_file": file_ids.get("validation"), "suffix": trainer.suffix,
                            "seed": trainer.seed, "method": method_block(trainer), "metadata": identity(ctx)}
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
            provider=PROVIDER, client=client, address=resolve_base_url(trainer), statuses=JobStatus,
            terminal=TERMINAL,
            create=lambda once, file_ids: once.fine_tuning.jobs.create(**create_request(ctx, trainer, file_ids)),
            find=job_finder(client, tags), identity=record_tags,
        )
        return train_hosted(ctx, service, method=trainer.method, context_length=trainer.context_length,
                            poll=trainer.poll)

