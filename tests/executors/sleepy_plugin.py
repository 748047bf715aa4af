"""A cheap trainer plugin for executor tests: sleeps, optionally fails, writes a model ref.

It is installed into a pipeline's folder as a module plus a ``.dist-info`` with an entry
point, so the same plugin machinery that loads third-party trainers loads it, both on
the client and (through the Ray job's working_dir, which is on its PYTHONPATH) on the
cluster."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from ftpipe.contracts import TrainerCaps

MODULE = "ftpipe_sleepy"


class SleepyTrainer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["sleepy"]
    caps: ClassVar[TrainerCaps] = TrainerCaps()  # local weights, needs no extras
    seconds: float = 0.0
    fail: bool = False


class SleepyBackend:
    name = "sleepy"
    config_model = SleepyTrainer

    def train(self, ctx):
        from ftpipe.contracts import ModelRef, StepResult
        from ftpipe.errors import StepError

        cfg = ctx.pipeline.trainer
        ctx.log("sleepy: training started")
        print("sleepy: training started", flush=True)
        end = time.monotonic() + cfg.seconds
        n = 0
        while time.monotonic() < end:
            time.sleep(0.2)
            n += 1
            ctx.progress(n, None, "naps")
        if cfg.fail:
            raise StepError("sleepy failed on purpose")
        (ctx.out_dir / "model").mkdir()
        (ctx.out_dir / "model" / "weights.txt").write_text("zzz\n")
        ModelRef(kind="local", base=ctx.pipeline.model.base, path="model").write(ctx.out_dir)
        return StepResult(metrics={"seconds": cfg.seconds}, summary=f"slept {cfg.seconds:g}s")


def install(folder: Path) -> None:
    """Make the plugin importable and discoverable from ``folder`` (put it on PYTHONPATH)."""
    shutil.copy(Path(__file__), folder / f"{MODULE}.py")
    dist = folder / f"{MODULE}-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {MODULE}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[ftpipe.trainers]\nsleepy = {MODULE}:SleepyBackend\n")


PIPELINE = """\
version: 1
name: {name}
dataset:
  source: {{type: local, path: data/recipes.jsonl}}
  format: chat
  split: {{validation: 0.1, test: 0.1, seed: 42}}
model:
  base: builtin:tiny
trainer:
  backend: sleepy
  seconds: {seconds}
  fail: {fail}
executor:
  type: ray
{executor_extra}"""


def write_pipeline(
    folder: Path,
    *,
    name: str = "sleepy",
    seconds: float = 0,
    fail: bool = False,
    executor_extra: str = "",
    data: Path | None = None,
) -> Path:
    """A two-step pipeline (prepare → train) using the sleepy trainer, with the plugin installed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    src = data or Path(__file__).resolve().parents[2] / "pipelines" / "data" / "recipes.jsonl"
    shutil.copy(src, folder / "data" / "recipes.jsonl")
    install(folder)
    path = folder / f"{name}.yaml"
    path.write_text(PIPELINE.format(name=name, seconds=seconds, fail=str(fail).lower(), executor_extra=executor_extra))
    return path
