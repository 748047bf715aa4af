"""The evaluate step end to end on the tiny local model (then the gate on its report)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from ftpipe.contracts import ModelRef
from ftpipe.errors import StepError, UsageError
from ftpipe.evaluation import variants as variants_mod
from ftpipe.evaluation.gate import run_gate
from ftpipe.evaluation.step import run_evaluate

pytestmark = pytest.mark.integration


@pytest.fixture
def loads(monkeypatch, tiny):
    """Stand-in for ftpipe.models.loading that hands out the session's tiny model."""
    calls: list[tuple] = []

    def load_for_inference(ref, train_dir, *, cache_dir, base_dir, revision=None, token=None):
        calls.append(("trained", ref.path, str(train_dir)))
        return tiny

    def load_base_for_inference(base, *, cache_dir, base_dir, revision=None, token=None):
        calls.append(("base", base))
        return tiny

    fake = SimpleNamespace(load_for_inference=load_for_inference, load_base_for_inference=load_base_for_inference)
    monkeypatch.setattr(variants_mod, "_loading", lambda: fake)
    return calls


def _ctx(tmp_path, helpers, prepare_dir, recorder, **overrides):
    train = helpers.write_train_artifact(tmp_path, ModelRef(kind="local", base="builtin:tiny", path="model"))
    return helpers.make_ctx(
        tmp_path,
        evaluate=helpers.evaluate_block(**overrides),
        inputs={"prepare": prepare_dir, "train": train},
        recorder=recorder,
    )


