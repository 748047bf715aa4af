"""The numbers behind "should we fine-tune at all?": paired bootstrap intervals,
win/tie/loss counts, latency percentiles, cost per 1,000 requests, training cost,
break-even, and the one-line recommendation.

Everything here is pure arithmetic on per-example scores and measured times, so it is
unit-tested against hand-computed cases (tests/evaluation/test_decision.py).
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

FINETUNED = "finetuned"
# Fewer paired examples than this and no interval calls a winner.
MIN_EXAMPLES = 10
# Per-example differences smaller than this are ties (floating-point noise).
_TIE = 1e-9


# --------------------------------------------------------------------------- uncertainty


@functools.lru_cache(maxsize=4)
def resample_indices(n: int, resamples: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """``resamples`` bootstrap samples of ``range(n)`` (with replacement), reproducible by seed.
    Cached: a report draws the same ones for every baseline and metric (2000 x n draws each)."""
    rng = random.Random(seed)
    return tuple(tuple(rng.randrange(n) for _ in range(n)) for _ in range(resamples))


def percentile_interval(means: Sequence[float], confidence: float) -> tuple[float, float]:
    """The percentile interval of bootstrap means: the order statistics at
    floor(α/2·B) and ceil((1−α/2)·B)−1 (0-based) of the B sorted means, α = 1 − confidence."""
    if not means:
        raise ValueError("no bootstrap means")
    ordered = sorted(means)
    b = len(ordered)
    alpha = 1.0 - confidence
    lo = min(b - 1, max(0, math.floor(alpha / 2 * b)))
    hi = min(b - 1, max(0, math.ceil((1 - alpha / 2) * b) - 1))
    return ordered[lo], ordered[hi]


def paired_bootstrap(
    finetuned: Sequence[float],
    baseline: Sequence[float],
    *,
    higher_is_better: bool = True,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    min_examples: int = MIN_EXAMPLES,
    indices: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Paired bootstrap of mean(finetuned − baseline) over the same examples.

    Returns ``delta`` (finetuned − baseline), the interval ``low``/``high`` of that
    difference, ``wins``/``ties``/``losses`` (direction-aware, per example), and a
    ``verdict``: "tie" when every example ties, "better" or "worse" when the interval
    excludes 0, else "inconclusive" (also whenever there are fewer than ``min_examples``
    pairs), with a ``why``.
    ``indices`` replaces the random resamples (tests pass hand-made ones)."""
    if len(finetuned) != len(baseline):
        raise ValueError(f"paired scores differ in length ({len(finetuned)} vs {len(baseline)})")
    diffs = [float(a) - float(b) for a, b in zip(finetuned, baseline, strict=False)]
    n = len(diffs)
    sign = 1.0 if higher_is_better else -1.0
    wins = sum(1 for d in diffs if sign * d > _TIE)
    losses = sum(1 for d in diffs if sign * d < -_TIE)
    out: dict[str, Any] = {
        "n": n,
        "confidence": confidence,
        "resamples": 0,
        "delta": None,
        "low": None,
        "high": None,
        "wins": wins,
        "ties": n - wins - losses,
        "losses": losses,
    }
    if n == 0:
        return {**out, "verdict": "inconclusive", "why": "no paired examples"}
    out["delta"] = sum(diffs) / n
    samples = indices if indices is not None else resample_indices(n, resamples, seed)
    pick = diffs.__getitem__
    means = [sum(map(pick, sample)) / len(sample) for sample in samples if sample]
    low, high = percentile_interval(means, confidence)
    out.update(low=low, high=high, resamples=len(means))
    pct = f"{confidence * 100:g}%"
    if wins == 0 and losses == 0:
        return {**out, "verdict": "tie", "why": "every example ties"}
    if n < min_examples:
        return {
            **out,
            "verdict": "inconclusive",
            "why": f"only {n} paired examples (at least {min_examples} are needed to call a winner)",
        }
    improvement_low, improvement_high = (low, high) if higher_is_better else (-high, -low)
    if improvement_low > _TIE:
        return {**out, "verdict": "better", "why": f"the {pct} interval excludes 0"}
    if improvement_high < -_TIE:
        return {**out, "verdict": "worse", "why": f"the {pct} interval excludes 0"}
    return {**out, "verdict": "inconclusive", "why": f"the {pct} interval includes 0"}


def improvement_bounds(interval: Mapping[str, Any], higher_is_better: bool) -> tuple[float, float] | None:
    """The interval of the improvement (direction-aware: positive is better for the fine-tune)."""
    if interval.get("low") is None or interval.get("high") is None:
        return None
    low, high = float(interval["low"]), float(interval["high"])
    return (low, high) if higher_is_better else (-high, -low)


def fmt_interval(interval: Mapping[str, Any]) -> str:
    """``+0.081 [95% CI +0.032, +0.130]``"""
    if interval.get("delta") is None:
        return "n/a"
    text = f"{interval['delta']:+.3g}"
    if interval.get("low") is not None:
        text += f" [{interval['confidence'] * 100:g}% CI {interval['low']:+.3g}, {interval['high']:+.3g}]"
    return text


