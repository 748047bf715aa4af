"""validate, plan, schema, run, runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ftpipe.cli import emit_json
from ftpipe.errors import EXIT_INVALID

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ftpipe.contracts import RunRequest
    from ftpipe.store import RunStore


def _pipelines(files: tuple[str, ...]) -> list[Path]:
    return [Path(f) for f in files]


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Problems as JSON.")
def validate(files: tuple[str, ...], as_json: bool) -> None:
    """Check pipeline files; every problem at once as file:line:col. Exit 2 on problems."""
    from ftpipe.spec.validate import load

    results = {}
    bad = 0
    for path in _pipelines(files):
        loaded = load(path)
        results[str(path)] = loaded.problems
        bad += bool(loaded.problems)
    if as_json:
        emit_json({"ok": bad == 0, "files": {f: [p.__dict__ for p in probs] for f, probs in results.items()}})
    else:
        for f, probs in results.items():
            if probs:
                click.echo(f"{f}: {len(probs)} problem{'s' if len(probs) > 1 else ''}", err=True)
                for p in probs:
                    click.echo(f"  {p}", err=True)
            else:
                click.echo(f"{f}: ok")
    if bad:
        sys.exit(EXIT_INVALID)


@click.command()
@click.argument("file")
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON.")
@click.option(
    "--store", type=click.Path(), help="Run store to check for cached steps (default: the one `ftpipe run FILE` uses)."
)
@click.option(
    "--check",
    "check",
    is_flag=True,
    help="Also run the preflight checks (credentials, models, deployments, clusters) of the steps that "
    "would run; exit 2 if any fails.",
)
def plan(file: str, as_json: bool, store: str | None, check: bool) -> None:
    """Show the step graph, each step's cache key, and which steps are cached."""
    from ftpipe.planner import build_plan
    from ftpipe.spec.validate import load_checked
    from ftpipe.store import RunStore, default_store

    path = Path(file)
    loaded = load_checked(path)
    the_plan = build_plan(loaded.pipeline, path)
    rs = RunStore(Path(store) if store else default_store(path))
    cached = {s.id: rs.artifact(s.key) is not None for s in the_plan.steps}
    checks = _preflight_checks(path, rs) if check else None
    if as_json:
        out = the_plan.to_json()
        for s in out["steps"]:
            s["cached"] = cached[s["id"]]
        out["store"] = str(rs.root)
        if checks is not None:
            out["checks"] = [c.to_json() for c in checks]
            out["checks_ok"] = all(c.ok for c in checks)
        emit_json(out)
        if checks is not None and not all(c.ok for c in checks):
            sys.exit(EXIT_INVALID)
        return
    p = loaded.pipeline
    click.echo(
        f"pipeline {the_plan.pipeline} ({path}) — {len(the_plan.steps)} steps, "
        f"trainer {p.trainer.backend}, executor {p.executor.type}"
    )
    width = max(len(s.id) for s in the_plan.steps)
    for s in the_plan.steps:
        needs = f"← {', '.join(s.needs)}" if s.needs else ""
        state = "cached" if cached[s.id] else "will run"
        what = f" [{s.plugin}]" if s.plugin else ""
        click.echo(f"  {s.id:<{width}}  {s.key[:12]}  {state:<8}  {needs}{what}")
    if all(cached.values()):
        click.echo("up to date: every step is cached")
    if checks is not None:
        failed = [c for c in checks if not c.ok]
        click.echo(
            f"preflight: {len(checks)} check{'s' if len(checks) != 1 else ''}, {len(failed)} failed"
            if checks
            else "preflight: nothing to check (every step is cached, or no step needs a remote)"
        )
        for c in checks:
            click.echo(c.line(), err=not c.ok)
        if failed:
            sys.exit(EXIT_INVALID)


def _preflight_checks(path: Path, rs: RunStore) -> list:
    """The checks `ftpipe run` would make now (the environment's references resolved)."""
    from ftpipe import preflight
    from ftpipe.engine import prepare

    prepared = prepare(path)
    return preflight.collect(prepared, cache_dir=rs.cache_dir(), steps=preflight.steps_to_run(prepared.plan, rs, set()))


@click.command()
@click.option("-o", "--output", type=click.Path(), help="Write to a file instead of stdout.")
def schema(output: str | None) -> None:
    """Print the JSON Schema of the pipeline format (schemas/pipeline.schema.json)."""
    from ftpipe.schema import schema_json

    text = schema_json()
    if output:
        Path(output).write_text(text)
    else:
        click.echo(text, nl=False)


