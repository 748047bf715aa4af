"""A real StepContext for the trl backend, with a prepared dataset cut from the quickstart's
recipes, and a recorder for its log/progress calls. Loaded by path (tests/trainers has no
__init__.py), also from the child process of the resume test."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ftpipe.contracts import StepContext
from ftpipe.spec.models import Model, TrlTrainer

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "pipelines" / "data" / "recipes.jsonl"


def recipes(n: int, offset: int = 0) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in RECIPES.read_text().splitlines()]
    return rows[offset : offset + n]


def preference(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chosen: the real answer; rejected: the next recipe's answer."""
    out = []
    for i, row in enumerate(rows):
        wrong = rows[(i + 1) % len(rows)]["messages"][-1]["content"]
        out.append(
            {
                "prompt": row["messages"][:-1],
                "chosen": [row["messages"][-1]],
                "rejected": [{"role": "assistant", "content": wrong}],
            }
        )
    return out


def write_prepared(folder: Path, method: str, n_train: int = 16, n_val: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    train, val = recipes(n_train), recipes(n_val, offset=n_train)
    if method != "sft":
        train, val = preference(train), preference(val)
    for name, rows in (("train.jsonl", train), ("validation.jsonl", val)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.steps: list[tuple[int, int | None, str]] = []

    def log(self, line: str) -> None:
        self.lines.append(line)

    def progress(self, done: int, total: int | None, what: str) -> None:
        self.steps.append((done, total, what))


def make_ctx(
    root: Path,
    *,
    method: str = "sft",
    peft: dict[str, Any] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    checkpoint: dict[str, Any] | None = None,
    resources: dict[str, Any] | None = None,
    chat_template: str | None = None,
    report_to: list[str] | None = None,
    recorder: Recorder | None = None,
    run: str = "run1",
    distributed: dict[str, Any] | None = None,
) -> StepContext:
    """A StepContext for the train step of a pipeline training ``builtin:tiny``. The state
    folder is shared across ``run`` names, as the engine does for an unchanged step."""
    recorder = recorder or Recorder()
    hp = {
        "max_steps": 4,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "max_seq_length": 256,
        "logging_steps": 1,
        "mixed_precision": "no",
    }
    hp.update(hyperparameters or {})
    trainer = TrlTrainer(
        backend="trl",
        method=method,
        peft=peft or {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        hyperparameters=hp,
        checkpoint=checkpoint or {"every_steps": 2, "keep": 2},
        seed=7,
        resources=resources or {},
        report_to=report_to or [],
        distributed=distributed or {},
    )
    model = Model(base="builtin:tiny", chat_template=chat_template)
    pipeline = SimpleNamespace(trainer=trainer, model=model)
    prepared = write_prepared(root / "prepare", method)
    out = root / run / "train"
    out.mkdir(parents=True)
    cache = Path(os.environ.get("FTPIPE_CACHE", root / "cache"))
    return StepContext(
        run_id=run,
        step_id="train",
        pipeline=pipeline,  # type: ignore[arg-type]
        pipeline_path=root / "pipeline.yaml",
        out_dir=out,
        inputs={"prepare": prepared},
        state_dir=root / "state" / "train",
        cache_dir=cache,
        log=recorder.log,
        progress=recorder.progress,
    )
