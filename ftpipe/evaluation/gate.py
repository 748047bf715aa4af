"""The gate step: does the fine-tuned model beat the alternatives it must beat?

"Beat" is direction-aware (lower loss/perplexity is better). With ``min_delta`` 0 the
fine-tuned model must be strictly better (a tie is not a win); with ``min_delta`` > 0 it
must be better by at least that much. A failed gate is the outcome "blocked": steps after
it (deploy) are skipped and the run exits 3.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ftpipe.contracts import StepContext, StepResult
from ftpipe.errors import StepError
from ftpipe.evaluation.decision import (
    MIN_EXAMPLES,
    fmt_interval,
    improvement_bounds,
    paired_bootstrap,
    recommend,
)
from ftpipe.evaluation.forgetting import forgetting_failures
from ftpipe.evaluation.metrics import higher_is_better

FINETUNED = "finetuned"
# Differences below this are floating-point noise (0.47 - 0.45 != 0.02 in binary).
_EPS = 1e-9
_RESAMPLES = 2000


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _value(report: dict[str, Any], variant: str, metric: str) -> float:
    variants = report.get("variants", {})
    if variant not in variants:
        raise StepError(
            f"gate: the evaluate report has no variant {variant!r} (it has {', '.join(variants) or 'none'})",
            hint="every name in gate.must_beat must also be listed in evaluate.baselines",
        )
    metrics = variants[variant].get("metrics", {})
    if metric not in metrics:
        raise StepError(
            f"gate: metric {metric!r} was not computed by evaluate (it computed {', '.join(metrics) or 'none'})",
            hint="add the gate metric to evaluate.metrics",
        )
    value = metrics[metric]
    if value is None:
        raise StepError(
            f"gate: {variant} has no {metric} value (likelihood metrics are not available for hosted models)",
            hint="gate on a text metric such as token_f1",
        )
    return float(value)


def check_gate(
    report: dict[str, Any],
    *,
    metric: str,
    must_beat: Sequence[str],
    min_delta: float = 0.0,
    confidence: float | None = None,
    per_example: Mapping[str, Sequence[float]] | None = None,
    max_forgetting: float | None = None,
) -> dict[str, Any]:
    """The gate.json document for a report.json document. With ``confidence`` the fine-tune
    must clear ``min_delta`` with the lower bound of the paired bootstrap interval of its
    improvement (``per_example``: each variant's per-example scores on the gate metric),
    not with the point estimate; too few examples make it inconclusive, which blocks."""
    hib = higher_is_better(metric)
    ft = _value(report, FINETUNED, metric)
    comparisons: list[dict[str, Any]] = []
    failures: list[str] = []
    wins: list[str] = []
    skipped = report.get("skipped", {})
    for name in must_beat:
        if name in skipped:
            # e.g. nothing deployed yet, or the deployed model is this very fine-tune
            comparisons.append({"baseline": name, "passed": True, "skipped": True, "reason": skipped[name]})
            wins.append(f"{name} (skipped: {skipped[name]})")
            continue
        if confidence is not None:
            comp = _confident(report, name, metric, ft, hib, min_delta, confidence, per_example or {})
            comparisons.append(comp)
            (wins if comp["passed"] else failures).append(comp["text"])
            continue
        base = _value(report, name, metric)
        delta = ft - base if hib else base - ft
        required = base + min_delta if hib else base - min_delta
        margin = delta - min_delta
        passed = margin > _EPS if min_delta == 0 else margin >= -_EPS
        missed_by = 0.0 if passed or margin >= 0 else -margin
        comparisons.append(
            {
                "baseline": name,
                "finetuned": ft,
                "baseline_value": base,
                "delta": delta,
                "required": required,
                "missed_by": missed_by,
                "passed": passed,
            }
        )
        if passed:
            wins.append(f"{name} {_fmt(base)} by {_fmt(delta)}")
        else:
            by = f" by {_fmt(min_delta)}" if min_delta else ""
            why = f"missed by {_fmt(missed_by)}" if missed_by > _EPS else "a tie is not a win"
            failures.append(f"{metric} {_fmt(ft)} did not beat {name} {_fmt(base)}{by} ({why})")
    forgetting = forgetting_failures(report, max_forgetting) if max_forgetting is not None else []
    failures += forgetting
    direction = "" if hib else " (lower is better)"
    if failures:
        reason = "; ".join(failures) + direction
    else:
        reason = f"{metric} {_fmt(ft)} beat " + " and ".join(wins) + direction
        if min_delta and confidence is None:
            reason += f" (min_delta {_fmt(min_delta)})"
    if confidence is not None and not failures:
        reason += f": every {confidence * 100:g}% lower bound clears " + (
            f"min_delta {_fmt(min_delta)}" if min_delta else "0"
        )
    if confidence is not None:
        reason += f" (gate on the lower bound of the {confidence * 100:g}% paired bootstrap interval)"
    return {
        "passed": not failures,
        "metric": metric,
        "higher_is_better": hib,
        "min_delta": min_delta,
        "confidence": confidence,
        "comparisons": comparisons,
        "forgetting": forgetting,
        "reason": reason,
    }


def _confident(
    report: dict[str, Any],
    name: str,
    metric: str,
    ft: float,
    hib: bool,
    min_delta: float,
    confidence: float,
    per_example: Mapping[str, Sequence[float]],
) -> dict[str, Any]:
    """One must_beat comparison on the interval's lower bound."""
    base = _value(report, name, metric)
    if FINETUNED not in per_example or name not in per_example:
        raise StepError(
            f"gate: no per-example {metric} scores for {name!r}, so no confidence interval",
            hint="gate.confidence needs a per-example metric (token_f1, exact_match, rouge_l, loss, ...)",
        )
    iv = paired_bootstrap(
        per_example[FINETUNED],
        per_example[name],
        higher_is_better=hib,
        confidence=confidence,
        resamples=_RESAMPLES,
        seed=0,
    )
    bounds = improvement_bounds(iv, hib)
    low = bounds[0] if bounds else None
    pct = f"{confidence * 100:g}%"
    enough = iv["n"] >= MIN_EXAMPLES
    passed = enough and low is not None and (low > _EPS if min_delta == 0 else low >= min_delta - _EPS)
    need = f"min_delta {_fmt(min_delta)}" if min_delta else "0"
    if not enough:
        text = f"{metric} vs {name} is inconclusive: {iv['why']}"
    elif passed:
        text = f"{name} {_fmt(base)} by {fmt_interval(iv)}"
    else:
        missed = (min_delta - (low or 0.0)) if min_delta else -(low or 0.0)
        why = f"missed by {_fmt(missed)}" if missed > _EPS else "a tie is not a win"
        text = (
            f"{metric} {_fmt(ft)} did not beat {name} {_fmt(base)} with {pct} confidence: "
            f"{fmt_interval(iv)}, lower bound {_fmt(low or 0.0)} does not clear {need} ({why})"
        )
    return {
        "baseline": name,
        "finetuned": ft,
        "baseline_value": base,
        "delta": ft - base if hib else base - ft,
        "interval": iv,
        "improvement_low": low,
        "required": min_delta,
        "passed": passed,
        "text": text,
    }


def read_per_example(evaluate_dir: Path, metric: str) -> dict[str, list[float]]:
    """Each variant's per-example scores on ``metric`` from evaluate's predictions.jsonl
    (in example order; a variant with a missing score is left out)."""
    rows: dict[str, dict[int, float | None]] = {}
    path = evaluate_dir / "predictions.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise StepError(f"gate: cannot read {path}: {exc}") from exc
    for line in lines:
        if line.strip():
            row = json.loads(line)
            rows.setdefault(row["variant"], {})[int(row["index"])] = row.get("metrics", {}).get(metric)
    out: dict[str, list[float]] = {}
    for variant, by_index in rows.items():
        values = [by_index[i] for i in sorted(by_index)]
        if values and all(v is not None for v in values):
            out[variant] = [float(v) for v in values if v is not None]
    return out


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_gate(ctx: StepContext) -> StepResult:
    """Read evaluate's report.json, write gate.json; outcome "blocked" when the gate fails."""
    evaluate = ctx.pipeline.evaluate
    gate = evaluate.gate if evaluate is not None else None
    doc: dict[str, Any]
    if gate is None:
        doc = {"passed": True, "metric": None, "min_delta": None, "comparisons": [], "reason": "no gate configured"}
    else:
        report_path = Path(ctx.inputs["evaluate"]) / "report.json"
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StepError(f"gate: cannot read the evaluate report {report_path}: {exc}") from exc
        confidence = getattr(gate, "confidence", None)
        per_example = read_per_example(Path(ctx.inputs["evaluate"]), gate.metric) if confidence is not None else None
        doc = check_gate(
            report,
            metric=gate.metric,
            must_beat=list(gate.must_beat),
            min_delta=float(gate.min_delta),
            confidence=confidence,
            per_example=per_example,
            max_forgetting=getattr(gate, "max_forgetting", None),
        )
        doc["recommendation"] = recommend(report, doc)
        # the decision in the reason, so `ftpipe run` prints it whichever way the gate went
        doc["reason"] += f". Recommendation: {doc['recommendation']['line']}"
    _write_json(ctx.out_dir / "gate.json", doc)
    ctx.log(("gate passed: " if doc["passed"] else "gate blocked: ") + doc["reason"])
    metrics: dict[str, Any] = {"passed": doc["passed"]}
    for c in doc["comparisons"]:
        if c.get("delta") is not None:
            metrics[f"delta.{c['baseline']}"] = c["delta"]
    if doc.get("recommendation"):
        metrics["recommendation"] = doc["recommendation"]["variant"]
    return StepResult(metrics=metrics, summary=doc["reason"], outcome="ok" if doc["passed"] else "blocked")