@click.command()
@click.argument("file")
@click.option("--executor", type=str, help="Override the pipeline's executor (local, ray, hf-spaces, hf-jobs).")
@click.option(
    "--store",
    type=click.Path(),
    help="Run store folder (default: FTPIPE_STORE, else the nearest .ftpipe/ walking up from "
    "the file, else the repository root's).",
)
@click.option("--force", is_flag=True, help="Rerun every step, cached or not.")
@click.option("--from", "from_step", help="Rerun this step and everything after it.")
@click.option("--wait", is_flag=True, help="If another run holds the lock, wait for it instead of exiting 4.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@click.option("--json", "as_json", is_flag=True, help="Print a one-object JSON summary on stdout at the end.")
@click.option(
    "--no-preflight",
    is_flag=True,
    help="Skip the read-only checks of credentials, models, deployments and clusters before the first step.",
)
def run(
    file: str,
    executor: str | None,
    store: str | None,
    force: bool,
    from_step: str | None,
    wait: bool,
    quiet: bool,
    as_json: bool,
    no_preflight: bool,
) -> None:
    """Run a pipeline: cached steps are skipped, interrupted ones resume."""
    from ftpipe import registry
    from ftpipe.contracts import RunRequest
    from ftpipe.spec.validate import load_checked

    path = Path(file)
    loaded = load_checked(path)
    name = executor or loaded.pipeline.executor.type
    plugin = registry.get("executor", name)
    impl = plugin.load()
    request = RunRequest(
        pipeline_path=path,
        store=Path(store) if store else None,
        force=force,
        from_step=from_step,
        wait_lock=wait,
        quiet=quiet,
        json_output=as_json,
        preflight=not no_preflight,
    )
    caps = getattr(plugin.config_model, "caps", None)
    if request.preflight and caps is not None and caps.remote:
        _remote_preflight(request, name)  # before anything is uploaded or submitted
    sys.exit(impl.execute(request))


def _remote_preflight(request: RunRequest, executor: str) -> None:
    from ftpipe import preflight
    from ftpipe.engine import prepare
    from ftpipe.progress import Reporter
    from ftpipe.store import RunStore, default_store

    prepared = prepare(request.pipeline_path)
    rs = RunStore(request.store or default_store(request.pipeline_path))
    rerun = preflight.requested(prepared.plan, force=request.force, from_step=request.from_step)
    preflight.enforce(
        prepared,
        cache_dir=rs.cache_dir(),
        steps=preflight.steps_to_run(prepared.plan, rs, rerun),
        log=Reporter(quiet=request.quiet).message,
        executor=executor,
    )


@click.group()
def runs() -> None:
    """The run store: list, show, compare, gc."""


def _store_for(file: str | None, store: str | None) -> RunStore:
    from ftpipe.store import RunStore, default_store
    from ftpipe.store_location import locate_store

    if store:
        return RunStore(Path(store))
    if file:
        return RunStore(default_store(Path(file)))
    return RunStore(locate_store().path)


store_option = click.option(
    "--store",
    type=click.Path(),
    help="Run store folder (default: FTPIPE_STORE, else the nearest .ftpipe/ walking up, else the repository root's).",
)
pipeline_option = click.option(
    "-p", "--pipeline", "pipeline_file", help="Use the store that runs of this pipeline use."
)


@runs.command("list")
@store_option
@pipeline_option
@click.option("--json", "as_json", is_flag=True)
def runs_list(store: str | None, pipeline_file: str | None, as_json: bool) -> None:
    """Runs, oldest first, with status and duration."""
    rs = _store_for(pipeline_file, store)
    records = rs.list_runs()
    if as_json:
        emit_json(
            [
                {
                    k: r.get(k)
                    for k in (
                        "run_id",
                        "pipeline",
                        "status",
                        "exit_code",
                        "started_at",
                        "duration_s",
                        "executor",
                        "up_to_date",
                    )
                }
                | {"steps": {s: v["status"] for s, v in r["steps"].items()}}
                for r in records
            ]
        )
        return
    if not records:
        from ftpipe.store_location import no_runs_hint

        click.echo(f"no runs in {rs.root}")
        click.echo(f"  hint: {no_runs_hint(rs.root)}", err=True)
        return
    for r in records:
        done = sum(v["status"] in ("done", "cached") for v in r["steps"].values())
        dur = f"{r['duration_s']:.1f}s" if r.get("duration_s") is not None else "-"
        click.echo(
            f"{r['run_id']}  {r['pipeline']:<24} {r['status']:<12} {dur:>8}  {done}/{len(r['steps'])} steps"
            + ("  up to date" if r.get("up_to_date") else "")
        )


@runs.command("show")
@click.argument("run_id", default="latest")
@store_option
@pipeline_option
@click.option("--json", "as_json", is_flag=True)
def runs_show(run_id: str, store: str | None, pipeline_file: str | None, as_json: bool) -> None:
    """One run: status per step, durations, metrics, cache hits, artifacts, evaluation."""
    rs = _store_for(pipeline_file, store)
    record = rs.read_run(rs.resolve_run(run_id))
    report = _report_for(rs, record)
    from ftpipe.run_files import run_files

    files = run_files(rs.root, record)
    if as_json:
        emit_json(
            record | ({"evaluation": report} if report else {}) | {"files": {k: str(v) for k, v in files.items()}}
        )
        return
    click.echo(
        f"run {record['run_id']}  {record['pipeline']}  {record['status']}"
        + (f"  exit {record['exit_code']}" if record.get("exit_code") is not None else "")
        + (f"  {record['duration_s']:.1f}s" if record.get("duration_s") is not None else "")
    )
    click.echo(f"  started {record['started_at']} on {record.get('host')} ({record.get('executor')})")
    if record.get("error"):
        click.echo(f"  error: {record['error']}")
    for sid, s in record["steps"].items():
        dur = f"{s['duration_s']:.1f}s" if s.get("duration_s") is not None else ""
        line = f"  {sid:<20} {s['status']:<12} {dur:>8}"
        if s["status"] == "cached" and s.get("from_run"):
            line += f"  (from run {s['from_run']})"
        click.echo(line)
        for key in ("summary", "reason", "error"):
            if s.get(key):
                click.echo(f"      {key}: {s[key]}")
        if s.get("metrics"):
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in s["metrics"].items() if not isinstance(v, (dict, list)))
            if shown:
                click.echo(f"      metrics: {shown}")
        if s.get("artifact"):
            click.echo(f"      artifact: {rs.root / s['artifact']}")
    if files:
        click.echo("  files:")
        for label, path in files.items():
            click.echo(f"    {label.replace('_', ' '):<13} {path}")
    md = _report_md_for(rs, record)
    if md:
        click.echo("")
        click.echo(md)


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _report_for(rs, record: dict) -> dict | None:
    art = record["steps"].get("evaluate", {}).get("artifact")
    if art and (rs.root / art / "report.json").exists():
        return json.loads((rs.root / art / "report.json").read_text())
    return None


