"""The ``azure-openai`` trainer backend: Azure OpenAI fine-tuning (data plane) through the
official ``AzureOpenAI`` client: SFT on GA api-versions, DPO (gpt-4o family) on preview ones.

Azure differs from OpenAI in ways this module absorbs: uploads and job creation answer 201;
files start ``pending`` and must be processed before a job may use them; job states are
``created, pending, running, succeeded, cancelled, failed``; model names have no dots; GA
api-versions accept neither ``method`` nor ``metadata``, so a job cannot be tagged. Its
identity is the training file this step uploaded (recorded in the step's state folder) with
the suffix and base model: a job listed with all three is this step's job.

The client is not run with strict response validation (its job type lists only OpenAI's
states); :func:`check_job` checks the fields ftpipe relies on instead.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

from ftpipe.contracts import StepContext, StepResult
from ftpipe.errors import MissingDependency, RemoteError
from ftpipe.spec.models import AzureOpenAITrainer
from ftpipe.trainers.hosted import (
    HostedService,
    JobRecord,
    cancel_job,
    list_jobs,
    reusable,
    train_hosted,
)

PROVIDER = "azure-openai"
COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"


class JobStatus(str, Enum):
    """Azure OpenAI fine-tuning job states."""

    CREATED = "created"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"
    FAILED = "failed"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.CANCELLED, JobStatus.FAILED})


# this backend's hints for the service's error answers (remote/openai_errors.translate)
HINTS: dict[int, str] = {
    401: "the key or token was refused: set AZURE_OPENAI_API_KEY to a key of this resource (Keys and "
    "Endpoint in the portal), or use auth: entra with a signed-in identity",
    403: "the identity may not do this: it needs the 'Cognitive Services OpenAI Contributor' role on "
    "the resource (and the resource's network rules must admit this machine)",
    404: "not found: check trainer.endpoint, trainer.api_version, and that this resource's region can "
    "fine-tune the model (Azure model names have no dots: gpt-35-turbo-0613)",
    429: "rate limited or out of quota: wait and run again (a submitted job is re-attached, not "
    "re-submitted); check the resource's fine-tuning quota",
}


def entra_token_provider(scope: str, what: str) -> Callable[[], str]:
    """A bearer-token callable from azure-identity's DefaultAzureCredential."""
    try:
        from azure.identity import DefaultAzureCredential, get_bearer_token_provider
    except ImportError:
        raise MissingDependency("azure-identity", "azure", what) from None
    return get_bearer_token_provider(DefaultAzureCredential(), scope)


def make_client(trainer: AzureOpenAITrainer, *, endpoint: str | None = None) -> Any:
    """The official AzureOpenAI client for the trainer block (api key or Entra ID)."""
    from ftpipe.remote.openai_client import azure_openai_client

    tokens = entra_token_provider(COGNITIVE_SCOPE, "auth: entra (Azure OpenAI)") if trainer.auth == "entra" else None
    return azure_openai_client(
        endpoint=endpoint or trainer.endpoint,
        api_version=trainer.api_version,
        api_key=trainer.api_key,
        token_provider=tokens,
        what="the azure-openai trainer backend",
    )


def check_job(job: Any) -> None:
    """The fields ftpipe relies on, checked as strict validation would."""
    problems = []
    if not isinstance(getattr(job, "id", None), str) or not job.id:
        problems.append("no job id")
    status = getattr(job, "status", None)
    if not isinstance(status, str):
        problems.append(f"status {status!r} is not a string")
    if not isinstance(getattr(job, "training_file", None), str):
        problems.append("no training_file")
    if status == JobStatus.SUCCEEDED and not isinstance(getattr(job, "fine_tuned_model", None), str):
        problems.append("a succeeded job without fine_tuned_model")
    if problems:
        raise RemoteError(
            "Azure OpenAI", f"unexpected fine-tuning job object: {'; '.join(problems)}", job_id=getattr(job, "id", None)
        )


