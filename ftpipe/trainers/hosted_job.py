"""A hosted fine-tuning job as the OpenAI and Azure OpenAI backends keep it: the record in
the step's state folder (what survives a crash), the description of a service
(:class:`HostedService`), and the operations on jobs that need no flow: listing them,
deciding whether one may be re-attached, cancelling one (``ftpipe cancel``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ftpipe.remote.openai_errors import openai_errors, service_label
from ftpipe.store import write_json

RECORD = "job.json"
MAX_LISTED_JOBS = 200
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
UNSUCCESSFUL = frozenset({FAILED, CANCELLED})


# --------------------------------------------------------------------------- the record


@dataclass
class JobRecord:
    """What survives a crash: uploaded files, the job id, jobs that ended unsuccessfully."""

    path: Path
    provider: str
    address: str | None = None  # base_url / endpoint the job lives at (not a secret)
    files: dict[str, dict] = field(default_factory=dict)  # split -> {id, sha256, bytes}
    job_id: str | None = None
    retired: list[dict] = field(default_factory=list)  # [{id, status}] failed or cancelled jobs
    runs: list[str] = field(default_factory=list)
    identity: dict[str, str] = field(default_factory=dict)
    fine_tuned_model: str | None = None

    @classmethod
    def load(cls, state_dir: Path, provider: str) -> JobRecord:
        path = state_dir / RECORD
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return cls(path, provider)
        fields = {
            k: data[k]
            for k in ("address", "files", "job_id", "retired", "runs", "identity", "fine_tuned_model")
            if k in data
        }
        return cls(path, data.get("provider", provider), **fields)

    def save(self) -> None:
        write_json(
            self.path,
            {
                "provider": self.provider,
                "address": self.address,
                "files": self.files,
                "job_id": self.job_id,
                "retired": self.retired,
                "runs": self.runs,
                "identity": self.identity,
                "fine_tuned_model": self.fine_tuned_model,
            },
        )

    def retire(self, job_id: str, status: str) -> None:
        if job_id not in self.retired_ids():
            self.retired.append({"id": job_id, "status": status})
        if self.job_id == job_id:
            self.job_id = None
        self.save()

    def retired_ids(self) -> set[str]:
        return {r["id"] for r in self.retired}


def read_record(state_dir: Path) -> dict | None:
    """The job record of a step's state folder, as data (for ``ftpipe cancel``)."""
    try:
        return json.loads((state_dir / RECORD).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def cancel_job(
    state_dir: Path,
    make_client: Callable[[str | None], Any],
    *,
    provider: str,
    terminal: frozenset,
    hints: Mapping[int, str] | None = None,
) -> dict:
    """Cancel the job recorded in a train step's state folder (``ftpipe cancel``).
    ``make_client(address)`` builds the client for the address the job lives at.
    Returns ``{job_id, status, cancelled, what}``."""
    from ftpipe.errors import NotFound, UsageError

    record = read_record(state_dir)
    if not record or not record.get("job_id"):
        raise NotFound("its train step has no hosted fine-tuning job to cancel", hint="a local run stops with Ctrl-C")
    if record.get("provider") != provider:
        raise UsageError(
            f"the pipeline now trains on {service_label(provider)}, but the job is on "
            f"{service_label(record.get('provider') or '?')}",
            hint="give the pipeline file that ran it with -p",
        )
    job_id = record["job_id"]
    label = service_label(provider)
    client = make_client(record.get("address"))
    what = f"{label} fine-tuning job {job_id}"
    try:
        with openai_errors(f"fetching fine-tuning job {job_id}", provider=provider, job_id=job_id, hints=hints):
            current = client.fine_tuning.jobs.retrieve(job_id)
        if current.status in {str(getattr(s, "value", s)) for s in terminal}:
            return {"job_id": job_id, "status": current.status, "cancelled": False, "what": what}
        with openai_errors(f"cancelling fine-tuning job {job_id}", provider=provider, job_id=job_id, hints=hints):
            after = client.fine_tuning.jobs.cancel(job_id)
        return {"job_id": job_id, "status": after.status, "cancelled": True, "what": what}
    finally:
        client.close()


# --------------------------------------------------------------------------- the service


@dataclass(frozen=True)
class HostedService:
    """One provider's way of doing things, for :func:`train_hosted`."""

    provider: str  # "openai" | "azure-openai": ModelRef.provider and error prefix
    client: Any  # the official client (retries on)
    address: str  # where the service is, for messages
    statuses: type[Enum]  # the job states, a str Enum
    terminal: frozenset  # the states a job ends in
    # (client without retries, uploaded file ids by split) -> the created job
    create: Callable[[Any, dict[str, str]], Any]
    # (record) -> a job this step created before (not failed/cancelled), or None
    find: Callable[[JobRecord], Any | None]
    identity: dict[str, str] = field(default_factory=dict)  # what the job is tagged with, if anything
    # raises RemoteError when a job object lacks what ftpipe relies on (for a non-strict client)
    check: Callable[[Any], None] | None = None
    hints: Mapping[int, str] | None = None  # the backend's hints per HTTP status, for its errors

    @property
    def label(self) -> str:
        return service_label(self.provider)

    def status(self, job: Any) -> Any:
        raw = getattr(job, "status", None)
        try:
            return self.statuses(raw)
        except ValueError:
            return raw  # a state this version does not know: keep polling, say so in the log

    def checked(self, job: Any) -> Any:
        if self.check is not None and job is not None:
            self.check(job)
        return job

    def errors(self, what: str, job_id: str | None = None):
        return openai_errors(what, provider=self.provider, job_id=job_id, where=self.address, hints=self.hints)


def reusable(job: Any, record: JobRecord) -> bool:
    """A job worth re-attaching to: it did not end failed or cancelled, and is not retired."""
    return getattr(job, "status", None) not in UNSUCCESSFUL and job.id not in record.retired_ids()


def list_jobs(client: Any, *, metadata: dict[str, str] | None = None, limit: int = MAX_LISTED_JOBS) -> list[Any]:
    """Jobs, newest first, at most ``limit`` of them (pages followed by the client)."""
    out = []
    page = (
        client.fine_tuning.jobs.list(limit=min(limit, 100), metadata=metadata)
        if metadata
        else client.fine_tuning.jobs.list(limit=min(limit, 100))
    )
    for job in page:
        out.append(job)
        if len(out) >= limit:
            break
    return out
