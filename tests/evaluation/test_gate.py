"""The gate: pass/fail, exact reasons and missed_by."""

from __future__ import annotations

import json

import pytest

from ftpipe.errors import StepError
from ftpipe.evaluation.gate import check_gate, run_gate


def report(metric: str = "token_f1", **values: float | None) -> dict:
    return {"variants": {name: {"metrics": {metric: v}} for name, v in values.items()}}


def test_fails_with_reason_and_missed_by() -> None:
    doc = check_gate(
        report(finetuned=0.41, base=0.30, few_shot=0.45),
        metric="token_f1",
        must_beat=["base", "few_shot"],
        min_delta=0.02,
    )
    assert doc["passed"] is False
    assert doc["reason"] == "token_f1 0.41 did not beat few_shot 0.45 by 0.02 (missed by 0.06)"
    base, few = doc["comparisons"]
    assert base["baseline"] == "base" and base["passed"] and base["missed_by"] == 0.0
    assert base["delta"] == pytest.approx(0.11) and base["required"] == pytest.approx(0.32)
    assert few == {
        "baseline": "few_shot",
        "finetuned": 0.41,
        "baseline_value": 0.45,
        "delta": pytest.approx(-0.04),
        "required": pytest.approx(0.47),
        "missed_by": pytest.approx(0.06),
        "passed": False,
    }
    assert doc["metric"] == "token_f1" and doc["min_delta"] == 0.02


def test_every_failure_is_named() -> None:
    doc = check_gate(report(finetuned=0.2, base=0.3, few_shot=0.5), metric="token_f1", must_beat=["base", "few_shot"])
    assert doc["reason"] == (
        "token_f1 0.2 did not beat base 0.3 (missed by 0.1); token_f1 0.2 did not beat few_shot 0.5 (missed by 0.3)"
    )


def test_passes_with_reason() -> None:
    doc = check_gate(
        report(finetuned=0.52, base=0.30, few_shot=0.45),
        metric="token_f1",
        must_beat=["base", "few_shot"],
        min_delta=0.02,
    )
    assert doc["passed"] is True
    assert doc["reason"] == "token_f1 0.52 beat base 0.3 by 0.22 and few_shot 0.45 by 0.07 (min_delta 0.02)"
    assert all(c["missed_by"] == 0.0 for c in doc["comparisons"])


def test_exactly_min_delta_passes_despite_float_noise() -> None:
    # 0.47 - 0.45 is 0.020000000000000018 in binary and 0.46 - 0.44 is 0.019999999999999962
    for ft, base in ((0.47, 0.45), (0.46, 0.44)):
        assert check_gate(report(finetuned=ft, base=base), metric="token_f1", must_beat=["base"], min_delta=0.02)[
            "passed"
        ]


def test_a_tie_is_not_a_win() -> None:
    doc = check_gate(report(finetuned=0.45, base=0.45), metric="token_f1", must_beat=["base"])
    assert doc["passed"] is False
    assert doc["reason"] == "token_f1 0.45 did not beat base 0.45 (a tie is not a win)"
    assert doc["comparisons"][0]["missed_by"] == 0.0


def test_lower_is_better_for_loss() -> None:
    ok = check_gate(report("loss", finetuned=1.0, base=1.5), metric="loss", must_beat=["base"], min_delta=0.1)
    assert ok["passed"] and ok["comparisons"][0]["delta"] == pytest.approx(0.5)
    assert ok["comparisons"][0]["required"] == pytest.approx(1.4)
    bad = check_gate(report("loss", finetuned=1.6, base=1.5), metric="loss", must_beat=["base"])
    assert not bad["passed"]
    assert bad["reason"] == "loss 1.6 did not beat base 1.5 (missed by 0.1) (lower is better)"


@pytest.mark.parametrize(
    "values, metric, must, message",
    [
        ({"finetuned": 0.5}, "token_f1", ["few_shot"], "no variant 'few_shot'"),
        ({"finetuned": 0.5, "base": 0.1}, "rouge_l", ["base"], "metric 'rouge_l' was not computed"),
        ({"finetuned": None, "base": 0.1}, "token_f1", ["base"], "finetuned has no token_f1 value"),
    ],
)
def test_misconfiguration_is_an_error(values, metric, must, message) -> None:
    with pytest.raises(StepError, match=message):
        check_gate(report(**values), metric=metric, must_beat=must)


def _evaluate_artifact(tmp_path, **values):
    folder = tmp_path / "evaluate"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report(**values)))
    return folder


def test_run_gate_blocks_and_writes_gate_json(tmp_path, helpers, recorder) -> None:
    folder = _evaluate_artifact(tmp_path, finetuned=0.41, base=0.3, few_shot=0.45)
    cfg = helpers.evaluate_block(gate={"metric": "token_f1", "must_beat": ["base", "few_shot"], "min_delta": 0.02})
    ctx = helpers.make_ctx(tmp_path, evaluate=cfg, inputs={"evaluate": folder}, recorder=recorder, step_id="gate")
    result = run_gate(ctx)
    assert result.outcome == "blocked"
    assert result.summary == (
        "token_f1 0.41 did not beat few_shot 0.45 by 0.02 (missed by 0.06). "
        "Recommendation: do not fine-tune: few_shot is as good (token_f1 0.45 vs fine-tuned 0.41)"
    )
    doc = json.loads((ctx.out_dir / "gate.json").read_text())
    assert doc["passed"] is False and doc["reason"] == result.summary
    assert set(doc) >= {"passed", "metric", "min_delta", "comparisons", "reason"}
    assert recorder.logs == ["gate blocked: " + result.summary]
    assert result.metrics["passed"] is False


def test_run_gate_passes(tmp_path, helpers) -> None:
    folder = _evaluate_artifact(tmp_path, finetuned=0.6, base=0.3, few_shot=0.45)
    cfg = helpers.evaluate_block(gate={"metric": "token_f1", "must_beat": ["base", "few_shot"]})
    ctx = helpers.make_ctx(tmp_path, evaluate=cfg, inputs={"evaluate": folder}, step_id="gate")
    result = run_gate(ctx)
    assert result.outcome == "ok" and json.loads((ctx.out_dir / "gate.json").read_text())["passed"]
    assert result.summary == (
        "token_f1 0.6 beat base 0.3 by 0.3 and few_shot 0.45 by 0.15. "
        "Recommendation: fine-tune: it meets the gate on token_f1"
    )
    assert result.metrics["recommendation"] == "finetuned"


def test_run_gate_without_a_gate_passes(tmp_path, helpers) -> None:
    ctx = helpers.make_ctx(tmp_path, evaluate=helpers.evaluate_block(gate=None), inputs={}, step_id="gate")
    result = run_gate(ctx)
    assert result.outcome == "ok" and result.summary == "no gate configured"
