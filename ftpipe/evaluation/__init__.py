"""Evaluation: score the fine-tuned model against its alternatives, gate on the result.

``run_evaluate`` and ``run_gate`` are the evaluate and gate steps; nothing here imports
torch, transformers, openai or matplotlib until a step runs.
"""

from __future__ import annotations

from ftpipe.evaluation.gate import check_gate, run_gate
from ftpipe.evaluation.metrics import BUILTIN_METRICS, MetricError, resolve_metric
from ftpipe.evaluation.report import compare_reports, render_comparison_markdown
from ftpipe.evaluation.step import run_evaluate

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
