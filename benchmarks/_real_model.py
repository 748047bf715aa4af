"""Shared by bench_real_model.py and gpu_real_model.py: run a copy of a pipeline through
`ftpipe run` in a scratch folder (its own store and, for a cold run, its own cache) and read
back the step timings and the evaluation report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipelines" / "recipes-smollm2.yaml"
METRICS = ("token_f1", "exact_match", "rouge_l")


@dataclass
class Outcome:
    exit_code: int
    wall_s: float
    record: dict[str, Any]
    report: dict[str, Any] | None
    store: Path
    stderr: str

    def artifact(self, step: str) -> Path | None:
        rel = self.record.get("steps", {}).get(step, {}).get("artifact")
        return self.store / rel if rel else None


def copy_pipeline(source: Path, dest: Path, overrides: dict[str, Any] | None = None) -> Path:
    """``source`` and its data folder under ``dest``, with ``overrides`` (dotted keys) applied."""
    dest.mkdir(parents=True, exist_ok=True)
    if (source.parent / "data").is_dir():
        shutil.copytree(source.parent / "data", dest / "data", dirs_exist_ok=True)
    doc = yaml.safe_load(source.read_text())
    for dotted, value in (overrides or {}).items():
        node = doc
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    # outputs stay in the scratch folder
    for target in doc.get("deploy") or []:
        if target.get("type") == "local":
            target["path"] = "outputs/" + Path(str(target.get("path", "model"))).name
    path = dest / source.name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_pipeline(path: Path, *, cache: Path | None, extra_env: dict[str, str] | None = None) -> Outcome:
    """``ftpipe run --json`` on ``path`` with the store beside it; ``cache`` None keeps the
    user's ftpipe cache (a warm run), a folder makes it cold."""
    store = path.parent / ".ftpipe"
    env = dict(os.environ, FTPIPE_STORE=str(store), **(extra_env or {}))
    if cache is not None:
        env["FTPIPE_CACHE"] = str(cache)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ftpipe", "run", str(path), "--json"],
        cwd=path.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    runs = sorted((store / "runs").glob("*/run.json"))
    record = json.loads(runs[-1].read_text()) if runs else {}
    outcome = Outcome(proc.returncode, wall, record, None, store, proc.stderr)
    evaluation = outcome.artifact("evaluate")
    if evaluation is not None and (evaluation / "report.json").is_file():
        outcome.report = json.loads((evaluation / "report.json").read_text())
    return outcome


def step_table(outcome: Outcome) -> str:
    lines = ["| step | status | wall s |", "|---|---|---|"]
    for sid, step in outcome.record.get("steps", {}).items():
        lines.append(f"| {sid} | {step.get('status')} | {step.get('duration_s') or 0:.1f} |")
    lines.append(
        f"| **total** (`ftpipe run`, process start to exit) | exit {outcome.exit_code} | {outcome.wall_s:.1f} |"
    )
    return "\n".join(lines)


def evaluation_table(report: dict[str, Any]) -> str:
    variants = report["variants"]
    head = "| variant | " + " | ".join(METRICS) + " |"
    lines = [head, "|---" * (len(METRICS) + 1) + "|"]
    for name, v in variants.items():
        cells = [f"{v['metrics'].get(m):.3f}" if v["metrics"].get(m) is not None else "-" for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ft = variants.get("finetuned", {}).get("metrics", {})
    for name, v in variants.items():
        if name == "finetuned":
            continue
        deltas = []
        for m in METRICS:
            a, b = ft.get(m), v["metrics"].get(m)
            deltas.append(f"{a - b:+.3f}" if a is not None and b is not None else "-")
        lines.append(f"| finetuned − {name} | " + " | ".join(deltas) + " |")
    return "\n".join(lines)


def machine_line() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)"
