"""Forgetting: general-ability checks next to the task metrics (``evaluate.benchmarks``),
run with lm-evaluation-harness (``lm-eval``) on the base and the fine-tuned model, so a
fine-tune that wins the task but loses general ability shows, and can be gated
(``gate.max_forgetting``).

ftpipe ships one small offline task, ``ftpipe_general_mini`` (30 everyday multiple-choice
questions, tasks/general_mini.*). Other tasks: a folder of lm-eval task YAMLs
(``include``, relative to the pipeline file; their data paths too), or a task of
lm-eval's own registry by name (that one downloads its data set).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftpipe.errors import MissingDependency, StepError

TASKS_DIR = Path(__file__).parent / "tasks"
SHIPPED = {"ftpipe_general_mini": ("general_mini.yaml", "general_mini.jsonl")}
# the variants whose general ability is compared (both local models of this pipeline)
BENCHMARKED = ("finetuned", "base")


@dataclass(frozen=True)
class BenchmarkSpec:
    task: str
    include: Path | None = None
    limit: int | None = None
    metric: str = "acc"


def specs_from_config(items: Sequence[Any], base_dir: Path) -> list[BenchmarkSpec]:
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(BenchmarkSpec(item))
        else:
            include = (base_dir / item.include).resolve() if item.include else None
            out.append(BenchmarkSpec(item.task, include, item.limit, item.metric))
    return out


@contextmanager
def _task_folder(specs: Sequence[BenchmarkSpec]) -> Iterator[list[str]]:
    """The include paths for lm-eval: the shipped tasks rendered with absolute data paths,
    and each spec's own folder."""
    with tempfile.TemporaryDirectory(prefix="ftpipe-tasks-") as tmp:
        for yaml_name, data_name in SHIPPED.values():
            text = (TASKS_DIR / yaml_name).read_text(encoding="utf-8")
            (Path(tmp) / yaml_name).write_text(text.replace("{data}", str(TASKS_DIR / data_name)), encoding="utf-8")
        yield [tmp, *sorted({str(s.include) for s in specs if s.include is not None})]


@contextmanager
def _quiet_and_in(folder: Path) -> Iterator[None]:
    """lm-eval logs at INFO and reads relative data paths from the working folder."""
    previous = os.getcwd()
    loggers = [logging.getLogger(n) for n in ("lm-eval", "lm_eval", "datasets", "evaluate")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
        for lg, level in zip(loggers, levels, strict=False):
            lg.setLevel(level)


def run_benchmarks(
    model: Any,
    tokenizer: Any,
    specs: Sequence[BenchmarkSpec],
    *,
    base_dir: Path,
    batch_size: int = 8,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{task: {"metric", "value", "stderr", "n", "seconds"}}`` for one loaded model."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise MissingDependency("lm-eval", "benchmarks", "evaluate.benchmarks") from None
    results: dict[str, dict[str, Any]] = {}
    with _task_folder(specs) as includes, _quiet_and_in(base_dir):
        local = set(SHIPPED)
        for folder in includes[1:]:
            local |= {p.stem for p in Path(folder).glob("*.yaml")}
        manager = TaskManager(include_path=includes, include_defaults=any(s.task not in local for s in specs))
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
        for spec in specs:
            started = time.monotonic()
            try:
                out = lm_eval.simple_evaluate(
                    model=lm, tasks=[spec.task], task_manager=manager, limit=spec.limit, log_samples=False
                )
            except (KeyError, ValueError, FileNotFoundError) as exc:
                raise StepError(
                    f"evaluate.benchmarks: lm-eval cannot run task {spec.task!r}: {exc}",
                    hint="ship the task as lm-eval YAML in a folder and name it in include",
                ) from None
            row = (out or {}).get("results", {}).get(spec.task, {})
            key = next((k for k in row if k.split(",")[0] == spec.metric), None)
            if key is None:
                raise StepError(
                    f"evaluate.benchmarks: task {spec.task!r} reports no metric {spec.metric!r} "
                    f"(it reports {', '.join(k.split(',')[0] for k in row if ',' in k) or 'nothing'})"
                )
            stderr = row.get(key.replace(",", "_stderr,", 1))
            n = ((out.get("n-samples") or {}).get(spec.task) or {}).get("effective")
            results[spec.task] = {
                "metric": spec.metric,
                "value": float(row[key]),
                "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                "n": n,
                "seconds": round(time.monotonic() - started, 3),
            }
            if log:
                log(f"benchmark {spec.task}: {spec.metric} {row[key]:.4g}")
    return results


def benchmark_section(
    per_variant: Mapping[str, Mapping[str, Mapping[str, Any]]], skipped: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """report.json ``benchmarks``: per task the value of each variant and finetuned − base."""
    tasks: dict[str, Any] = {}
    for variant, by_task in per_variant.items():
        for task, r in by_task.items():
            t = tasks.setdefault(task, {"metric": r["metric"], "n": r.get("n"), "variants": {}, "stderr": {}})
            t["variants"][variant] = r["value"]
            t["stderr"][variant] = r.get("stderr")
    for t in tasks.values():
        ft, base = t["variants"].get("finetuned"), t["variants"].get("base")
        t["delta"] = None if ft is None or base is None else ft - base
    return {"tasks": tasks, "skipped": dict(skipped or {})}


def forgetting_failures(report: Mapping[str, Any], max_forgetting: float) -> list[str]:
    """Gate reasons for each task where the fine-tune lost more than ``max_forgetting``."""
    out = []
    for task, t in ((report.get("benchmarks") or {}).get("tasks") or {}).items():
        d = t.get("delta")
        if d is not None and d < -max_forgetting - 1e-9:
            out.append(
                f"forgetting: {task} {t['metric']} fell by {-d:.4g} against the base model "
                f"({t['variants']['base']:.4g} -> {t['variants']['finetuned']:.4g}; "
                f"max_forgetting {max_forgetting:g})"
            )
    return out
