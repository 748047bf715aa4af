"""ftpipe schedule github / cron / hf-jobs / summary: run a pipeline on its `schedule:`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ftpipe.cli import emit_json


@click.group()
def schedule() -> None:
    """Run a pipeline on its schedule: a GitHub Actions workflow, a crontab line or a Hugging Face scheduled Job."""


@schedule.command("github")
@click.argument("file")
@click.option(
    "-o",
    "--output",
    help="Workflow file to write ('-' prints it). Default: <repo>/.github/workflows/ftpipe-<pipeline>.yml",
)
@click.option(
    "--install",
    "install_spec",
    help="What the workflow pip-installs (default: this repo if it is "
    "ftpipe's source, else ftpipe[extras]==<this version>).",
)
@click.option(
    "--runs-on", default="ubuntu-latest", show_default=True, help="The runner label (a GPU runner for GPU pipelines)."
)
@click.option("--python", "python_version", default="3.11", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def schedule_github(
    file: str, output: str | None, install_spec: str | None, runs_on: str, python_version: str, as_json: bool
) -> None:
    """Write a GitHub Actions workflow that runs FILE on its schedule (cron in UTC) and on
    demand, one run at a time, with the run store cached between runs."""
    from ftpipe.engine import load_checked
    from ftpipe.schedule import github_workflow, repo_root

    path = Path(file)
    loaded = load_checked(path)
    root = repo_root(path.resolve().parent)
    wf = github_workflow(path, loaded, root=root, install=install_spec, runs_on=runs_on, python=python_version)
    if output == "-":
        click.echo(wf.text, nl=False)
        return
    out = Path(output) if output else root / ".github" / "workflows" / f"ftpipe-{wf.pipeline}.yml"
    out.parent.mkdir(parents=True, exist_ok=True)
    existed = out.exists()
    out.write_text(wf.text)
    if as_json:
        emit_json(
            {
                "workflow": str(out),
                "pipeline": wf.pipeline,
                "cron_utc": wf.crons,
                "secrets": wf.secrets,
                "run_store": wf.store_rel,
            }
        )
        return
    click.echo(
        f"{'updated' if existed else 'wrote'} {out} — runs {wf.pipeline_rel} at cron "
        f"{', '.join(repr(c) for c in wf.crons)} (UTC)"
    )
    if wf.secrets:
        click.echo(
            f"  add these repository secrets (Settings → Secrets and variables → Actions): {', '.join(wf.secrets)}"
        )


@schedule.command("cron")
@click.argument("file")
@click.option(
    "--log", type=click.Path(), help="Log file the runs append to (default: .ftpipe/cron/<pipeline>.log beside FILE)."
)
@click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False),
    help="A NAME=value file sourced before each run (secrets).",
)
@click.option("--json", "as_json", is_flag=True)
def schedule_cron(file: str, log: str | None, env_file: str | None, as_json: bool) -> None:
    """Print crontab line(s) that run FILE on its schedule, never two at once (flock -n),
    appending to a log. Install with: (crontab -l; ftpipe schedule cron FILE) | crontab -"""
    from ftpipe.engine import load_checked
    from ftpipe.schedule import crontab_entry

    path = Path(file)
    entry = crontab_entry(
        path, load_checked(path), log=Path(log) if log else None, env_file=Path(env_file) if env_file else None
    )
    if as_json:
        emit_json(
            {"lines": entry.lines, "cron": entry.crons, "log": entry.log, "lock": entry.lock, "env": entry.secrets}
        )
        return
    for line in entry.lines:
        click.echo(line)


@schedule.command("hf-jobs")
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="Print the scheduled Job as JSON.")
def schedule_hf_jobs(file: str, as_json: bool) -> None:
    """Create (or update, never duplicate) a Hugging Face scheduled Job that runs FILE on its
    schedule (cron in UTC) on the hf-jobs executor's flavor, tokens as Job secrets."""
    from ftpipe.executors.jobs_schedule import schedule_job

    job = schedule_job(Path(file), quiet=as_json)
    if as_json:
        emit_json(job.as_dict())
        return
    click.echo(
        f"{job.action} scheduled Job {job.namespace}/{job.scheduled_job_id} — runs {job.pipeline} at cron "
        f"{job.cron_utc!r} (UTC) on {job.flavor}; inputs {job.inputs}"
    )
    if job.secrets:
        click.echo(f"  stored as the Job's secrets: {', '.join(job.secrets)} (run this again after rotating them)")


@schedule.command("summary")
@click.argument("file")
@click.option(
    "--result", "result_file", type=click.Path(), required=True, help="What `ftpipe run FILE --json` printed."
)
@click.option(
    "--outputs",
    type=click.Path(),
    help="Append run_id, status, up_to_date, run_dir as name=value lines (GitHub Actions: $GITHUB_OUTPUT).",
)
def schedule_summary(file: str, result_file: str, outputs: str | None) -> None:
    """Markdown report of a scheduled run (for $GITHUB_STEP_SUMMARY)."""
    from ftpipe.schedule import run_summary_markdown
    from ftpipe.store import default_store

    try:
        text = Path(result_file).read_text().strip()
        result = json.loads(text.splitlines()[-1]) if text else {}
    except (OSError, ValueError):
        result = {}
    record, report_md, run_dir = None, None, ""
    store = Path(result.get("store") or default_store(Path(file)))
    if result.get("run_id"):
        run_json = store / "runs" / result["run_id"] / "run.json"
        if run_json.exists():
            record = json.loads(run_json.read_text())
            run_dir = str(run_json.parent)
            art = record.get("steps", {}).get("evaluate", {}).get("artifact")
            if art and (store / art / "report.md").exists():
                report_md = (store / art / "report.md").read_text()
    if not result:
        result = {"exit_code": None, "error": f"ftpipe run printed no result (see the log); file {file}"}
    click.echo(run_summary_markdown(result, record, report_md, file), nl=False)
    if outputs:
        values = {
            "run_id": result.get("run_id") or "",
            "status": (record or {}).get("status") or result.get("status") or "",
            "up_to_date": str(bool(result.get("up_to_date"))).lower(),
            "run_dir": run_dir,
        }
        with open(outputs, "a", encoding="utf-8") as f:
            for k, v in values.items():
                f.write(f"{k}={v}\n")
