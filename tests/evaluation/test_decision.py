"""The decision arithmetic against hand-computed cases: paired bootstrap intervals,
win/tie/loss, percentiles, cost per 1k requests, training cost, break-even, and the
recommendation; and the gate on an interval's lower bound."""

from __future__ import annotations

import pytest

from ftpipe.evaluation.decision import (
    break_even_requests,
    latency_summary,
    local_cost_per_1k,
    paired_bootstrap,
    percentile,
    percentile_interval,
    recommend,
    resample_indices,
    training_cost,
)
from ftpipe.evaluation.gate import check_gate

# diffs finetuned - baseline = [1, 0, 1, 0]
FT = [1.0, 0.0, 1.0, 1.0]
BASE = [0.0, 0.0, 0.0, 1.0]
# six hand-made resamples and their means of the diffs
HAND = [
    [0, 0, 0, 0],  # 1, 1, 1, 1 -> 1.0
    [1, 1, 1, 1],  # 0 -> 0.0
    [0, 1, 2, 3],  # 1, 0, 1, 0 -> 0.5
    [0, 2, 1, 3],  # -> 0.5
    [1, 3, 1, 3],  # -> 0.0
    [0, 2, 0, 1],  # 1, 1, 1, 0 -> 0.75
]


def test_bootstrap_with_hand_made_resamples() -> None:
    # sorted means [0, 0, 0.5, 0.5, 0.75, 1]; 50%: alpha/2 = 0.25 -> index floor(1.5) = 1 -> 0.0,
    # upper index ceil(4.5) - 1 = 4 -> 0.75
    iv = paired_bootstrap(FT, BASE, confidence=0.5, indices=HAND, min_examples=1)
    assert iv["delta"] == 0.5
    assert (iv["low"], iv["high"]) == (0.0, 0.75)
    assert (iv["wins"], iv["ties"], iv["losses"]) == (2, 2, 0)
    assert iv["resamples"] == 6 and iv["n"] == 4
    # the interval touches 0: no winner
    assert iv["verdict"] == "inconclusive" and iv["why"] == "the 50% interval includes 0"


def test_percentile_interval_order_statistics() -> None:
    means = [float(i) for i in range(2000)]  # B = 2000: 95% -> sorted[50], sorted[1949]
    assert percentile_interval(means, 0.95) == (50.0, 1949.0)
    assert percentile_interval([3.0, 1.0, 2.0], 0.0) == (2.0, 2.0)


def test_constant_differences_give_an_exact_interval() -> None:
    ft = [0.7] * 12
    base = [0.5] * 12
    iv = paired_bootstrap(ft, base, resamples=500, seed=3)
    assert iv["low"] == pytest.approx(0.2) and iv["high"] == pytest.approx(0.2)
    assert iv["verdict"] == "better" and iv["wins"] == 12 and iv["resamples"] == 500


def test_lower_is_better_metrics_flip_the_direction() -> None:
    iv = paired_bootstrap([1.0] * 10, [2.0] * 10, higher_is_better=False)
    assert iv["delta"] == -1.0 and (iv["low"], iv["high"]) == (-1.0, -1.0)
    assert iv["verdict"] == "better" and iv["wins"] == 10 and iv["losses"] == 0
    worse = paired_bootstrap([2.0] * 10, [1.0] * 10, higher_is_better=False)
    assert worse["verdict"] == "worse" and worse["losses"] == 10


def test_two_point_case_matches_the_exact_distribution() -> None:
    # diffs [0, 1]: bootstrap means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% quantiles are exactly 0 and 1
    iv = paired_bootstrap([0.0, 1.0], [0.0, 0.0], resamples=4000, seed=1, min_examples=1)
    assert (iv["low"], iv["high"]) == (0.0, 1.0)


