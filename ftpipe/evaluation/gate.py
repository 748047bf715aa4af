"""The gate step: does the fine-tuned model beat the alternatives it must beat?

"Beat" is direction-aware (lower loss/perplexity is better). With ``min_delta`` 0 the
fine-tuned model must be strictly better (a tie is not a win); with ``min_delta`` > 0 it
must be better by at least that much. A failed gate is the outcome "blocked": steps after
it (deploy) are skipped and the run exits 3.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftpipe.contracts import StepContext, StepResult
from ftpipe.errors import StepError
from ftpipe.evaluation.metrics import higher_is_better

FINETUNED = "finetuned"
# Differences below this are floating-point noise (0.47 - 0.45 != 0.02 in binary).
_EPS = 1e-9


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


def check_gate(report: dict[str, Any], *, metric: str, must_beat: Sequence[str], min_delta: float = 0.0) -> dict[str, Any]:
    """The gate.json document for a report.json document."""
    hib = higher_is_better(metric)
    ft = _value(report, FINETUNED, metric)
    comparisons = []
    failures, wins = [], []
    for name in must_beat:
        base = _value(report, name, metric)
        delta = ft - base if hib else base - ft
        required = base + min_delta if hib else base - min_delta
        margin = delta - min_delta
        passed = margin > _EPS if min_delta == 0 else margin >= -_EPS
        missed_by = 0.0 if passed or margin >= 0 else -margin
        comparisons.append({
            "baseline": name, "finetuned": ft, "baseline_value": base, "delta": delta,
            "required": required, "missed_by": missed_by, "passed": passed,
        })
        if passed:
            wins.append(f"{name} {_fmt(base)} by {_fmt(delta)}")
        else:
            by = f" by {_fmt(min_delta)}" if min_delta else ""
            why = f"missed by {_fmt(missed_by)}" if missed_by > _EPS else "a tie is not a win"
            failures.append(f"{metric} {_fmt(ft)} did not beat {name} {_fmt(base)}{by} ({why})")
    direction = "" if hib else " (lower is better)"
    if failures:
        reason = "; ".join(failures) + direction
    else:
        reason = f"{metric} {_fmt(ft)} beat " + " and ".join(wins) + direction
        if min_delta:
            reason += f" (min_delta {_fmt(min_delta)})"
    return {
        "passed": not failures,
        "metric": metric,
        "higher_is_better": hib,
        "min_delta": min_delta,
        "comparisons": comparisons,
        "reason": reason,
    }


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_gate(ctx: StepContext) -> StepResult:
    """Read evaluate's report.json, write gate.json; outcome "blocked" when the gate fails."""
    evaluate = ctx.pipeline.evaluate
    gate = evaluate.gate if evaluate is not None else None
    if gate is None:
        doc: dict[str, Any] = {"passed": True, "metric": None, "min_delta": None, "comparisons": [],
                               "reason": "no gate configured"}
    else:
        report_path = Path(ctx.inputs["evaluate"]) / "report.json"
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StepError(f"gate: cannot read the evaluate report {report_path}: {exc}") from exc
        doc = check_gate(report, metric=gate.metric, must_beat=list(gate.must_beat), min_delta=float(gate.min_delta))
    _write_json(ctx.out_dir / "gate.json", doc)
    ctx.log(("gate passed: " if doc["passed"] else "gate blocked: ") + doc["reason"])
    metrics: dict[str, Any] = {"passed": doc["passed"]}
    for c in doc["comparisons"]:
        metrics[f"delta.{c['baseline']}"] = c["delta"]
    return StepResult(metrics=metrics, summary=doc["reason"], outcome="ok" if doc["passed"] else "blocked")
