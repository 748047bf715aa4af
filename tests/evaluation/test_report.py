"""report.json numbers, report.md, chart.png, and comparing two runs."""

from __future__ import annotations

import json

import pytest

from ftpipe.evaluation.report import (
    VariantResult,
    build_report,
    compare_reports,
    render_comparison_markdown,
    render_markdown,
    write_report,
)

PRICES = {"finetuned": {"input": 0.3, "output": 1.2}, "base": {"input": 0.15, "output": 0.6}}
METRICS = ["token_f1", "loss"]


def results(ft_f1: float = 0.5, ft_loss: float = 1.0) -> list[VariantResult]:
    return [
        VariantResult(
            "finetuned", "local", "tiny + model", False, 10, {"token_f1": ft_f1, "loss": ft_loss}, 100.0, 20.0, 1.5
        ),
        VariantResult("base", "local", "tiny", False, 10, {"token_f1": 0.2, "loss": 2.0}, 100.0, 30.0),
        VariantResult("few_shot", "local", "tiny", True, 10, {"token_f1": 0.4, "loss": 1.5}, 400.0, 25.0),
    ]


@pytest.fixture
def rep() -> dict:
    return build_report(results(), metrics=METRICS, prices=PRICES, run_id="r1", gate_metric="token_f1")


def test_costs_and_tokens(rep: dict) -> None:
    ft, base, few = (rep["variants"][n] for n in ("finetuned", "base", "few_shot"))
    # 1000 requests * (100 * 0.3 + 20 * 1.2) / 1e6 = 0.054
    assert ft["cost_per_1k_requests"] == pytest.approx(0.054)
    # base: 1000 * (100 * 0.15 + 30 * 0.6) / 1e6 = 0.033
    assert base["cost_per_1k_requests"] == pytest.approx(0.033)
    # few_shot has no price of its own: it runs on the base model -> 1000 * (400 * 0.15 + 25 * 0.6) / 1e6
    assert few["price"] == PRICES["base"] and few["cost_per_1k_requests"] == pytest.approx(0.075)
    assert ft["tokens"] == {"prompt_mean": 100.0, "completion_mean": 20.0, "total_mean": 120.0}
    assert rep["n"] == 10 and rep["primary_metric"] == "token_f1"
    assert rep["higher_is_better"] == {"token_f1": True, "loss": False}


def test_comparisons(rep: dict) -> None:
    base, few = rep["comparisons"]
    assert base["baseline"] == "base" and few["baseline"] == "few_shot"
    assert base["deltas"] == {"token_f1": pytest.approx(0.3), "loss": pytest.approx(-1.0)}
    assert base["better"] == {"token_f1": True, "loss": True}  # lower loss is better
    assert few["tokens_saved_per_request"] == {"prompt": 300.0, "completion": 5.0, "total": 305.0}
    assert few["tokens_saved_pct"] == pytest.approx(100 * 305 / 425)
    assert few["cost_saved_per_1k_requests"] == pytest.approx(0.075 - 0.054)
    assert base["cost_saved_per_1k_requests"] == pytest.approx(0.033 - 0.054)  # negative: dearer


def test_default_price_and_no_price() -> None:
    rep = build_report(results(), metrics=METRICS, prices={"default": {"input": 1.0, "output": 2.0}})
    assert rep["variants"]["base"]["cost_per_1k_requests"] == pytest.approx(1000 * (100 + 60) / 1e6)
    bare = build_report(results(), metrics=METRICS)
    assert all(v["cost_per_1k_requests"] is None for v in bare["variants"].values())
    assert bare["comparisons"][0]["cost_saved_per_1k_requests"] is None


def test_missing_values_stay_null() -> None:
    res = results()
    res[1] = VariantResult("base", "hosted", "openai:gpt", False, 10, {"token_f1": 0.2}, 100.0, 30.0)
    rep = build_report(res, metrics=METRICS)
    assert rep["variants"]["base"]["metrics"]["loss"] is None
    assert rep["comparisons"][0]["deltas"]["loss"] is None and rep["comparisons"][0]["better"]["loss"] is None
    assert "n/a" in render_markdown(rep)