def test_few_rows_are_inconclusive_even_when_every_example_wins() -> None:
    iv = paired_bootstrap([1.0] * 5, [0.0] * 5)
    assert iv["low"] == 1.0 and iv["wins"] == 5
    assert iv["verdict"] == "inconclusive"
    assert iv["why"] == "only 5 paired examples (at least 10 are needed to call a winner)"


def test_all_ties_are_a_tie() -> None:
    iv = paired_bootstrap([0.0] * 12, [0.0] * 12)
    assert iv["verdict"] == "tie" and iv["ties"] == 12 and (iv["low"], iv["high"]) == (0.0, 0.0)


def test_resamples_are_reproducible() -> None:
    assert resample_indices(5, 3, seed=7) == resample_indices.__wrapped__(5, 3, seed=7)  # cached == drawn afresh
    assert resample_indices(5, 3, seed=7) != resample_indices(5, 3, seed=8)
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_percentiles_interpolate_like_numpy() -> None:
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 50) == 10.5
    assert percentile(values, 95) == pytest.approx(19.05)  # numpy.percentile(range(1, 21), 95)
    assert percentile([], 50) is None
    assert latency_summary([0.2, 0.4]) == {
        "p50_s": pytest.approx(0.3),
        "p95_s": pytest.approx(0.39),
        "mean_s": pytest.approx(0.3),
    }


def test_cost_arithmetic() -> None:
    # 0.5 s per request on a $3.60/h machine: 1000 * 0.5 * 3.6 / 3600 = $0.50 per 1k requests
    assert local_cost_per_1k(0.5, 3.6) == pytest.approx(0.5)
    assert local_cost_per_1k(None, 3.6) is None and local_cost_per_1k(0.5, None) is None
    assert training_cost(seconds=1800, hourly=2.0) == pytest.approx(1.0)
    assert training_cost(usd=4.2, seconds=1800, hourly=2.0) == 4.2  # a hosted job's bill wins
    assert training_cost() is None


def test_break_even() -> None:
    # $0.30 of training, saving (0.15 - 0.05) / 1000 = $0.0001 per request -> 3,000 requests
    assert break_even_requests(0.30, 0.15, 0.05) == 3000
    assert break_even_requests(0.301, 0.15, 0.05) == 3010
    assert break_even_requests(0.30, 0.05, 0.05) is None  # no saving: never
    assert break_even_requests(0.30, 0.05, 0.15) is None
    assert break_even_requests(0.0, 0.05, 0.15) == 0
    assert break_even_requests(None, 0.15, 0.05) is None


def _report(**f1: float) -> dict:
    return {"variants": {n: {"metrics": {"token_f1": v}, "cost_per_1k_requests": None} for n, v in f1.items()}}


def test_gate_on_the_lower_bound() -> None:
    rep = _report(finetuned=0.6, base=0.5)
    # the mean difference 0.1 clears min_delta 0.05, but half the examples lose by 0.3
    per_example = {"finetuned": [1.0] * 5 + [0.2] * 5, "base": [0.5] * 5 + [0.5] * 5}
    point = check_gate(rep, metric="token_f1", must_beat=["base"], min_delta=0.05)
    assert point["passed"]
    sure = check_gate(
        rep, metric="token_f1", must_beat=["base"], min_delta=0.05, confidence=0.95, per_example=per_example
    )
    assert not sure["passed"]
    comp = sure["comparisons"][0]
    assert comp["improvement_low"] < 0.05 and comp["interval"]["n"] == 10
    assert "did not beat base 0.5 with 95% confidence" in sure["reason"]
    assert "does not clear min_delta 0.05" in sure["reason"]
    assert sure["reason"].endswith("(gate on the lower bound of the 95% paired bootstrap interval)")
    # every example better by 0.1: the lower bound is 0.1
    clear = check_gate(
        rep,
        metric="token_f1",
        must_beat=["base"],
        min_delta=0.05,
        confidence=0.95,
        per_example={"finetuned": [0.6] * 10, "base": [0.5] * 10},
    )
    assert clear["passed"]
    assert clear["reason"] == (
        "token_f1 0.6 beat base 0.5 by +0.1 [95% CI +0.1, +0.1]: every 95% lower bound "
        "clears min_delta 0.05 (gate on the lower bound of the 95% paired bootstrap interval)"
    )
    assert clear["comparisons"][0]["improvement_low"] == pytest.approx(0.1)


