"""The decision part of report.json / report.md: confidence intervals and win/tie/loss per
baseline and metric, local cost from measured time, training cost, break-even, and the
recommendation (see :mod:`ftpipe.evaluation.decision` for the arithmetic).

Added to report.json::

    variants.<name>.latency: {"p50_s", "p95_s", "mean_s"}, .seconds_per_request,
    .cost_basis: "tokens" | "hourly" | null
    comparisons[i].intervals: {metric: {"delta", "low", "high", "confidence", "n",
                                         "wins", "ties", "losses", "verdict", "why"}}
    comparisons[i].break_even_requests: int | null
    skipped: {baseline: why}          # listed but not scored (deployed: nothing there yet)
    decision: {"confidence", "hourly", "training_cost_usd", "training_seconds"}
    recommendation: {"variant", "fine_tune", "line"}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ftpipe.errors import StepError
from ftpipe.evaluation.decision import (
    FINETUNED,
    break_even_requests,
    fmt_interval,
    local_cost_per_1k,
    paired_bootstrap,
    recommend,
    training_cost,
)
from ftpipe.evaluation.metrics import higher_is_better


def per_example_scores(predictions: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """variant -> metric -> per-example values in example order (metrics with a missing
    value for some example are left out)."""
    raw: dict[str, dict[str, dict[int, Any]]] = {}
    for row in predictions:
        for metric, value in (row.get("metrics") or {}).items():
            raw.setdefault(row["variant"], {}).setdefault(metric, {})[int(row["index"])] = value
    out: dict[str, dict[str, list[float]]] = {}
    for variant, by_metric in raw.items():
        for metric, by_index in by_metric.items():
            values = [by_index[i] for i in sorted(by_index)]
            if values and all(v is not None for v in values):
                out.setdefault(variant, {})[metric] = [float(v) for v in values]
    return out


def _local_costs(report: dict[str, Any], hourly: float | None) -> None:
    for v in report["variants"].values():
        if v.get("cost_per_1k_requests") is not None:
            v["cost_basis"] = "tokens"
        elif v.get("kind") == "local" and hourly is not None and v.get("seconds_per_request") is not None:
            v["cost_per_1k_requests"] = local_cost_per_1k(v["seconds_per_request"], hourly)
            v["cost_basis"] = "hourly"
        else:
            v["cost_basis"] = None
    ft = report["variants"].get(FINETUNED, {})
    for c in report["comparisons"]:
        other = report["variants"][c["baseline"]].get("cost_per_1k_requests")
        mine = ft.get("cost_per_1k_requests")
        c["cost_saved_per_1k_requests"] = None if other is None or mine is None else other - mine


def add_decision(
    report: dict[str, Any],
    *,
    per_example: Mapping[str, Mapping[str, Sequence[float]]],
    cfg: Any,
    training_seconds: float | None,
    skipped: Mapping[str, str] | None = None,
    trained_tokens: int | None = None,
) -> dict[str, Any]:
    """Add intervals, costs, break-even and the recommendation to ``report`` (in place)."""
    iv_cfg = cfg.intervals
    cost_cfg = cfg.cost
    _local_costs(report, cost_cfg.hourly)
    usd = cost_cfg.training
    per_token = getattr(cost_cfg, "training_per_1m_tokens", None)
    if usd is None and per_token is not None and trained_tokens:
        usd = trained_tokens / 1e6 * per_token  # a hosted job's bill: trained tokens x price
    train_usd = training_cost(usd=usd, seconds=training_seconds, hourly=cost_cfg.hourly)
    ft_scores = per_example.get(FINETUNED, {})
    ft_cost = report["variants"].get(FINETUNED, {}).get("cost_per_1k_requests")
    for c in report["comparisons"]:
        base_scores = per_example.get(c["baseline"], {})
        c["intervals"] = {
            m: paired_bootstrap(
                ft_scores[m],
                base_scores[m],
                higher_is_better=higher_is_better(m),
                confidence=iv_cfg.confidence,
                resamples=iv_cfg.resamples,
                seed=iv_cfg.seed,
                min_examples=iv_cfg.min_examples,
            )
            for m in report["metrics"]
            if m in ft_scores and m in base_scores and len(ft_scores[m]) == len(base_scores[m])
        }
        c["break_even_requests"] = break_even_requests(
            train_usd, report["variants"][c["baseline"]].get("cost_per_1k_requests"), ft_cost
        )
    report["skipped"] = dict(skipped or {})
    report["decision"] = {
        "confidence": iv_cfg.confidence,
        "hourly": cost_cfg.hourly,
        "training_cost_usd": train_usd,
        "training_seconds": training_seconds,
        "trained_tokens": trained_tokens,
    }
    report["recommendation"] = recommend(report, _gate_doc(report, per_example, cfg))
    return report


def _gate_doc(
    report: dict[str, Any], per_example: Mapping[str, Mapping[str, Sequence[float]]], cfg: Any
) -> dict[str, Any] | None:
    """What the gate will say, so report.md's recommendation agrees with it."""
    gate = cfg.gate
    if gate is None:
        return None
    from ftpipe.evaluation.gate import check_gate

    scores = {v: s[gate.metric] for v, s in per_example.items() if gate.metric in s}
    try:
        return check_gate(
            report,
            metric=gate.metric,
            must_beat=list(gate.must_beat),
            min_delta=float(gate.min_delta),
            confidence=gate.confidence,
            per_example=scores,
            max_forgetting=gate.max_forgetting,
        )
    except StepError:
        return None


