"""Multi-worker training on Ray Train (``executor: ray`` with ``trainer.resources.workers > 1``).

The train step runs inside the pipeline's Ray job; it starts a ``TorchTrainer`` with one
TRL training loop per worker (``ScalingConfig`` from ``trainer.resources``: GPUs when
``gpus_per_node`` > 0, else CPU workers over gloo) and the sharding strategy of
``trainer.distributed``. Checkpoints go through Ray Train to ``RunConfig.storage_path``
(the executor's ``storage``, which must be shared by every node, or the step's state folder
on a one-node cluster); ``FailureConfig(max_failures)`` restarts the workers from the latest
reported checkpoint when one dies, and a rerun of the step after the whole run died
continues the same Ray Train run (same name and storage: Ray Train restores it).

The final model is reported by rank 0 as the last checkpoint and copied into the step's
artifact, so it arrives wherever the driver runs, whatever node trained it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ftpipe.contracts import StepContext
from ftpipe.errors import MissingDependency, StepError
from ftpipe.trainers.trl_job import TrlJob

FINAL = "ftpipe-final"  # the folder in the last checkpoint that holds the trained model
STARTS = "ftpipe_starts.json"  # in every checkpoint: the global step each attempt started at


def storage_path(ctx: StepContext) -> str:
    """Where Ray Train keeps checkpoints: the executor's storage (shared), else this step's
    state folder (a one-node cluster shares it)."""
    storage = getattr(ctx.pipeline.executor, "storage", None)
    if storage and "://" in storage:
        return storage.rstrip("/") + "/ray-train"
    if storage:
        return str(Path(storage).expanduser().resolve() / "ray-train")
    return str((ctx.state_dir / "ray-train").resolve())


def train_on_ray(ctx: StepContext, job: TrlJob) -> dict[str, Any]:
    """Train ``job`` with ``trainer.resources.workers`` Ray Train workers; returns the
    result of rank 0 (metrics, log history, adapter) with ``model/`` etc. in ``ctx.out_dir``."""
    try:
        import ray
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError:
        raise MissingDependency("ray[train]", "ray", "multi-worker training (trainer.resources.workers > 1)") from None

    res = ctx.pipeline.trainer.resources
    use_gpu = res.gpus_per_node > 0
    per_worker: dict[str, float] = {"CPU": float(res.cpus_per_worker)}
    if use_gpu:
        per_worker["GPU"] = 1.0
    name = f"ftpipe-{ctx.pipeline.name}-{(ctx.cache_key or ctx.state_dir.name)[:16]}"
    storage = storage_path(ctx)
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", log_to_driver=False)
    ctx.log(
        f"Ray Train: {res.workers} {'GPU' if use_gpu else 'CPU'} workers "
        f"({job.distributed.get('strategy', 'ddp')}), max_failures {res.max_failures}, checkpoints in "
        f"{storage}/{name}"
    )
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"job": job.to_json(), "token_env": "HF_TOKEN"},
        scaling_config=ScalingConfig(num_workers=res.workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=res.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=max(2, job.checkpoint_keep + 1)),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # noqa: BLE001 - Ray wraps the workers' errors; report the root
        raise StepError(
            f"Ray Train failed after {res.max_failures} restart(s) allowed: {_root_message(exc)}",
            hint="the workers' logs are in the Ray dashboard (Jobs → this run → Logs); raise "
            "trainer.resources.max_failures to tolerate more worker failures",
        ) from None
    if result.checkpoint is None:
        raise StepError("Ray Train finished without reporting the trained model")
    with result.checkpoint.as_directory() as folder:
        final = Path(folder) / FINAL
        if not (final / "result.json").exists():
            raise StepError(f"the last Ray Train checkpoint has no trained model ({folder})")
        out = Path(ctx.out_dir)
        for item in final.iterdir():
            if item.name == "result.json":
                continue
            dest = out / item.name
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, dest)
        outcome = json.loads((final / "result.json").read_text())
    starts = outcome.pop("starts", [0])
    outcome["metrics"]["ray_workers"] = res.workers
    outcome["metrics"]["restarts"] = max(0, len(starts) - 1)
    outcome["metrics"]["restarted_at_steps"] = ",".join(str(s) for s in starts[1:])
    if len(starts) > 1:
        ctx.log(
            f"Ray Train restarted the workers {len(starts) - 1} time(s), from the checkpoints at steps "
            f"{', '.join(str(s) for s in starts[1:])}"
        )
    return outcome


def _root_message(exc: BaseException) -> str:
    seen = exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    return (text[-1] if text else type(seen).__name__)[:500]


# --------------------------------------------------------------------------- on each worker


def _worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: the TRL job with Ray Train's checkpoint in and out."""
    import ray.train
    from ray.train import Checkpoint
    from ray.train.huggingface.transformers import (
        RayTrainReportCallback,
        prepare_trainer,
    )

    from ftpipe.trainers.trl_job import run_job

    context = ray.train.get_context()
    rank = context.get_world_rank()
    work = Path(tempfile.mkdtemp(prefix=f"ftpipe-ray-rank{rank}-"))
    job = TrlJob.from_json(config["job"])
    # worker-local folders: Ray Train persists what matters (checkpoints, the final model)
    job = TrlJob(
        **{
            **json.loads(job.to_json()),
            "checkpoint_dir": str(work / "checkpoints"),
            "out_dir": str(work / "out"),
            "result_file": None,
        }
    )
    Path(job.out_dir).mkdir(parents=True)
    resume: Path | None = None
    starts: list[int] = []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            shutil.copytree(Path(folder) / RayTrainReportCallback.CHECKPOINT_NAME, work / "resume")
        resume = work / "resume"
        starts = json.loads((resume / STARTS).read_text()) if (resume / STARTS).exists() else [0]
    step0 = int(json.loads((resume / "trainer_state.json").read_text())["global_step"]) if resume else 0
    starts = [*starts, step0] if resume else [0]

    result = run_job(
        job,
        token=os.environ.get(config["token_env"]) or None,
        log=_quiet,
        progress=_no_progress,
        callbacks=[_starts_callback(starts), RayTrainReportCallback()],
        wrap=prepare_trainer,
        resume_from=resume,
    )
    final_root = work / "final"
    if rank == 0:
        final = final_root / FINAL
        shutil.copytree(job.out_dir, final)
        (final / "result.json").write_text(json.dumps({**result, "starts": starts}) + "\n")
        ray.train.report(
            {"global_step": result["metrics"].get("global_step", 0), "final": 1},
            checkpoint=Checkpoint.from_directory(str(final_root)),
        )
    else:
        ray.train.report({"global_step": result["metrics"].get("global_step", 0), "final": 1})


def _starts_callback(starts: list[int]) -> Any:
    """Writes the attempts' start steps into each checkpoint before Ray Train takes it."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint

    class Starts(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            last = get_last_checkpoint(args.output_dir)
            if last is not None and state.is_world_process_zero:
                Path(last, STARTS).write_text(json.dumps(starts))

    return Starts()


def _quiet(line: str) -> None:
    print(line, flush=True)  # the worker's log (Ray dashboard)


def _no_progress(done: int, total: int | None, what: str) -> None:
    return None
