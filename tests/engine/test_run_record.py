"""The engine closes the run record whatever a step does, and library log lines go to the
step's log instead of the console."""

from __future__ import annotations

import gc
import json
import logging
import warnings
from pathlib import Path

import pytest

from ftpipe.contracts import StepResult
from ftpipe.engine import execute
from ftpipe.progress import Reporter
from ftpipe.store import RunStore
from tests.engine.helpers import write_pipeline


@pytest.mark.parametrize("returned", [None, {"metrics": {}}, "ok"])
def test_a_step_returning_the_wrong_type_fails_the_step_and_closes_the_run(tmp_path: Path, returned) -> None:
    p = write_pipeline(tmp_path)
    store = tmp_path / "store"

    def wrong(step, ctx):
        return returned if step.id == "train" else StepResult()

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # a log file left open would warn when collected
        out = execute(p, store=store, step_runner=wrong, reporter=Reporter(quiet=True))
        gc.collect()
    assert out.exit_code == 1
    record = json.loads((store / "runs" / out.run_id / "run.json").read_text())
    assert record["status"] == "failed" and record["finished_at"] and record["exit_code"] == 1
    train = record["steps"]["train"]
    assert train["status"] == "failed"
    assert (
        train["error"] == f"TypeError: step train returned {type(returned).__name__}, not a StepResult "
        "(a bug in the trl implementation)"
    )
    assert record["steps"]["evaluate"]["status"] == "not-run"
    assert "not a StepResult" in (store / train["log"]).read_text()
    # the run is not left holding anything: the next run starts, and re-runs the failed step
    again = execute(p, store=store, step_runner=lambda step, ctx: StepResult(), reporter=Reporter(quiet=True))
    assert again.exit_code == 0 and again.record["steps"]["train"]["status"] == "done"


def test_a_failure_outside_any_step_still_closes_the_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_pipeline(tmp_path)
    store = tmp_path / "store"
    real_scratch = RunStore.scratch
    calls: list[str] = []

    def broken_scratch(self, key):  # the store failing between steps (a bug, a full disk)
        calls.append(key)
        if len(calls) > 1:
            raise OSError("disk full")
        return real_scratch(self, key)

    monkeypatch.setattr(RunStore, "scratch", broken_scratch)
    with pytest.raises(OSError, match="disk full"):
        execute(p, store=store, step_runner=lambda step, ctx: StepResult(), reporter=Reporter(quiet=True))
    [run_json] = (store / "runs").glob("*/run.json")
    record = json.loads(run_json.read_text())
    assert record["status"] == "failed" and record["finished_at"] and "disk full" in record["error"]
    assert record["steps"]["prepare"]["status"] == "done"
    assert {s["status"] for name, s in record["steps"].items() if name != "prepare"} == {"not-run"}


def test_huggingface_hub_log_lines_go_to_the_step_log_not_the_console(tmp_path: Path, capfd) -> None:
    from huggingface_hub.utils import logging as hf_logging

    p = write_pipeline(tmp_path, deploy=0)
    store = tmp_path / "store"
    hub_logger = hf_logging.get_logger("huggingface_hub.utils._http")
    handlers_before = list(logging.getLogger("huggingface_hub").handlers)

    def chatty(step, ctx):
        if step.id == "prepare":
            hub_logger.warning("Retrying in 1s [Retry 1/5].")
            logging.getLogger("huggingface_hub.hf_api").warning(
                "No files have been modified since last commit. Skipping to prevent empty commit."
            )
        return StepResult()

    out = execute(p, store=store, step_runner=chatty, reporter=Reporter(quiet=True))
    assert out.exit_code == 0
    captured = capfd.readouterr()
    assert "Retrying in" not in captured.err + captured.out and "No files have been" not in captured.err
    log = (store / out.record["steps"]["prepare"]["log"]).read_text()
    assert "[huggingface_hub] warning: Retrying in 1s [Retry 1/5]." in log
    assert "No files have been modified since last commit" in log
    # outside a step the library's own handlers are back
    assert logging.getLogger("huggingface_hub").handlers == handlers_before


def test_library_warnings_go_to_the_step_log(capfd) -> None:
    import warnings

    from ftpipe.steplog import library_logs_to

    lines: list[str] = []
    with library_logs_to(lines.append):
        warnings.warn("`old_name` is deprecated, use `new_name`", FutureWarning, stacklevel=1)
    assert any("FutureWarning: `old_name` is deprecated" in line for line in lines), lines
    assert "deprecated" not in capfd.readouterr().err  # not on the console
