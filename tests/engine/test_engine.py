"""The run engine with fake steps: caching, selective reruns, exit codes, records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftpipe.contracts import StepResult
from ftpipe.engine import execute
from ftpipe.errors import StepError, UsageError
from ftpipe.progress import Reporter
from ftpipe.store import RunStore
from tests.engine.helpers import write_pipeline


class Counting:
    def __init__(self, *, fail: str | None = None, block: bool = False) -> None:
        self.calls: list[str] = []
        self.fail, self.block = fail, block

    def __call__(self, step, ctx) -> StepResult:
        self.calls.append(step.id)
        (ctx.out_dir / "artifact.txt").write_text(f"{step.id} of {ctx.run_id}")
        for dep, folder in ctx.inputs.items():
            assert (folder / "artifact.txt").exists(), f"{step.id} got no artifact from {dep}"
        if step.id == self.fail:
            raise StepError("the data was bad on purpose")
        if step.kind == "gate" and self.block:
            return StepResult(summary="token_f1 0.10 did not beat base 0.20 (missed by 0.10)", outcome="blocked")
        return StepResult(metrics={"value": len(self.calls)}, summary=f"ran {step.id}")


def run(path: Path, runner: Counting, **kw):
    return execute(path, step_runner=runner, reporter=Reporter(quiet=True), **kw)


def test_unchanged_rerun_is_all_cache_hits(tmp_path: Path) -> None:
    p = write_pipeline(tmp_path)
    first = Counting()
    out = run(p, first)
    assert out.exit_code == 0 and first.calls == ["prepare", "train", "evaluate", "gate", "deploy.out0"]
    second = Counting()
    out2 = run(p, second)
    assert second.calls == []
    assert out2.exit_code == 0 and out2.summary()["up_to_date"] is True
    assert set(out2.summary()["steps"].values()) == {"cached"}
    rec = RunStore(tmp_path / ".ftpipe").read_run(out2.run_id)
    assert rec["steps"]["train"]["from_run"] == out.run_id


def test_changing_a_hyperparameter_reruns_train_and_after_not_prepare(tmp_path: Path) -> None:
    p = write_pipeline(tmp_path, lr=0.001)
    run(p, Counting())
    write_pipeline(tmp_path, lr=0.002)
    again = Counting()
    out = run(p, again)
    assert again.calls == ["train", "evaluate", "gate", "deploy.out0"]
    assert out.summary()["steps"]["prepare"] == "cached"


def test_changing_the_data_reruns_everything(tmp_path: Path) -> None:
    p = write_pipeline(tmp_path)
    run(p, Counting())
    with (tmp_path / "data.jsonl").open("a") as f:
        f.write(
            json.dumps({"messages": [{"role": "user", "content": "new"}, {"role": "assistant", "content": "x"}]}) + "\n"
        )
    again = Counting()
    run(p, again)
    assert again.calls[0] == "prepare" and len(again.calls) == 5


def test_force_and_from(tmp_path: Path) -> None:
    p = write_pipeline(tmp_path)
    run(p, Counting())
    forced = Counting()
    run(p, forced, force=True)
    assert len(forced.calls) == 5
    partial = Counting()
    run(p, partial, from_step="evaluate")
    assert partial.calls == ["evaluate", "gate", "deploy.out0"]
    with pytest.raises(UsageError, match="no such step"):
        run(p, Counting(), from_step="trian")


def test_a_failed_step_keeps_what_finished_and_the_next_run_resumes(tmp_path: Path) -> None:
    p = write_pipeline(tmp_path)
    out = run(p, Counting(fail="evaluate"))
    assert out.exit_code == 1
    rec = out.record
    assert rec["status"] == "failed"
    assert rec["steps"]["evaluate"]["error"] == "the data was bad on purpose"
    assert rec["steps"]["gate"]["status"] == "not-run"
    log = (tmp_path / ".ftpipe" / rec["steps"]["evaluate"]["log"]).read_text()
    assert "the data was bad on purpose" in log
    again = Counting()
    assert run(p, again).exit_code == 0
    assert again.calls == ["evaluate", "gate", "deploy.out0"]


def test_gate_blocked_skips_deploy_and_exits_3(tmp_path: Path) -> None:
    p = write_pipeline(tmp_path, deploy=2)
    out = run(p, Counting(block=True))
    assert out.exit_code == 3
    steps = out.record["steps"]
    assert steps["gate"]["status"] == "blocked"
    for d in ("deploy.out0", "deploy.out1"):
        assert steps[d]["status"] == "skipped"
        assert "missed by 0.10" in steps[d]["reason"]
    # the blocked gate is cached: the next run says the same without re-evaluating
    again = Counting()
    out2 = run(p, again)
    assert out2.exit_code == 3 and again.calls == []


def test_an_internal_error_in_a_step_is_recorded_not_raised(tmp_path: Path) -> None:
    p = write_pipeline(tmp_path)

    def broken(step, ctx):
        if step.id == "train":
            raise ZeroDivisionError("boom")
        return StepResult()

    out = execute(p, step_runner=broken, reporter=Reporter(quiet=True))
    assert out.exit_code == 1
    assert out.record["steps"]["train"]["error"] == "ZeroDivisionError: boom"
    log = (tmp_path / ".ftpipe" / out.record["steps"]["train"]["log"]).read_text()
    assert "Traceback" in log


def test_secrets_never_reach_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_pipeline(tmp_path, deploy=0)
    text = p.read_text() + 'deploy:\n  - {type: hf-hub, repo: me/model, token: "${env:HF_TOKEN}"}\n'
    p.write_text(text)
    secret = "hf_SECRETsecret123456"
    monkeypatch.setenv("HF_TOKEN", secret)

    def leaky(step, ctx):
        ctx.log(f"using token {ctx.options['target'].token}" if step.kind == "deploy" else "hello")
        assert secret in ctx.secrets
        return StepResult(metrics={"echo": secret} if step.kind == "deploy" else {}, summary=f"token={secret}")

    # the steps are stand-ins: no Hub to check the token against
    out = execute(p, step_runner=leaky, reporter=Reporter(quiet=True), preflight=False)
    assert out.exit_code == 0
    for f in (tmp_path / ".ftpipe").rglob("*"):
        if f.is_file():
            assert secret not in f.read_text(errors="ignore"), f"secret leaked into {f}"
    assert "${env:HF_TOKEN}" in (tmp_path / ".ftpipe" / "runs" / out.run_id / "pipeline.yaml").read_text()


def test_missing_environment_variable_stops_before_the_first_step(tmp_path: Path) -> None:
    p = write_pipeline(tmp_path, deploy=0)
    p.write_text(p.read_text() + 'deploy:\n  - {type: hf-hub, repo: me/model, token: "${env:HF_TOKEN}"}\n')
    calls = Counting()
    with pytest.raises(UsageError, match=r"HF_TOKEN is not set") as exc:
        run(p, calls)
    assert "pipeline.yaml:16:43  deploy[0].token" in str(exc.value) and calls.calls == []


def test_force_discards_checkpoints_but_keeps_other_state(tmp_path: Path) -> None:
    p = write_pipeline(tmp_path)
    seen: dict[str, bool] = {}

    def runner(step, ctx):
        if step.id == "train":
            seen["checkpoint"] = (ctx.state_dir / "checkpoints" / "checkpoint-10").exists()
            seen["job"] = (ctx.state_dir / "job.json").exists()
            (ctx.state_dir / "checkpoints" / "checkpoint-10").mkdir(parents=True, exist_ok=True)
            (ctx.state_dir / "job.json").write_text("{}")
        return StepResult()

    execute(p, step_runner=runner, reporter=Reporter(quiet=True))
    assert seen == {"checkpoint": False, "job": False}
    execute(p, step_runner=runner, reporter=Reporter(quiet=True), force=True)
    assert seen == {"checkpoint": False, "job": True}  # a forced rerun never resumes a finished training


def test_a_cached_deploy_whose_output_is_gone_runs_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftpipe import registry
    from ftpipe.deploy.local import LocalDeploy

    p = write_pipeline(tmp_path)
    run(p, Counting())
    out_folder = tmp_path / "out0"
    out_folder.mkdir()

    class Plugin:
        def load(self):
            return LocalDeploy()

    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda kind, name: Plugin() if kind == "target" else real_get(kind, name))
    record = RunStore(tmp_path / ".ftpipe").list_runs()[-1]
    art = tmp_path / ".ftpipe" / record["steps"]["deploy.out0"]["artifact"]
    (art / "deploy.json").write_text(json.dumps({"path": str(out_folder)}))
    again = Counting()
    run(p, again)
    assert again.calls == []  # the folder is there: the cached deploy stands
    out_folder.rmdir()
    third = Counting()
    run(p, third)
    assert third.calls == ["deploy.out0"]  # the folder was deleted: deploy again
