"""``ftpipe cancel RUN``: cancel the hosted fine-tuning job of a run's train step.

The trainer plugin does the cancelling (``caps.can_cancel`` and a ``cancel(state_dir,
trainer) -> dict`` method): it reads its job from the train step's state folder in the run
store. The credentials come from the pipeline file recorded in ``run.json`` (or ``-p``),
with its ``${env:...}`` references resolved as ``ftpipe run`` resolves them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ftpipe.cli import emit_json
from ftpipe.cli.commands import _store_for, pipeline_option, store_option
from ftpipe.errors import NotFound, UsageError


def cancel_run(rs: Any, run_ref: str, *, pipeline_path: Path | None = None) -> dict:
    """Cancel the job of ``run_ref``'s train step; returns what happened."""
    from ftpipe import registry
    from ftpipe.engine import prepare

    run_id = rs.resolve_run(run_ref)
    record = rs.read_run(run_id)
    train = (record.get("steps") or {}).get("train")
    if not train or not train.get("key"):
        raise NotFound(f"run {run_id} has no train step")
    path = pipeline_path or Path(record.get("pipeline_path", ""))
    if not path.is_file():
        raise UsageError(
            f"the pipeline file of run {run_id} is gone ({path})",
            hint="give it with -p PIPELINE to read the credentials from it",
        )
    trainer = prepare(path).resolved.trainer
    plugin = registry.get("trainer", trainer.backend)
    if not plugin.caps.can_cancel:
        cancellable = sorted(n for n, p in registry.plugins()["trainer"].items() if p.caps.can_cancel)
        raise NotFound(
            f"run {run_id}: its train step has no hosted fine-tuning job to cancel "
            f"(the {trainer.backend} backend runs none)",
            hint=f"cancel works for {', '.join(cancellable) or 'no installed backend'}; a local run stops with Ctrl-C",
        )
    try:
        done = plugin.load().cancel(rs.root / "state" / train["key"], trainer)
    except (NotFound, UsageError) as exc:
        exc.message = f"run {run_id}: {exc.message}"
        raise
    what = done["what"]
    out = {
        "run_id": run_id,
        "provider": plugin.caps.provider or trainer.backend,
        "job_id": done["job_id"],
        "status": done["status"],
        "cancelled": bool(done["cancelled"]),
    }
    out["message"] = (
        f"cancelled {what} of run {run_id} (now {done['status']})"
        if out["cancelled"]
        else f"{what} of run {run_id} has already ended: {done['status']}"
    )
    return out


@click.command()
@click.argument("run_ref", metavar="RUN", default="latest")
@store_option
@pipeline_option
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def cancel(run_ref: str, store: str | None, pipeline_file: str | None, as_json: bool) -> None:
    """Cancel the hosted fine-tuning job of a run (default: the latest), for backends
    that can (`ftpipe backends list`).

    A run still polling the job then fails its train step as cancelled; `ftpipe run`
    again submits a new job."""
    rs = _store_for(pipeline_file, store)
    out = cancel_run(rs, run_ref, pipeline_path=Path(pipeline_file) if pipeline_file else None)
    if as_json:
        emit_json(out)
    else:
        click.echo(out["message"])
