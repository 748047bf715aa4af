"""The ``trl`` trainer backend: local training with transformers + TRL + PEFT.

One process trains in this process. When ``resources`` asks for more (``gpus_per_node *
nodes > 1``) the same job runs under ``torchrun``, one process per GPU; on several nodes,
start ``ftpipe run`` on every node with ``NODE_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
set, and a ``state_dir``/run store on a shared filesystem.

Artifacts (``ctx.out_dir``): ``model/`` (adapter or full weights, tokenizer), ``model.json``,
``training_args.json``, ``loss.json`` (TRL's log history), ``loss.png``, ``metrics.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

from ftpipe.contracts import CHECKPOINTS, ModelRef, StepContext, StepResult
from ftpipe.errors import StepError
from ftpipe.spec.models import TrlTrainer
from ftpipe.trainers.trl_job import EVENT_PREFIX, TrlJob

PEFT_FIELDS = ("type", "r", "alpha", "dropout", "target_modules", "bits", "modules_to_save", "use_dora", "use_rslora")
HYPERPARAMETERS = (
    "epochs",
    "max_steps",
    "learning_rate",
    "batch_size",
    "gradient_accumulation_steps",
    "max_seq_length",
    "warmup_ratio",
    "weight_decay",
    "lr_scheduler",
    "optimizer",
    "packing",
    "gradient_checkpointing",
    "mixed_precision",
    "beta",
    "max_prompt_length",
    "logging_steps",
    "padding_free",
    "num_generations",
    "max_completion_length",
    "temperature",
    "desirable_weight",
    "undesirable_weight",
)


def _fields(block: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(block, name) for name in names if hasattr(block, name)}


def build_job(ctx: StepContext) -> TrlJob:
    """The job for this step: paths from ``ctx``, settings from the pipeline, no secrets."""
    from ftpipe.models.chat_templates import CHAT_TEMPLATES
    from ftpipe.models.loading import resolve_base

    trainer, model = ctx.pipeline.trainer, ctx.pipeline.model
    if model.chat_template is not None and model.chat_template not in CHAT_TEMPLATES:
        raise StepError(
            f"model.chat_template: unknown template {model.chat_template!r}",
            hint=f"use one of {', '.join(sorted(CHAT_TEMPLATES))}, or leave it out for the tokenizer's own",
        )
    prepared = Path(ctx.inputs["prepare"])
    if not (prepared / "train.jsonl").exists():
        raise StepError(f"the prepare artifact has no train.jsonl ({prepared})")
    validation = prepared / "validation.jsonl"
    return TrlJob(
        method=trainer.method,
        base=resolve_base(
            model.base,
            cache_dir=ctx.cache_dir,
            base_dir=ctx.base_dir,
            revision=model.revision,
            token=model.token,
            log=ctx.log,
        ),
        revision=model.revision,
        chat_template=model.chat_template,
        peft=_fields(trainer.peft, PEFT_FIELDS),
        hyperparameters=_fields(trainer.hyperparameters, HYPERPARAMETERS),
        train_file=str(prepared / "train.jsonl"),
        eval_file=str(validation) if validation.exists() and validation.stat().st_size else None,
        checkpoint_dir=str(ctx.state_dir / CHECKPOINTS),
        out_dir=str(ctx.out_dir),
        checkpoint_every=trainer.checkpoint.every_steps,
        checkpoint_keep=trainer.checkpoint.keep,
        report_to=list(trainer.report_to),
        seed=trainer.seed,
        result_file=str(ctx.state_dir / "result.json"),
        distributed=trainer.distributed.model_dump(mode="json"),
        rewards=[(r, 1.0) if isinstance(r, str) else (r.metric, r.weight) for r in trainer.rewards],
        use_vllm=trainer.use_vllm,
        use_liger_kernel=trainer.use_liger_kernel,
        explicit=sorted(trainer.hyperparameters.model_fields_set | (trainer.model_fields_set & {"use_liger_kernel"})),
        longest_row=_longest_row(prepared),
    )


def _longest_row(prepared: Path) -> int | None:
    """The longest train/validation row in tokens, from the prepare step's stats when it
    counted them with the model's tokenizer (else None: unknown)."""
    try:
        stats = json.loads((prepared / "stats.json").read_text())
        if not stats.get("tokens_exact"):
            return None
        return max(int(stats["splits"][s]["longest"]) for s in ("train", "validation") if s in stats["splits"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def process_count(resources: Any) -> tuple[int, int]:
    """``(processes per node, nodes)``; GPU count 0 means one CPU process."""
    return max(1, int(resources.gpus_per_node)), int(resources.nodes)


def launcher_command(job_file: Path, per_node: int, nodes: int) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={per_node}", f"--nnodes={nodes}"]
    if nodes == 1:
        cmd.append("--standalone")
    else:
        cmd += [
            f"--node_rank={os.environ.get('NODE_RANK', '0')}",
            f"--master_addr={os.environ.get('MASTER_ADDR', '127.0.0.1')}",
            f"--master_port={os.environ.get('MASTER_PORT', '29500')}",
        ]
    return cmd + ["-m", "ftpipe.trainers.trl_job", str(job_file)]


def _launch(ctx: StepContext, job: TrlJob, per_node: int, nodes: int) -> dict[str, Any]:
    job_file = ctx.state_dir / "job.json"
    job_file.write_text(job.to_json())
    result_file = Path(job.result_file or ctx.state_dir / "result.json")
    result_file.unlink(missing_ok=True)
    env = dict(os.environ)
    if ctx.pipeline.model.token:
        env["HF_TOKEN"] = ctx.pipeline.model.token  # never in the job file
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    cmd = launcher_command(job_file, per_node, nodes)
    ctx.log(f"launching {per_node * nodes} training processes: {' '.join(cmd[2:])}")
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith(EVENT_PREFIX):
                event = json.loads(line[len(EVENT_PREFIX) :])
                if "progress" in event:
                    ctx.progress(*event["progress"])
                elif "log" in event:
                    ctx.log(event["log"])
            elif line.strip():
                tail.append(line)
        code = proc.wait()
    if code != 0 or not result_file.exists():
        raise StepError(f"training processes exited with status {code}:\n" + "\n".join(tail))
    return json.loads(result_file.read_text())


def plot_loss(log_history: list[dict[str, Any]], dest: Path) -> None:
    # The object API draws with Agg without importing pyplot (its backends and global
    # figure registry): the same PNG bytes, a third less import time, no global state.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    for key, label in (("loss", "train loss"), ("eval_loss", "validation loss")):
        points = [(h["step"], h[key]) for h in log_history if key in h and "step" in h]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(dest)


class TrlBackend:
    """Trains with TRL's SFTTrainer, DPOTrainer, ORPOTrainer, KTOTrainer or GRPOTrainer on this machine."""

    name = "trl"
    config_model = TrlTrainer

    def train(self, ctx: StepContext) -> StepResult:
        job = build_job(ctx)
        trainer = ctx.pipeline.trainer
        if job.peft["type"] == "qlora":
            from ftpipe.trainers.trl_args import check_qlora_available

            check_qlora_available()
        if job.distributed.get("strategy") == "deepspeed":
            _check_deepspeed_available()
        per_node, nodes = process_count(trainer.resources)
        ctx.state_dir.mkdir(parents=True, exist_ok=True)
        ctx.log(f"trl {job.method}, peft {job.peft['type']}, base {ctx.pipeline.model.base}")
        if trainer.resources.workers > 1:
            from ftpipe.trainers.ray_train import train_on_ray

            result = train_on_ray(ctx, job)
        elif per_node * nodes > 1:
            result = _launch(ctx, job, per_node, nodes)
        else:
            from ftpipe.trainers.trl_job import run_job

            result = run_job(job, token=ctx.pipeline.model.token, log=ctx.log, progress=ctx.progress)
        return finish(ctx, job, result)


def _check_deepspeed_available() -> None:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise StepError(
            "trainer.distributed: deepspeed trains on CUDA GPUs, and none is visible",
            hint="use strategy: fsdp (it also runs on CPU processes) or ddp on this machine",
        )
    if importlib.util.find_spec("deepspeed") is None:
        raise StepError(
            "trainer.distributed: deepspeed needs the 'deepspeed' package, which is not installed",
            hint="pip install deepspeed",
        )


def finish(ctx: StepContext, job: TrlJob, result: dict[str, Any]) -> StepResult:
    """Write the artifact's remaining files from the job's result."""
    metrics = {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float, str, bool))}
    ModelRef(kind="local", base=ctx.pipeline.model.base, path="model", adapter=bool(result["adapter"])).write(
        ctx.out_dir
    )
    (ctx.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_loss(result["log_history"], ctx.out_dir / "loss.png")
    loss = metrics.get("train_loss")
    summary = f"{job.method} ({job.peft['type']}): {metrics.get('global_step')} steps" + (
        f", train loss {loss:.4f}" if isinstance(loss, float) else ""
    )
    if isinstance(metrics.get("reward_last"), float):
        summary += f", reward {metrics['reward_first']:.3f} -> {metrics['reward_last']:.3f}"
    return StepResult(metrics=metrics, summary=summary)