# --------------------------------------------------------------------------- latency and cost


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100) with linear interpolation between order statistics
    (numpy's default), None for no values."""
    if not values:
        return None
    ordered = sorted(float(v) for v in values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/mean of per-request latencies, in seconds."""
    return {
        "p50_s": percentile(seconds, 50),
        "p95_s": percentile(seconds, 95),
        "mean_s": (sum(seconds) / len(seconds)) if seconds else None,
    }


def local_cost_per_1k(seconds_per_request: float | None, hourly: float | None) -> float | None:
    """USD per 1,000 requests for a model served on a machine that costs ``hourly`` USD/h,
    from the measured machine time per request (batched throughput, not single latency)."""
    if seconds_per_request is None or hourly is None:
        return None
    return 1000.0 * seconds_per_request * hourly / 3600.0


def training_cost(
    *, usd: float | None = None, seconds: float | None = None, hourly: float | None = None
) -> float | None:
    """The fine-tune's cost: a given price (a hosted job's bill), else hours × price per hour."""
    if usd is not None:
        return float(usd)
    if seconds is None or hourly is None:
        return None
    return seconds / 3600.0 * hourly


def break_even_requests(
    training_usd: float | None, baseline_per_1k: float | None, finetuned_per_1k: float | None
) -> int | None:
    """Requests after which the fine-tune's per-request savings have paid for its training:
    ceil(training / (baseline − finetuned per request)). None when it never does (no
    savings) or a number is missing; 0 when training was free."""
    if training_usd is None or baseline_per_1k is None or finetuned_per_1k is None:
        return None
    saving = (baseline_per_1k - finetuned_per_1k) / 1000.0
    if training_usd <= 0:
        return 0
    if saving <= 0:
        return None
    # round first: 0.3 / 0.0001 is 2999.9999999999995 in binary
    return math.ceil(round(training_usd / saving, 9))


# --------------------------------------------------------------------------- recommendation


def _money(x: float | None) -> str:
    return "an unknown amount" if x is None else f"${x:.4f}"


def recommend(
    report: Mapping[str, Any],
    gate: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The cheapest variant that meets the gate, as ``{"variant", "fine_tune", "line"}``.

    With a gate: a passed gate recommends the fine-tune; a blocked one recommends the
    cheapest of the alternatives the fine-tune failed to beat ("do not fine-tune: few_shot
    is as good and costs $X per 1k requests"), or keeping the deployed model. Without a
    gate, the primary metric's intervals decide the same way. With too few test rows for
    an interval to call a winner, the line says the result is inconclusive first."""
    rec = _recommend(report, gate)
    metric = (gate or {}).get("metric") or report.get("primary_metric")
    few = [
        iv
        for c in report.get("comparisons", [])
        if (iv := (c.get("intervals") or {}).get(metric)) and str(iv.get("why", "")).startswith("only ")
    ]
    if few:
        rec = {
            **rec,
            "inconclusive": True,
            "line": f"inconclusive: {few[0]['n']} test examples are too few to call a winner "
            f"(on these numbers: {rec['line']})",
        }
    return rec


def _recommend(report: Mapping[str, Any], gate: Mapping[str, Any] | None) -> dict[str, Any]:
    variants = report.get("variants", {})
    metric = (gate or {}).get("metric") or report.get("primary_metric")
    cost = {n: v.get("cost_per_1k_requests") for n, v in variants.items()}
    ft_cost = cost.get(FINETUNED)
    if gate is not None and gate.get("metric"):
        passed = bool(gate.get("passed"))
        not_beaten = [c["baseline"] for c in gate.get("comparisons", []) if not c.get("passed")]
        skipped = [c["baseline"] for c in gate.get("comparisons", []) if c.get("skipped")]
        not_beaten = [n for n in not_beaten if n not in skipped]
    else:
        comps = report.get("comparisons", [])
        not_beaten = [
            c["baseline"] for c in comps if (c.get("intervals", {}).get(metric) or {}).get("verdict") != "better"
        ]
        passed = not not_beaten
    forgetting = list((gate or {}).get("forgetting") or [])
    if forgetting and not not_beaten:
        return {
            "variant": "base",
            "fine_tune": False,
            "line": "do not deploy this fine-tune: it loses general ability (" + forgetting[0] + ")",
        }
    if passed:
        be = [
            c.get("break_even_requests")
            for c in report.get("comparisons", [])
            if c.get("break_even_requests") is not None
        ]
        line = f"fine-tune: it meets the gate on {metric}"
        if ft_cost is not None:
            line += f" and costs {_money(ft_cost)} per 1k requests"
        if be:
            line += f" (training pays for itself after {max(be):,} requests)"
        return {"variant": FINETUNED, "fine_tune": True, "line": line}
    if "deployed" in not_beaten:
        deployed = variants.get("deployed", {}).get("metrics", {}).get(metric)
        ft = variants.get(FINETUNED, {}).get("metrics", {}).get(metric)
        line = (
            "keep the deployed model: the new fine-tune does not beat it on "
            + f"{metric} ({_num(ft)} vs {_num(deployed)})"
        )
        return {"variant": "deployed", "fine_tune": False, "line": line}
    # the cheapest alternative the fine-tune did not beat (unknown cost sorts last)
    order = sorted(not_beaten, key=lambda n: (cost.get(n) is None, cost.get(n) or 0.0))
    choice = order[0] if order else FINETUNED
    if choice == FINETUNED:
        return {"variant": FINETUNED, "fine_tune": True, "line": f"fine-tune (no alternative meets {metric})"}
    ft = variants.get(FINETUNED, {}).get("metrics", {}).get(metric)
    alt = variants.get(choice, {}).get("metrics", {}).get(metric)
    line = f"do not fine-tune: {choice} is as good ({metric} {_num(alt)} vs fine-tuned {_num(ft)})"
    if cost.get(choice) is not None:
        line += f" and costs {_money(cost.get(choice))} per 1k requests"
        if ft_cost is not None:
            line += f" (fine-tuned: {_money(ft_cost)})"
    return {"variant": choice, "fine_tune": False, "line": line}


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.4g}"
