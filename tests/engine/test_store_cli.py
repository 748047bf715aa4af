"""runs list / show / gc through the CLI, and the two progress styles."""

from __future__ import annotations

import io
import json
from pathlib import Path

from click.testing import CliRunner

from ftpipe.cli import commands, main, more  # noqa: F401
from ftpipe.engine import execute
from ftpipe.progress import Reporter
from tests.engine.helpers import write_pipeline
from tests.engine.test_engine import Counting


def test_runs_list_show_gc(tmp_path: Path) -> None:
    p = write_pipeline(tmp_path, lr=0.001)
    first = execute(p, step_runner=Counting(), reporter=Reporter(quiet=True))
    write_pipeline(tmp_path, lr=0.002)
    second = execute(p, step_runner=Counting(), reporter=Reporter(quiet=True))
    store = str(tmp_path / ".ftpipe")
    cli = CliRunner()
    listed = json.loads(cli.invoke(main, ["runs", "list", "--json", "--store", store]).output)
    assert [r["run_id"] for r in listed] == [first.run_id, second.run_id]
    # a unique prefix (two runs in the same second share their first 16 characters)
    unique = next(i for i in range(1, len(second.run_id) + 1) if not first.run_id.startswith(second.run_id[:i]))
    shown = cli.invoke(main, ["runs", "show", second.run_id[: max(unique, 17)], "--store", store])
    assert shown.exit_code == 0 and "prepare" in shown.output and f"(from run {first.run_id})" in shown.output
    as_json = json.loads(cli.invoke(main, ["runs", "show", "latest", "--json", "--store", store]).output)
    assert as_json["steps"]["train"]["status"] == "done"
    # keep only the newest run: the second's prepare step came from the first, so the first stays
    dry = json.loads(cli.invoke(main, ["runs", "gc", "--keep", "1", "--dry-run", "--json", "--store", store]).output)
    assert dry["runs_removed"] == [] and dry["dry_run"]
    out = json.loads(cli.invoke(main, ["runs", "gc", "--keep", "1", "--json", "--store", store]).output)
    assert out["runs_removed"] == [] and out["artifacts_removed"] == []
    again = execute(p, step_runner=Counting(), reporter=Reporter(quiet=True))
    assert again.summary()["up_to_date"]
    missing = cli.invoke(main, ["runs", "show", "nope", "--store", store])
    assert missing.exit_code == 2 and "no run 'nope'" in missing.output


def test_plain_progress_lines_are_timestamped_and_throttled() -> None:
    buf = io.StringIO()
    r = Reporter(buf, live=False)
    r.step_started("train")
    for i in range(101):
        r.progress("train", i, 100, "train")
    r.step_finished("train", "done", 1.5, "ok")
    lines = buf.getvalue().splitlines()
    assert lines[0].endswith("train: started") and lines[-1].endswith("train: done (1.5s) — ok")
    assert 5 <= len(lines) <= 14  # about one line per 10%, not one per step
    assert all(line[2] == ":" and line[5] == ":" for line in lines)


def test_live_progress_draws_a_bar_in_place() -> None:
    buf = io.StringIO()
    r = Reporter(buf, live=True)
    r.progress("train", 5, 10, "train")
    assert "\r" in buf.getvalue() and "█" in buf.getvalue() and "5/10" in buf.getvalue()
    quiet = io.StringIO()
    Reporter(quiet, quiet=True).progress("train", 5, 10, "train")
    assert quiet.getvalue() == ""


def test_gc_keeps_the_runs_that_kept_cached_runs_came_from(tmp_path: Path) -> None:
    """Issue 12, 3.3: cached no-op reruns must not push out the run that trained the model."""
    p = write_pipeline(tmp_path)
    trained = execute(p, step_runner=Counting(), reporter=Reporter(quiet=True))
    noops = [execute(p, step_runner=Counting(), reporter=Reporter(quiet=True)) for _ in range(2)]
    assert all(n.summary()["up_to_date"] for n in noops)
    store = str(tmp_path / ".ftpipe")
    cli = CliRunner()
    out = json.loads(cli.invoke(main, ["runs", "gc", "--keep", "2", "--json", "--store", store]).output)
    assert out["runs_removed"] == [] and out["artifacts_removed"] == []
    assert (tmp_path / ".ftpipe" / "runs" / trained.run_id / "run.json").exists()
    shown = json.loads(cli.invoke(main, ["runs", "show", "latest", "--json", "--store", store]).output)
    origin = shown["steps"]["train"]["from_run"]
    assert origin == trained.run_id
    assert cli.invoke(main, ["runs", "show", origin, "--store", store]).exit_code == 0
    # runs nothing kept refers to go, with their artifacts: new data, so nothing is reused
    (tmp_path / "data.jsonl").unlink()
    write_pipeline(tmp_path, rows=12)
    newer = [execute(p, step_runner=Counting(), reporter=Reporter(quiet=True)) for _ in range(2)]
    assert newer[1].record["steps"]["train"]["from_run"] == newer[0].run_id
    out = json.loads(cli.invoke(main, ["runs", "gc", "--keep", "2", "--json", "--store", store]).output)
    assert out["runs_removed"] == [trained.run_id, *(n.run_id for n in noops)]
    assert f"cache/{trained.record['steps']['train']['key']}" in out["artifacts_removed"]
    assert f"cache/{trained.record['steps']['prepare']['key']}" in out["artifacts_removed"]
    assert f"cache/{newer[0].record['steps']['train']['key']}" not in out["artifacts_removed"]
    assert cli.invoke(main, ["runs", "show", "latest", "--store", store]).exit_code == 0


def test_runs_show_lists_every_metric_and_the_files_to_open(tmp_path: Path) -> None:
    """Issue 12, 3.9: the report, chart and loss curve live in hash-named folders; runs show
    names them, and shows a step's metrics past the eighth."""
    from ftpipe.contracts import StepResult

    def runner(step, ctx) -> StepResult:
        if step.kind == "evaluate":
            for name in ("report.md", "report.json", "chart.png", "predictions.jsonl"):
                (ctx.out_dir / name).write_text("{}" if name.endswith("json") else "x")
            return StepResult(metrics={f"m{i}": i / 10 for i in range(11)}, summary="scored")
        if step.kind == "train":
            (ctx.out_dir / "loss.png").write_bytes(b"png")
        return StepResult(summary=step.id)

    p = write_pipeline(tmp_path)
    out = execute(p, step_runner=runner, reporter=Reporter(quiet=True))
    store = tmp_path / ".ftpipe"
    shown = CliRunner().invoke(main, ["runs", "show", "latest", "--store", str(store)])
    assert shown.exit_code == 0, shown.output
    assert "m8=0.8, m9=0.9, m10=1" in shown.output
    evaluate = store / out.record["steps"]["evaluate"]["artifact"]
    train = store / out.record["steps"]["train"]["artifact"]
    for label, path in (
        ("report", evaluate / "report.md"),
        ("chart", evaluate / "chart.png"),
        ("loss curve", train / "loss.png"),
        ("predictions", evaluate / "predictions.jsonl"),
    ):
        assert f"    {label:<13} {path}" in shown.output
    as_json = json.loads(CliRunner().invoke(main, ["runs", "show", "latest", "--json", "--store", str(store)]).output)
    assert as_json["files"]["chart"] == str(evaluate / "chart.png")
    assert as_json["files"]["loss_curve"] == str(train / "loss.png")