def test_markdown(rep: dict) -> None:
    md = render_markdown(rep)
    assert md.startswith("# Evaluation: did fine-tuning pay?")
    head = "| variant | model | token_f1 | loss ↓ | prompt tok/req | completion tok/req | p50 s | p95 s | $ / 1k req |"
    assert head in md
    # no latencies were measured for these hand-made results
    assert "| **finetuned** | tiny + model | 0.5000 | 1.0000 | 100.0 | 20.0 | n/a | n/a | $0.0540 |" in md
    assert "| few_shot | tiny | 0.4000 (+0.1000) | 1.5000 (-0.5000) | 400.0 | 25.0 | n/a | n/a | $0.0750 |" in md
    assert (
        "- **few_shot**: token_f1 +0.1000 (better), loss -0.5000 (better); 305.0 tokens saved per request (71.8%); $0.0210 saved per 1k requests."
        in md
    )
    # vs base: the fine-tune answers more briefly but its tokens cost more
    assert (
        "- **base**: token_f1 +0.3000 (better), loss -1.0000 (better); 10.0 tokens saved per request (7.7%); $0.0210 more per 1k requests."
        in md
    )


def test_write_report(tmp_path, rep: dict) -> None:
    write_report(tmp_path, rep)
    assert json.loads((tmp_path / "report.json").read_text()) == rep
    assert (tmp_path / "report.md").read_text() == render_markdown(rep)
    png = (tmp_path / "chart.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart.png", "report.json", "report.md"]


def test_chart_with_only_bounded_metrics(tmp_path) -> None:
    rep = build_report(results(), metrics=["token_f1"])
    write_report(tmp_path, rep)
    assert (tmp_path / "chart.png").stat().st_size > 1000


def test_compare_reports(rep: dict) -> None:
    later = build_report(results(ft_f1=0.6, ft_loss=0.8)[:2], metrics=METRICS + ["rouge_l"], run_id="r2")
    cmp = compare_reports(rep, later)
    assert cmp["a"]["run_id"] == "r1" and cmp["b"]["run_id"] == "r2"
    assert cmp["metrics"] == ["token_f1", "loss", "rouge_l"]
    assert list(cmp["variants"]) == ["finetuned", "base"] and cmp["only_in_a"] == ["few_shot"]
    f1 = cmp["variants"]["finetuned"]["metrics"]["token_f1"]
    assert f1 == {"a": 0.5, "b": 0.6, "delta": pytest.approx(0.1), "better": True}
    loss = cmp["variants"]["finetuned"]["metrics"]["loss"]
    assert loss["delta"] == pytest.approx(-0.2) and loss["better"] is True
    assert cmp["variants"]["base"]["metrics"]["token_f1"]["better"] is None  # unchanged
    assert cmp["variants"]["finetuned"]["metrics"]["rouge_l"] == {"a": None, "b": None, "delta": None, "better": None}
    assert cmp["variants"]["finetuned"]["cost_per_1k_requests"] == {"a": pytest.approx(0.054), "b": None, "delta": None}

    md = render_comparison_markdown(cmp)
    assert md.startswith("# r1 → r2")
    assert "| token_f1 | 0.5000 | 0.6000 | +0.1000 ✓ |" in md
    assert "| loss ↓ | 1.0000 | 0.8000 | -0.2000 ✓ |" in md
    assert "| prompt tok/req | 100.0 | 100.0 | +0.0 |" in md
    assert "Only in r1: few_shot" in md
    assert render_comparison_markdown(cmp, a_label="old", b_label="new").startswith("# old → new")


def test_compare_shows_each_runs_recommendation(rep: dict) -> None:
    a = {
        **rep,
        "recommendation": {"variant": "few_shot", "fine_tune": False, "line": "do not fine-tune: few_shot is as good"},
    }
    b = {
        **rep,
        "run_id": "r2",
        "recommendation": {"variant": "finetuned", "fine_tune": True, "line": "fine-tune: it meets the gate"},
    }
    cmp = compare_reports(a, b)
    assert cmp["recommendation"] == {"a": "do not fine-tune: few_shot is as good", "b": "fine-tune: it meets the gate"}
    md = render_comparison_markdown(cmp)
    assert "- Recommendation (r1): **do not fine-tune: few_shot is as good**" in md
    assert "- Recommendation (r2): **fine-tune: it meets the gate**" in md
    # reports from before the decision report have none, and show none
    assert "Recommendation" not in render_comparison_markdown(compare_reports(rep, rep))
