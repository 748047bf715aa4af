"""``ftpipe cancel RUN``: cancel the hosted fine-tuning job of a run's train step.

The job id comes from the train step's state record in the run store; the credentials from
the pipeline file recorded in ``run.json`` (or ``-p``), with its ``${env:...}`` references
resolved as ``ftpipe run`` resolves them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ftpipe.cli import emit_json, main
from ftpipe.cli.commands import _store_for, pipeline_option, store_option
from ftpipe.errors import NotFound, UsageError

HOSTED = ("openai", "azure-openai")


def cancel_run(rs: Any, run_ref: str, *, pipeline_path: Path | None = None) -> dict:
    """Cancel the job of ``run_ref``'s train step; returns what happened."""
    from ftpipe.engine import prepare
    from ftpipe.remote.openai_errors import openai_errors, service_label
    from ftpipe.trainers.hosted import read_record

    run_id = rs.resolve_run(run_ref)
    record = rs.read_run(run_id)
    train = (record.get("steps") or {}).get("train")
    if not train or not train.get("key"):
        raise NotFound(f"run {run_id} has no train step")
    job = read_record(rs.root / "state" / train["key"])
    if not job or not job.get("job_id"):
        raise NotFound(f"run {run_id}: its train step has no hosted fine-tuning job to cancel",
                       hint="only the openai and azure-openai backends run jobs on a service; a local run "
                            "stops with Ctrl-C")
    provider, job_id = job.get("provider"), job["job_id"]
    path = pipeline_path or Path(record.get("pipeline_path", ""))
    if not path.is_file():
        raise UsageError(f"the pipeline file of run {run_id} is gone ({path})",
                         hint="give it with -p PIPELINE to read the credentials from it")
    trainer = prepare(path).resolved.trainer
    if trainer.backend != provider:
        raise UsageError(f"{path} now trains with {trainer.backend}, but the job of run {run_id} is on {provider}",
                         hint="give the pipeline file that ran it with -p")
    client = _client(trainer, provider, job.get("address"))
    label = service_label(provider)
    with openai_errors(f"fetching fine-tuning job {job_id}", provider=provider, job_id=job_id):
        current = client.fine_tuning.jobs.retrieve(job_id)
    out = {"run_id": run_id, "provider": provider, "job_id": job_id, "status": current.status, "cancelled": False}
    if current.status in ("succeeded", "failed", "cancelled"):
        out["message"] = f"{label} fine-tuning job {job_id} of run {run_id} has already ended: {current.status}"
        return out
    with openai_errors(f"cancelling fine-tuning job {job_id}", provider=provider, job_id=job_id):
        after = client.fine_tuning.jobs.cancel(job_id)
    out.update(status=after.status, cancelled=True,
               message=f"cancelled {label} fine-tuning job {job_id} of run {run_id} (now {after.status})")
    return out


def _client(trainer: Any, provider: str, address: str | None) -> Any:
    if provider == "openai":
        from ftpipe.trainers.openai_backend import make_client

        return make_client(trainer, base_url=address)
    if provider == "azure-openai":
        from ftpipe.trainers.azure_backend import make_client as make_azure_client

        return make_azure_client(trainer, endpoint=address)
    raise UsageError(f"cannot cancel a job on {provider!r} (cancel works for {', '.join(HOSTED)})")


@main.command()
@click.argument("run_ref", metavar="RUN", default="latest")
@store_option
@pipeline_option
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def cancel(run_ref: str, store: str | None, pipeline_file: str | None, as_json: bool) -> None:
    """Cancel the OpenAI / Azure OpenAI fine-tuning job of a run (default: the latest).

    A run still polling the job then fails its train step as cancelled; `ftpipe run`
    again submits a new job."""
    rs = _store_for(pipeline_file, store)
    out = cancel_run(rs, run_ref, pipeline_path=Path(pipeline_file) if pipeline_file else None)
    if as_json:
        emit_json(out)
    else:
        click.echo(out["message"])
