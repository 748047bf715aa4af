"""Evaluation: score the fine-tuned model against its alternatives, gate on the result.

``run_evaluate`` and ``run_gate`` are the evaluate and gate steps; nothing here imports
torch, transformers, openai or matplotlib until a step runs, and the names below are
imported on first use (planning reads ``evaluation.deployed`` alone).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ftpipe.evaluation.gate import check_gate, run_gate
    from ftpipe.evaluation.metrics import BUILTIN_METRICS, MetricError, resolve_metric
    from ftpipe.evaluation.report import compare_reports, render_comparison_markdown
    from ftpipe.evaluation.step import run_evaluate

_WHERE = {
    "BUILTIN_METRICS": "metrics",
    "MetricError": "metrics",
    "check_gate": "gate",
    "compare_reports": "report",
    "render_comparison_markdown": "report",
    "resolve_metric": "metrics",
    "run_evaluate": "step",
    "run_gate": "gate",
}

__all__ = [
    "BUILTIN_METRICS",
    "MetricError",
    "check_gate",
    "compare_reports",
    "render_comparison_markdown",
    "resolve_metric",
    "run_evaluate",
    "run_gate",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"ftpipe.evaluation.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'ftpipe.evaluation' has no attribute {name!r}")