def _money(x: float | None) -> str:
    return "n/a" if x is None else f"${x:.4f}"


def render_decision(report: Mapping[str, Any]) -> list[str]:
    """Markdown lines: intervals and win/tie/loss per baseline, cost and break-even, and
    the general-ability benchmarks."""
    return _render_intervals_and_cost(report) + _render_benchmarks(report)


def _render_benchmarks(report: Mapping[str, Any]) -> list[str]:
    bench = report.get("benchmarks") or {}
    tasks = bench.get("tasks") or {}
    if not tasks and not bench.get("skipped"):
        return []
    lines = [
        "",
        "## General ability (lm-evaluation-harness)",
        "",
        "| task | metric | n | base | finetuned | Δ |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for task, t in tasks.items():
        v = t["variants"]
        delta = "n/a" if t.get("delta") is None else f"{t['delta']:+.4f}"
        lines.append(
            f"| {task} | {t['metric']} | {t.get('n') or 'n/a'} | {_num(v.get('base'))} | "
            f"{_num(v.get('finetuned'))} | {delta} |"
        )
    for name, why in (bench.get("skipped") or {}).items():
        lines.append(f"- {name}: not benchmarked ({why})")
    return lines


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _render_intervals_and_cost(report: Mapping[str, Any]) -> list[str]:
    comps = [c for c in report.get("comparisons", []) if c.get("intervals")]
    if not comps:
        return []
    conf = report.get("decision", {}).get("confidence", 0.95)
    lines = [
        "",
        f"## Confidence (paired bootstrap, {conf * 100:g}%)",
        "",
        "| baseline | metric | Δ finetuned − baseline [CI] | win / tie / loss | verdict |",
        "|---|---|---|---|---|",
    ]
    for c in comps:
        for m, iv in c["intervals"].items():
            verdict = iv["verdict"] + (f" ({iv['why']})" if iv["verdict"] == "inconclusive" else "")
            lines.append(
                f"| {c['baseline']} | {m} | {fmt_interval(iv)} | "
                f"{iv['wins']} / {iv['ties']} / {iv['losses']} | {verdict} |"
            )
    d = report.get("decision", {})
    lines += ["", "## Cost", ""]
    if d.get("hourly") is not None:
        lines.append(f"Local variants cost ${d['hourly']:g}/hour × measured time per request.")
    if d.get("trained_tokens"):
        basis = f" ({d['trained_tokens']:,} trained tokens)"
    elif d.get("training_seconds"):
        basis = f" ({d['training_seconds']:.1f} s of training)"
    else:
        basis = ""
    lines.append(f"Training cost: {_money(d.get('training_cost_usd'))}{basis}.")
    for c in report.get("comparisons", []):
        be = c.get("break_even_requests")
        text = "never (no per-request saving)" if be is None else f"after {be:,} requests"
        if c.get("cost_saved_per_1k_requests") is None:
            text = "n/a (set evaluate.cost.hourly or prices)"
        lines.append(f"- vs **{c['baseline']}**: break-even {text}")
    return lines