def _report_md_for(rs, record: dict) -> str | None:
    art = record["steps"].get("evaluate", {}).get("artifact")
    if art and (rs.root / art / "report.md").exists():
        return (rs.root / art / "report.md").read_text()
    return None


@runs.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@store_option
@pipeline_option
@click.option("--json", "as_json", is_flag=True)
def runs_compare(run_a: str, run_b: str, store: str | None, pipeline_file: str | None, as_json: bool) -> None:
    """Compare two runs' evaluations."""
    from ftpipe.errors import NotFound
    from ftpipe.evaluation.report import compare_reports, render_comparison_markdown

    rs = _store_for(pipeline_file, store)
    reports = []
    for ref in (run_a, run_b):
        record = rs.read_run(rs.resolve_run(ref))
        rep = _report_for(rs, record)
        if rep is None:
            raise NotFound(f"run {record['run_id']} has no evaluation report")
        reports.append((record["run_id"], rep))
    cmp = compare_reports(reports[0][1], reports[1][1])
    if as_json:
        emit_json({"a": reports[0][0], "b": reports[1][0], "comparison": cmp})
    else:
        click.echo(render_comparison_markdown(cmp, reports[0][0], reports[1][0]))


@runs.command("gc")
@click.option("--keep", type=int, default=10, show_default=True, help="Runs to keep per pipeline.")
@click.option("--dry-run", is_flag=True)
@store_option
@pipeline_option
@click.option("--json", "as_json", is_flag=True)
def runs_gc(keep: int, dry_run: bool, store: str | None, pipeline_file: str | None, as_json: bool) -> None:
    """Remove old runs and the artifacts no remaining run refers to."""
    rs = _store_for(pipeline_file, store)
    out = rs.gc(keep=keep, dry_run=dry_run)
    if as_json:
        emit_json(out)
    else:
        verb = "would remove" if dry_run else "removed"
        click.echo(f"{verb} {len(out['runs_removed'])} runs and {len(out['artifacts_removed'])} artifacts")