def test_gate_with_confidence_and_few_rows_is_inconclusive() -> None:
    doc = check_gate(
        _report(finetuned=1.0, base=0.0),
        metric="token_f1",
        must_beat=["base"],
        confidence=0.95,
        per_example={"finetuned": [1.0] * 4, "base": [0.0] * 4},
    )
    assert not doc["passed"]
    assert "token_f1 vs base is inconclusive: only 4 paired examples" in doc["reason"]


def test_gate_skips_a_deployed_model_that_is_not_there() -> None:
    rep = _report(finetuned=0.6, base=0.5)
    rep["skipped"] = {"deployed": "nothing deployed at /x yet"}
    doc = check_gate(rep, metric="token_f1", must_beat=["base", "deployed"])
    assert doc["passed"]
    assert doc["comparisons"][1] == {
        "baseline": "deployed",
        "passed": True,
        "skipped": True,
        "reason": "nothing deployed at /x yet",
    }


def test_recommendation_do_not_fine_tune() -> None:
    rep = _report(finetuned=0.50, base=0.20, few_shot=0.51, rag=0.50)
    rep["variants"]["few_shot"]["cost_per_1k_requests"] = 0.09
    rep["variants"]["rag"]["cost_per_1k_requests"] = 0.12
    rep["variants"]["finetuned"]["cost_per_1k_requests"] = 0.03
    gate = check_gate(rep, metric="token_f1", must_beat=["base", "few_shot", "rag"])
    rec = recommend(rep, gate)
    # the cheapest of the alternatives the fine-tune did not beat
    assert rec == {
        "variant": "few_shot",
        "fine_tune": False,
        "line": "do not fine-tune: few_shot is as good (token_f1 0.51 vs fine-tuned 0.5) and costs "
        "$0.0900 per 1k requests (fine-tuned: $0.0300)",
    }


def test_recommendation_fine_tune_with_break_even() -> None:
    rep = _report(finetuned=0.6, base=0.2)
    rep["variants"]["finetuned"]["cost_per_1k_requests"] = 0.05
    rep["comparisons"] = [{"baseline": "base", "break_even_requests": 3000}]
    rec = recommend(rep, check_gate(rep, metric="token_f1", must_beat=["base"]))
    assert rec["fine_tune"] and rec["line"] == (
        "fine-tune: it meets the gate on token_f1 and costs $0.0500 per 1k "
        "requests (training pays for itself after 3,000 requests)"
    )


def test_recommendation_keeps_a_better_deployed_model() -> None:
    rep = _report(finetuned=0.20, base=0.1, deployed=0.32)
    rec = recommend(rep, check_gate(rep, metric="token_f1", must_beat=["base", "deployed"]))
    assert rec == {
        "variant": "deployed",
        "fine_tune": False,
        "line": "keep the deployed model: the new fine-tune does not beat it on token_f1 (0.2 vs 0.32)",
    }


def test_too_few_rows_make_the_recommendation_inconclusive() -> None:
    rep = _report(finetuned=0.6, base=0.2)
    rep["comparisons"] = [{"baseline": "base", "intervals": {"token_f1": paired_bootstrap([0.6] * 4, [0.2] * 4)}}]
    rec = recommend(rep, check_gate(rep, metric="token_f1", must_beat=["base"]))
    assert rec["inconclusive"] and rec["variant"] == "finetuned"
    assert rec["line"] == (
        "inconclusive: 4 test examples are too few to call a winner "
        "(on these numbers: fine-tune: it meets the gate on token_f1)"
    )
