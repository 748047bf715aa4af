"""The evaluation report: report.json (the schema below), report.md and chart.png, and the
comparison of two runs' reports (``ftpipe runs compare``).

report.json::

    {"schema_version": 1, "run_id": str, "split": "test", "n": int,
     "metrics": [name, ...], "primary_metric": name, "higher_is_better": {name: bool},
     "variants": {name: {"kind": "local"|"hosted", "model": str, "few_shot": bool, "n": int,
                         "metrics": {name: float|null},
                         "tokens": {"prompt_mean": float|null, "completion_mean": float|null,
                                    "total_mean": float|null},
                         "price": {"input": float, "output": float}|null,   # USD / 1M tokens
                         "cost_per_1k_requests": float|null, "seconds": float}},
     "comparisons": [{"baseline": name,
                      "deltas": {name: finetuned - baseline},
                      "better": {name: bool|null},          # direction-aware, strict
                      "tokens_saved_per_request": {"prompt": x, "completion": x, "total": x},
                      "tokens_saved_pct": float|null,       # of the baseline's total tokens
                      "cost_saved_per_1k_requests": float|null}]}

Metric values are means over examples, except loss (token-weighted mean negative
log-likelihood of the reference answers) and perplexity (exp(loss)).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftpipe.errors import MissingDependency
from ftpipe.evaluation.decision import latency_summary
from ftpipe.evaluation.metrics import higher_is_better

SCHEMA_VERSION = 1
FINETUNED = "finetuned"


@dataclass(frozen=True)
class VariantResult:
    name: str
    kind: str
    model: str
    few_shot: bool
    n: int
    metrics: Mapping[str, float | None]
    prompt_tokens_mean: float | None
    completion_tokens_mean: float | None
    seconds: float = 0.0
    latencies: tuple[float, ...] = ()  # per request, seconds
    generation_seconds: float | None = None  # answering only (no scoring): the serving cost


def price_for(name: str, prices: Mapping[str, Mapping[str, float]]) -> dict[str, float] | None:
    """A variant's price: its own, the base model's for few_shot and rag, else ``default``."""
    for key in (name, "base" if name in ("few_shot", "rag") else None, "default"):
        if key and key in prices:
            return {"input": float(prices[key]["input"]), "output": float(prices[key]["output"])}
    return None


def cost_per_1k(
    prompt_mean: float | None, completion_mean: float | None, price: Mapping[str, float] | None
) -> float | None:
    if price is None or prompt_mean is None:
        return None
    return 1000 * (prompt_mean * price["input"] + (completion_mean or 0.0) * price["output"]) / 1e6


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _total(prompt: float | None, completion: float | None) -> float | None:
    return None if prompt is None else prompt + (completion or 0.0)


def build_report(
    results: Sequence[VariantResult],
    *,
    metrics: Sequence[str],
    prices: Mapping[str, Mapping[str, float]] | None = None,
    split: str = "test",
    run_id: str = "",
    gate_metric: str | None = None,
) -> dict[str, Any]:
    """The report.json document for the scored variants (fine-tuned first)."""
    prices = prices or {}
    variants: dict[str, Any] = {}
    for r in results:
        price = price_for(r.name, prices)
        variants[r.name] = {
            "kind": r.kind,
            "model": r.model,
            "few_shot": r.few_shot,
            "n": r.n,
            "metrics": {m: r.metrics.get(m) for m in metrics},
            "tokens": {
                "prompt_mean": r.prompt_tokens_mean,
                "completion_mean": r.completion_tokens_mean,
                "total_mean": _total(r.prompt_tokens_mean, r.completion_tokens_mean),
            },
            "price": price,
            "cost_per_1k_requests": cost_per_1k(r.prompt_tokens_mean, r.completion_tokens_mean, price),
            "seconds": round(r.seconds, 3),
            # machine time per answer (batched): what serving a request costs
            "seconds_per_request": (r.generation_seconds / r.n) if r.n and r.generation_seconds is not None else None,
            "latency": latency_summary(r.latencies),
        }
    comparisons = []
    ft = variants.get(FINETUNED)
    if ft is not None:
        for name, v in variants.items():
            if name != FINETUNED:
                comparisons.append(_comparison(name, ft, v, metrics))
    primary = gate_metric or next((m for m in metrics if m not in ("loss", "perplexity")), metrics[0])
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "split": split,
        "n": max((r.n for r in results), default=0),
        "metrics": list(metrics),
        "primary_metric": primary,
        "higher_is_better": {m: higher_is_better(m) for m in metrics},
        "variants": variants,
        "comparisons": comparisons,
    }


def _comparison(name: str, ft: dict, base: dict, metrics: Sequence[str]) -> dict[str, Any]:
    deltas = {m: _sub(ft["metrics"][m], base["metrics"][m]) for m in metrics}
    better = {m: None if d is None else (d > 0 if higher_is_better(m) else d < 0) for m, d in deltas.items()}
    ftt, bt = ft["tokens"], base["tokens"]
    saved = {
        "prompt": _sub(bt["prompt_mean"], ftt["prompt_mean"]),
        "completion": _sub(bt["completion_mean"], ftt["completion_mean"]),
        "total": _sub(bt["total_mean"], ftt["total_mean"]),
    }
    pct = 100 * saved["total"] / bt["total_mean"] if saved["total"] is not None and bt["total_mean"] else None
    return {
        "baseline": name,
        "deltas": deltas,
        "better": better,
        "tokens_saved_per_request": saved,
        "tokens_saved_pct": pct,
        "cost_saved_per_1k_requests": _sub(base["cost_per_1k_requests"], ft["cost_per_1k_requests"]),
    }


# --------------------------------------------------------------------------- rendering


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _signed(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:+.{digits}f}"


def _money(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"-${-x:.4f}" if x < 0 else f"${x:.4f}"


def _tok(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: variants × metrics (baseline cells show finetuned − baseline), tokens, cost."""
    metrics = report["metrics"]
    variants = report["variants"]
    hib = report["higher_is_better"]
    primary = report["primary_metric"]
    lines = [
        "# Evaluation: did fine-tuning pay?",
        "",
        *([f"**Recommendation: {report['recommendation']['line']}**", ""] if report.get("recommendation") else []),
        f"{report['n']} examples from the `{report['split']}` split"
        + (f" (run `{report['run_id']}`)" if report.get("run_id") else "")
        + f". Primary metric: **{primary}**"
        + (" (higher is better)." if hib.get(primary, True) else " (lower is better)."),
        "Baseline cells show Δ = finetuned − baseline in brackets.",
        "",
    ]
    head = ["variant", "model"] + [m + ("" if hib[m] else " ↓") for m in metrics]
    head += ["prompt tok/req", "completion tok/req", "p50 s", "p95 s", "$ / 1k req"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
    deltas = {c["baseline"]: c["deltas"] for c in report["comparisons"]}
    for name, v in variants.items():
        cells = [f"**{name}**" if name == FINETUNED else name, _md_cell(v["model"])]
        for m in metrics:
            cell = _num(v["metrics"][m])
            if name in deltas and deltas[name][m] is not None:
                cell += f" ({_signed(deltas[name][m])})"
            cells.append(cell)
        lat = v.get("latency") or {}
        cells += [
            _tok(v["tokens"]["prompt_mean"]),
            _tok(v["tokens"]["completion_mean"]),
            _num(lat.get("p50_s"), 3),
            _num(lat.get("p95_s"), 3),
            _money(v["cost_per_1k_requests"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if report["comparisons"]:
        lines += ["", "## Fine-tuned vs each baseline", ""]
        for c in report["comparisons"]:
            lines.append(f"- **{c['baseline']}**: " + _comparison_sentence(c, metrics, primary))
    for name, why in (report.get("skipped") or {}).items():
        lines.append(f"- **{name}**: not scored ({why})")
    from ftpipe.evaluation.decision_report import render_decision

    lines += render_decision(report)
    return "\n".join(lines) + "\n"


def _comparison_sentence(c: dict[str, Any], metrics: Sequence[str], primary: str) -> str:
    parts = []
    for m in metrics:
        d = c["deltas"][m]
        if d is None:
            continue
        verdict = {True: "better", False: "not better", None: ""}[c["better"][m]]
        parts.append(f"{m} {_signed(d)} ({verdict})")
    text = ", ".join(parts) if parts else "no comparable metrics"
    saved = c["tokens_saved_per_request"]["total"]
    if saved is not None:
        pct = c["tokens_saved_pct"]
        share = f" ({abs(pct):.1f}%)" if pct is not None else ""
        word = "saved" if saved >= 0 else "more"
        text += f"; {abs(saved):.1f} tokens {word} per request{share}"
    cost = c["cost_saved_per_1k_requests"]
    if cost is not None:
        text += f"; {_money(abs(cost))} {'saved' if cost >= 0 else 'more'} per 1k requests"
    return text + "."


def write_chart(report: dict[str, Any], path: Path) -> None:
    """A grouped bar chart: metrics on the x axis, one bar per variant (loss-like metrics apart)."""
    try:  # the object API draws with Agg without importing pyplot (same PNG, faster import)
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependency("matplotlib", "train", "the evaluation chart") from None

    variants = list(report["variants"])
    # Loss and perplexity live on their own scales, so each gets its own axes.
    groups = [[m for m in report["metrics"] if report["higher_is_better"][m]]]
    groups += [[m] for m in report["metrics"] if not report["higher_is_better"][m]]
    groups = [g for g in groups if g] or [[]]
    fig = Figure(figsize=(4 + 2.2 * len(report["metrics"]), 4.2))
    axes = fig.subplots(1, len(groups), squeeze=False)
    width = 0.8 / max(1, len(variants))
    for ax, group in zip(axes[0], groups, strict=True):
        for i, name in enumerate(variants):
            values = [report["variants"][name]["metrics"].get(m) for m in group]
            xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(group))]
            bars = ax.bar(xs, [0.0 if v is None else v for v in values], width, label=name)
            for bar, v in zip(bars, values, strict=True):
                ax.annotate(
                    "n/a" if v is None else f"{v:.2f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.set_xticks(range(len(group)))
        ax.set_xticklabels([m if report["higher_is_better"][m] else f"{m} (lower is better)" for m in group])
        if not group:
            ax.text(0.5, 0.5, "no metrics", ha="center", va="center", transform=ax.transAxes)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{report['split']} split, n={report['n']}")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    os.replace(tmp, path)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(out_dir: Path, report: dict[str, Any]) -> None:
    """report.json, report.md and chart.png in ``out_dir``."""
    out_dir = Path(out_dir)
    _atomic_write(out_dir / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _atomic_write(out_dir / "report.md", render_markdown(report))
    write_chart(report, out_dir / "chart.png")


# --------------------------------------------------------------------------- two runs


def _triple(a: float | None, b: float | None) -> dict[str, float | None]:
    return {"a": a, "b": b, "delta": _sub(b, a)}


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Variant-by-variant comparison of two report.json documents (delta = b − a)."""
    metrics = list(a.get("metrics", [])) + [m for m in b.get("metrics", []) if m not in a.get("metrics", [])]
    hib = {**a.get("higher_is_better", {}), **b.get("higher_is_better", {})}
    va, vb = a.get("variants", {}), b.get("variants", {})
    common = [n for n in va if n in vb]
    variants: dict[str, Any] = {}
    for name in common:
        x, y = va[name], vb[name]
        rows = {}
        for m in metrics:
            t = _triple(x["metrics"].get(m), y["metrics"].get(m))
            d = t["delta"]
            t["better"] = None if d is None or d == 0 else (d > 0) == hib.get(m, higher_is_better(m))
            rows[m] = t
        variants[name] = {
            "model": {"a": x.get("model"), "b": y.get("model")},
            "metrics": rows,
            "prompt_tokens_mean": _triple(x["tokens"]["prompt_mean"], y["tokens"]["prompt_mean"]),
            "completion_tokens_mean": _triple(x["tokens"]["completion_mean"], y["tokens"]["completion_mean"]),
            "cost_per_1k_requests": _triple(x.get("cost_per_1k_requests"), y.get("cost_per_1k_requests")),
        }
    return {
        "a": {"run_id": a.get("run_id", ""), "n": a.get("n"), "split": a.get("split")},
        "b": {"run_id": b.get("run_id", ""), "n": b.get("n"), "split": b.get("split")},
        "metrics": metrics,
        "higher_is_better": {m: hib.get(m, higher_is_better(m)) for m in metrics},
        "variants": variants,
        "recommendation": {
            "a": (a.get("recommendation") or {}).get("line"),
            "b": (b.get("recommendation") or {}).get("line"),
        },
        "only_in_a": [n for n in va if n not in vb],
        "only_in_b": [n for n in vb if n not in va],
    }


def render_comparison_markdown(
    comparison: dict[str, Any], a_label: str | None = None, b_label: str | None = None
) -> str:
    """A markdown table per variant: metric, A, B, Δ (B − A)."""
    a_label = a_label or comparison["a"]["run_id"] or "A"
    b_label = b_label or comparison["b"]["run_id"] or "B"
    lines = [f"# {a_label} → {b_label}", ""]
    rec = comparison.get("recommendation") or {}
    for label, key in ((a_label, "a"), (b_label, "b")):
        if rec.get(key):
            lines.append(f"- Recommendation ({label}): **{rec[key]}**")
    if any(rec.values()):
        lines.append("")
    ca, cb = comparison["a"], comparison["b"]
    if (ca["n"], ca["split"]) != (cb["n"], cb["split"]):
        lines += [f"Note: scored on different data ({ca['split']} n={ca['n']} vs {cb['split']} n={cb['n']}).", ""]
    for name, v in comparison["variants"].items():
        model = v["model"]
        lines.append(f"## {name}" + (f" ({model['a']} → {model['b']})" if model["a"] != model["b"] else ""))
        lines += ["", f"| metric | {a_label} | {b_label} | Δ |", "|---|---:|---:|---:|"]
        for m, t in v["metrics"].items():
            mark = {True: " ✓", False: " ✗", None: ""}[t["better"]]
            label = m + ("" if comparison["higher_is_better"][m] else " ↓")
            lines.append(f"| {label} | {_num(t['a'])} | {_num(t['b'])} | {_signed(t['delta'])}{mark} |")
        for key, label, fmt in (
            ("prompt_tokens_mean", "prompt tok/req", _tok),
            ("completion_tokens_mean", "completion tok/req", _tok),
            ("cost_per_1k_requests", "$ / 1k req", _money),
        ):
            t = v[key]
            if t["a"] is None and t["b"] is None:
                continue
            delta = "n/a" if t["delta"] is None else (f"{t['delta']:+.1f}" if fmt is _tok else _money(t["delta"]))
            lines.append(f"| {label} | {fmt(t['a'])} | {fmt(t['b'])} | {delta} |")
        lines.append("")
    for key, label in (("only_in_a", a_label), ("only_in_b", b_label)):
        if comparison[key]:
            lines.append(f"Only in {label}: {', '.join(comparison[key])}")
    return "\n".join(lines).rstrip() + "\n"
