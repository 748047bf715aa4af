"""Forgetting: lm-evaluation-harness on the fine-tuned and base model with the shipped
offline task, in the report and the gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from ftpipe.contracts import ModelRef
from ftpipe.evaluation import variants as variants_mod
from ftpipe.evaluation.decision import recommend
from ftpipe.evaluation.forgetting import benchmark_section, forgetting_failures
from ftpipe.evaluation.gate import check_gate
from ftpipe.evaluation.step import run_evaluate


def _report(base: float, ft: float) -> dict:
    bench = benchmark_section(
        {
            "finetuned": {"t": {"metric": "acc", "value": ft, "n": 30}},
            "base": {"t": {"metric": "acc", "value": base, "n": 30}},
        }
    )
    return {
        "variants": {
            "finetuned": {"metrics": {"token_f1": 0.6}, "cost_per_1k_requests": None},
            "base": {"metrics": {"token_f1": 0.2}, "cost_per_1k_requests": None},
        },
        "benchmarks": bench,
    }


def test_forgetting_is_finetuned_minus_base_and_gates() -> None:
    rep = _report(base=0.7, ft=0.5)
    assert rep["benchmarks"]["tasks"]["t"]["delta"] == pytest.approx(-0.2)
    assert forgetting_failures(rep, 0.25) == []
    (why,) = forgetting_failures(rep, 0.1)
    assert why == "forgetting: t acc fell by 0.2 against the base model (0.7 -> 0.5; max_forgetting 0.1)"
    doc = check_gate(rep, metric="token_f1", must_beat=["base"], max_forgetting=0.1)
    assert not doc["passed"] and doc["forgetting"] == [why] and why in doc["reason"]
    assert recommend(rep, doc)["line"] == f"do not deploy this fine-tune: it loses general ability ({why})"
    assert check_gate(rep, metric="token_f1", must_beat=["base"])["passed"]  # not gated unless asked


@pytest.mark.integration
def test_lm_eval_runs_the_shipped_task_offline_on_both_models(
    tmp_path: Path, helpers, prepare_dir, recorder, monkeypatch, tiny
) -> None:
    pytest.importorskip("lm_eval", reason="lm-eval is the optional 'benchmarks' extra")
    fake = SimpleNamespace(load_for_inference=lambda *a, **k: tiny, load_base_for_inference=lambda *a, **k: tiny)
    monkeypatch.setattr(variants_mod, "_loading", lambda: fake)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    train = helpers.write_train_artifact(tmp_path, ModelRef(kind="local", base="builtin:tiny", path="model"))
    cfg = helpers.evaluate_block(
        metrics=["token_f1"],
        baselines=["base"],
        benchmarks=["ftpipe_general_mini"],
        gate={"metric": "token_f1", "must_beat": ["base"], "max_forgetting": 0.0},
    )
    ctx = helpers.make_ctx(tmp_path, evaluate=cfg, inputs={"prepare": prepare_dir, "train": train}, recorder=recorder)
    result = run_evaluate(ctx)
    report = json.loads((ctx.out_dir / "report.json").read_text())
    task = report["benchmarks"]["tasks"]["ftpipe_general_mini"]
    assert task["metric"] == "acc" and task["n"] == 30
    assert set(task["variants"]) == {"finetuned", "base"}
    assert 0.0 <= task["variants"]["base"] <= 1.0
    # the same weights: the same answers, nothing forgotten
    assert task["delta"] == 0.0
    assert forgetting_failures(report, 0.0) == []
    md = (ctx.out_dir / "report.md").read_text()
    assert "## General ability (lm-evaluation-harness)" in md
    assert f"| ftpipe_general_mini | acc | 30 | {task['variants']['base']:.4f} |" in md
    assert any(line.startswith("benchmark ftpipe_general_mini: acc ") for line in recorder.logs)
    assert result.metrics["benchmark.ftpipe_general_mini.finetuned"] == task["variants"]["finetuned"]


def test_a_scheduled_machine_installs_lm_eval_and_the_judge_client(tmp_path: Path) -> None:
    from ftpipe.schedule import extras_for
    from ftpipe.spec.validate import load

    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "pipelines" / "data", tmp_path / "data")
    text = (repo / "pipelines" / "quickstart.yaml").read_text()
    path = tmp_path / "p.yaml"
    path.write_text(text)
    assert extras_for(load(path).pipeline) == ["train"]
    text = text.replace(
        "  cost: {hourly: 0.10}",
        "  cost: {hourly: 0.10}\n  benchmarks: [ftpipe_general_mini]\n  judge: {model: gpt-4o-mini}",
    )
    path.write_text(text)
    assert extras_for(load(path).pipeline) == ["benchmarks", "openai", "train"]