def test_local_evaluation_writes_the_report(tmp_path, helpers, prepare_dir, recorder, loads) -> None:
    ctx = _ctx(
        tmp_path,
        helpers,
        prepare_dir,
        recorder,
        metrics=["token_f1", "exact_match", "rouge_l", "json_valid", "loss", "perplexity"],
        prices={"finetuned": {"input": 0.3, "output": 1.2}, "default": {"input": 0.15, "output": 0.6}},
    )
    result = run_evaluate(ctx)

    # base and few_shot share one loaded model
    assert loads == [("trained", "model", str(ctx.inputs["train"])), ("base", "builtin:tiny")]
    names = sorted(p.name for p in ctx.out_dir.iterdir())
    assert names == ["chart.png", "predictions.jsonl", "report.json", "report.md"]
    report = json.loads((ctx.out_dir / "report.json").read_text())
    assert list(report["variants"]) == ["finetuned", "base", "few_shot"]
    assert report["n"] == 4 and report["split"] == "test" and report["run_id"] == "run-test"
    ft, base, few = (report["variants"][n] for n in ("finetuned", "base", "few_shot"))
    # The same weights answer the same prompts the same way.
    assert ft["metrics"] == base["metrics"]
    assert ft["tokens"] == base["tokens"]
    loss = ft["metrics"]["loss"]
    assert 0 < loss < 20 and ft["metrics"]["perplexity"] == pytest.approx(math.exp(loss))
    assert few["few_shot"] and few["tokens"]["prompt_mean"] > 2 * base["tokens"]["prompt_mean"]
    assert 1 <= ft["tokens"]["completion_mean"] <= 4
    assert ft["cost_per_1k_requests"] == pytest.approx(
        1000 * (ft["tokens"]["prompt_mean"] * 0.3 + ft["tokens"]["completion_mean"] * 1.2) / 1e6
    )
    assert few["price"] == {"input": 0.15, "output": 0.6}  # default
    comp = {c["baseline"]: c for c in report["comparisons"]}
    assert comp["base"]["deltas"]["token_f1"] == 0.0
    assert comp["few_shot"]["tokens_saved_per_request"]["prompt"] > 0

    preds = [json.loads(line) for line in (ctx.out_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 12 and {p["variant"] for p in preds} == {"finetuned", "base", "few_shot"}
    assert preds[0]["reference"] == helpers.TEST[0][1] and "prediction" in preds[0]

    assert result.metrics["finetuned.token_f1"] == ft["metrics"]["token_f1"]
    assert result.metrics["delta.few_shot.loss"] == comp["few_shot"]["deltas"]["loss"]
    assert result.metrics["n"] == 4
    assert result.summary.startswith("finetuned token_f1 ") and result.summary.endswith("on 4 examples")

    # progress per batch (batch_size 3 over 4 examples), for generation and likelihood
    gen = [p for p in recorder.progress if p[2] == "evaluate finetuned"]
    assert gen == [(0, 4, "evaluate finetuned"), (3, 4, "evaluate finetuned"), (4, 4, "evaluate finetuned")]
    assert (4, 4, "evaluate few_shot (loss)") in recorder.progress
    assert any(line.startswith("few_shot: 2 similar examples from 6") for line in recorder.logs)

    md = (ctx.out_dir / "report.md").read_text()
    assert "| **finetuned** |" in md and "| few_shot |" in md

    # The same weights tie: the gate blocks deployment.
    gate_ctx = helpers.make_ctx(
        tmp_path, evaluate=ctx.pipeline.evaluate, inputs={"evaluate": ctx.out_dir}, step_id="gate"
    )
    gate = run_gate(gate_ctx)
    assert (
        gate.outcome == "blocked"
        and "(a tie is not a win). Recommendation: do not fine-tune: base is as good" in gate.summary
    )
    # the same weights answer every row the same way: a tie, however few the rows


def test_limit_and_loss_only(tmp_path, helpers, prepare_dir, recorder, loads) -> None:
    ctx = _ctx(tmp_path, helpers, prepare_dir, recorder, metrics=["loss"], baselines=["base"], limit=2, gate=None)
    run_evaluate(ctx)
    report = json.loads((ctx.out_dir / "report.json").read_text())
    assert report["n"] == 2 and report["primary_metric"] == "loss"
    tokens = report["variants"]["finetuned"]["tokens"]
    assert tokens["prompt_mean"] > 0 and tokens["completion_mean"] is None  # nothing was generated
    assert not [p for p in recorder.progress if p[2] == "evaluate finetuned"]


def test_custom_metric_beside_the_pipeline(tmp_path, helpers, prepare_dir, recorder, loads) -> None:
    (tmp_path / "team_metrics_ev.py").write_text("def length_ok(p, r):\n    return float(len(p) < 500)\n")
    ctx = _ctx(
        tmp_path, helpers, prepare_dir, recorder, metrics=["team_metrics_ev:length_ok"], baselines=["base"], gate=None
    )
    run_evaluate(ctx)
    report = json.loads((ctx.out_dir / "report.json").read_text())
    assert report["variants"]["finetuned"]["metrics"] == {"team_metrics_ev:length_ok": 1.0}


def test_bad_metric_fails_before_loading_a_model(tmp_path, helpers, prepare_dir, recorder, loads) -> None:
    ctx = _ctx(tmp_path, helpers, prepare_dir, recorder, metrics=["token_f1", "bleu"])
    with pytest.raises(UsageError, match="unknown metric 'bleu'"):
        run_evaluate(ctx)
    assert loads == []


def test_empty_or_missing_split(tmp_path, helpers, prepare_dir, recorder, loads) -> None:
    (prepare_dir / "test.jsonl").write_text("")
    with pytest.raises(StepError, match="test split is empty"):
        run_evaluate(_ctx(tmp_path, helpers, prepare_dir, recorder))
    (prepare_dir / "test.jsonl").unlink()
    with pytest.raises(StepError, match="no test split"):
        run_evaluate(_ctx(tmp_path, helpers, prepare_dir, recorder))


def test_text_data_supports_only_likelihood(tmp_path, helpers, prepare_dir, recorder, loads) -> None:
    helpers.write_jsonl(prepare_dir / "test.jsonl", [{"text": "a plain document"}])
    with pytest.raises(UsageError, match="supports only loss, perplexity"):
        run_evaluate(_ctx(tmp_path, helpers, prepare_dir, recorder))
    ctx = _ctx(tmp_path, helpers, prepare_dir, recorder, metrics=["perplexity"], baselines=["base"], gate=None)
    run_evaluate(ctx)
    assert json.loads((ctx.out_dir / "report.json").read_text())["variants"]["base"]["metrics"]["perplexity"] > 1


def test_previous_run_as_a_baseline(tmp_path, helpers, prepare_dir, recorder, loads) -> None:
    from ftpipe.store import RunStore

    store = RunStore(tmp_path / ".ftpipe")
    old_train = store.root / "cache" / "k-old-train"
    old_train.mkdir(parents=True)
    ModelRef(kind="local", base="builtin:tiny", path="model", adapter=True).write(old_train)
    store.write_run(
        {
            "run_id": "20240101-000000-abcd",
            "pipeline": "p",
            "status": "done",
            "steps": {"train": {"status": "done", "artifact": "cache/k-old-train"}},
        }
    )
    store.write_run(
        {
            "run_id": "20240102-000000-ef01",
            "pipeline": "p",
            "status": "failed",
            "steps": {"train": {"status": "failed"}},
        }
    )
    ctx = _ctx(
        tmp_path,
        helpers,
        prepare_dir,
        recorder,
        metrics=["token_f1"],
        gate=None,
        baselines=[{"name": "prev", "model": "run:20240101"}],
    )
    ctx = dataclasses.replace(ctx, state_dir=store.root / "state" / "k-eval")
    run_evaluate(ctx)
    assert ("trained", "model", str(old_train)) in loads
    report = json.loads((ctx.out_dir / "report.json").read_text())
    assert list(report["variants"]) == ["finetuned", "prev"]

    bad = _ctx(tmp_path, helpers, prepare_dir, recorder, baselines=[{"name": "prev", "model": "run:20240102"}])
    bad = dataclasses.replace(bad, state_dir=store.root / "state" / "k-eval")
    with pytest.raises(StepError, match="has no finished train step"):
        run_evaluate(bad)


def test_with_the_real_loader_and_builtin_tiny(tmp_path, helpers, prepare_dir, recorder, tiny_model_dir) -> None:
    import os
    import shutil

    train = helpers.write_train_artifact(tmp_path, ModelRef(kind="local", base="builtin:tiny", path="model"))
    shutil.copytree(tiny_model_dir, train / "model")
    ctx = helpers.make_ctx(
        tmp_path,
        evaluate=helpers.evaluate_block(limit=2),
        recorder=recorder,
        inputs={"prepare": prepare_dir, "train": train},
        cache_dir=Path(os.environ["FTPIPE_CACHE"]),
    )
    run_evaluate(ctx)
    report = json.loads((ctx.out_dir / "report.json").read_text())
    ft, base = report["variants"]["finetuned"], report["variants"]["base"]
    assert ft["metrics"] == base["metrics"] and ft["tokens"] == base["tokens"]  # same weights
    assert report["variants"]["few_shot"]["metrics"]["loss"] > 0


def test_rag_latency_local_cost_and_break_even(tmp_path, helpers, prepare_dir, recorder, loads) -> None:
    import math as _math

    (tmp_path / "notes.md").write_text("Boil eggs for nine minutes. " * 3 + "Rice takes two cups of water. " * 3)
    (tmp_path / "more.jsonl").write_text(json.dumps({"text": "Pancakes get fluffy with baking powder."}) + "\n")
    ctx = _ctx(
        tmp_path,
        helpers,
        prepare_dir,
        recorder,
        metrics=["token_f1"],
        baselines=["base", "few_shot", "rag"],
        rag={"corpus": ["notes.md", "*.jsonl"], "k": 2, "chunk_size": 6},
        cost={"hourly": 3.6, "training": 0.5},
        gate=None,
    )
    run_evaluate(ctx)
    report = json.loads((ctx.out_dir / "report.json").read_text())
    assert any(line.startswith("rag: top 2 of ") and "from 2 files" in line for line in recorder.logs)
    ft, base, rag = (report["variants"][n] for n in ("finetuned", "base", "rag"))
    assert rag["tokens"]["prompt_mean"] > base["tokens"]["prompt_mean"]  # the passages are in the prompt
    for v in report["variants"].values():
        lat = v["latency"]
        assert 0 < lat["p50_s"] <= lat["p95_s"]
        # no token prices: $3.60/h x measured machine seconds per request
        assert v["cost_basis"] == "hourly"
        assert v["cost_per_1k_requests"] == pytest.approx(1000 * v["seconds_per_request"] * 3.6 / 3600)
    assert report["decision"]["training_cost_usd"] == 0.5
    comp = {c["baseline"]: c for c in report["comparisons"]}
    saving = (rag["cost_per_1k_requests"] - ft["cost_per_1k_requests"]) / 1000
    expected = _math.ceil(round(0.5 / saving, 9)) if saving > 0 else None
    assert comp["rag"]["break_even_requests"] == expected
    # 4 test rows: no interval calls a winner
    assert all(iv["verdict"] in ("inconclusive", "tie") for c in comp.values() for iv in c["intervals"].values())
    assert report["recommendation"]["line"]
    md = (ctx.out_dir / "report.md").read_text()
    assert md.splitlines()[2] == f"**Recommendation: {report['recommendation']['line']}**"
    assert "## Confidence (paired bootstrap, 95%)" in md and "## Cost" in md
