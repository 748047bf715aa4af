"""The files a user opens after a run (the evaluation report, its chart, the loss curve,
the predictions), found in the run's step artifacts, which live in hash-named folders."""

from __future__ import annotations

from pathlib import Path

# (label, step kind, file name), in the order `runs show` lists them
RUN_FILES = (
    ("report", "evaluate", "report.md"),
    ("report_json", "evaluate", "report.json"),
    ("chart", "evaluate", "chart.png"),
    ("predictions", "evaluate", "predictions.jsonl"),
    ("loss_curve", "train", "loss.png"),
    ("training_log", "train", "loss.json"),
)


def run_files(store_root: Path, record: dict) -> dict[str, Path]:
    """Label → path of each of RUN_FILES that the run's artifacts hold."""
    out: dict[str, Path] = {}
    steps = record.get("steps", {})
    for label, kind, name in RUN_FILES:
        for sid, step in steps.items():
            art = step.get("artifact")
            if (step.get("kind") or sid.split(".")[0]) != kind or not art:
                continue
            path = store_root / art / name
            if path.is_file():
                out[label] = path
                break
    return out