def create_request(ctx: StepContext, trainer: AzureOpenAITrainer, file_ids: dict[str, str]) -> dict[str, Any]:
    """The body of POST /openai/fine_tuning/jobs. SFT: the GA shape (no method, no metadata,
    top-level hyperparameters). DPO: ``method: {type: dpo, dpo: {hyperparameters}}``, which
    Azure accepts on preview api-versions (validation requires one)."""
    hp = {k: v for k, v in trainer.hyperparameters.model_dump().items() if v is not None and v != "auto"}
    body: dict[str, Any] = {
        "model": ctx.pipeline.model.base,
        "training_file": file_ids["train"],
        "validation_file": file_ids.get("validation"),
        "suffix": trainer.suffix,
        "seed": trainer.seed,
    }
    if trainer.method == "dpo":
        body["method"] = {"type": "dpo", "dpo": {"hyperparameters": hp}}
    else:
        body["hyperparameters"] = hp or None
    return {k: v for k, v in body.items() if v is not None}


def job_finder(client: Any, *, model: str, suffix: str | None) -> Callable[[JobRecord], Any | None]:
    """Finds the job that trains on the training file this step uploaded, with this suffix
    and base model (Azure GA jobs carry no metadata)."""

    def find(record: JobRecord) -> Any | None:
        train = (record.files.get("train") or {}).get("id")
        if not train:
            return None  # nothing uploaded yet: no job can exist
        for job in list_jobs(client):
            job_suffix = getattr(job, "suffix", None) or getattr(job, "user_provided_suffix", None)
            if (
                job.training_file == train
                and job.model == model
                and (job_suffix or None) == suffix
                and reusable(job, record)
            ):
                return job
        return None

    return find


class AzureOpenAIBackend:
    """Fine-tunes on Azure OpenAI; the result is a hosted model id to deploy."""

    name = "azure-openai"
    config_model = AzureOpenAITrainer

    def cancel(self, state_dir: Path, trainer: AzureOpenAITrainer) -> dict:
        """Cancel the job this step's state folder records (``ftpipe cancel``)."""
        return cancel_job(
            state_dir,
            lambda address: make_client(trainer, endpoint=address),
            provider=PROVIDER,
            terminal=TERMINAL,
            hints=HINTS,
        )

    def chat_client(self, trainer: AzureOpenAITrainer) -> Any:
        """How evaluation reaches a fine-tune of this backend: its chat completions API (through
        a deployment: see :meth:`serve_for_evaluation`)."""
        return make_client(trainer)

    def chat_hints(self, model: str) -> dict[int, str]:
        """Hints for chat completion errors with a model of this backend."""
        return {
            404: f"Azure serves a model only through a deployment: deploy {model!r} under a deployment "
            "of that name, or name the deployment in a {name, model} baseline"
        }

    def serve_for_evaluation(self, ctx: StepContext, model_id: str) -> Any:
        """A context manager yielding the name to call ``model_id`` by: Azure serves a
        fine-tune only through a deployment, so a temporary one is made for evaluation."""
        from ftpipe.evaluation.azure_eval import evaluation_deployment

        return evaluation_deployment(ctx, model_id)

    def preflight(self, ctx: Any, trainer: AzureOpenAITrainer) -> list[Any]:
        """Read-only checks before anything is uploaded (ftpipe.preflight)."""
        from ftpipe.trainers.hosted_preflight import azure_checks

        return list(azure_checks(ctx, trainer))

    def train(self, ctx: StepContext) -> StepResult:
        trainer: AzureOpenAITrainer = ctx.pipeline.trainer
        client = make_client(trainer)
        base = ctx.pipeline.model.base
        service = HostedService(
            provider=PROVIDER,
            client=client,
            address=trainer.endpoint,
            statuses=JobStatus,
            terminal=TERMINAL,
            create=lambda once, file_ids: once.fine_tuning.jobs.create(**create_request(ctx, trainer, file_ids)),
            find=job_finder(client, model=base, suffix=trainer.suffix),
            check=check_job,
            identity={"model": base, "suffix": trainer.suffix or ""},
            hints=HINTS,
        )
        return train_hosted(
            ctx, service, method=trainer.method, context_length=trainer.context_length, poll=trainer.poll
        )
