"""One TRL training job: in-process, or one process per GPU under torchrun.

    python -m ftpipe.trainers.trl_job JOB.json     # what the launcher runs on every rank

The job file holds no secret: a Hub token reaches the processes as ``HF_TOKEN``. Rank 0
reports progress and log lines on stdout as ``@ftpipe {json}`` lines, which the parent
turns into ``ctx.progress`` / ``ctx.log`` calls, and writes the result to ``result_file``.

Checkpoints go to ``checkpoint_dir``; a job that finds one there resumes from the newest
complete checkpoint (model, optimizer, scheduler, RNG and trainer state), so a job killed
with SIGKILL continues where its last checkpoint left it and the global step keeps counting.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EVENT_PREFIX = "@ftpipe "
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class TrlJob:
    method: str  # sft | dpo | orpo | kto | grpo
    base: str  # resolved: a local folder or a Hub id
    peft: dict[str, Any]  # type, r, alpha, dropout, target_modules, bits
    hyperparameters: dict[str, Any]  # the trainer block's hyperparameters, by ftpipe's names
    train_file: str
    checkpoint_dir: str
    out_dir: str  # model/, training_args.json, loss.json
    eval_file: str | None = None
    revision: str | None = None
    chat_template: str | None = None
    checkpoint_every: int | None = 50
    checkpoint_keep: int = 2
    report_to: list[str] = field(default_factory=list)
    seed: int = 42
    result_file: str | None = None
    distributed: dict[str, Any] = field(default_factory=dict)  # strategy + options (ftpipe.trainers.distributed)
    rewards: list[tuple[str, float]] = field(default_factory=list)  # grpo: (metric name, weight)
    use_vllm: bool | str = "auto"
    use_liger_kernel: bool = False
    explicit: list[str] = field(default_factory=list)  # trainer settings the pipeline wrote (vs defaults)
    longest_row: int | None = None  # the longest training/validation row in tokens, when counted exactly

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TrlJob:
        return cls(**json.loads(text))


def _is_complete(folder: Path) -> bool:
    # trainer_state.json is written last; a kill during a save leaves a folder without it.
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return "global_step" in state and (folder / "optimizer.pt").exists()


def _checkpoint_step(folder: Path) -> int:
    return int(json.loads((folder / "trainer_state.json").read_text())["global_step"])


def latest_checkpoint(checkpoint_dir: Path, *, prune: bool = False) -> Path | None:
    """The newest complete ``checkpoint-N`` folder. With ``prune``, newer incomplete ones
    (a save cut short by a kill) are deleted so checkpoint rotation never counts them."""
    if not checkpoint_dir.is_dir():
        return None
    found = sorted(
        ((int(m.group(1)), p) for p in checkpoint_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()),
        reverse=True,
    )
    for _, folder in found:
        if _is_complete(folder):
            return folder
        if prune:
            shutil.rmtree(folder, ignore_errors=True)
    return None


def _progress_callback(log: Callable[[str], None], progress: Callable[[int, int | None, str], None]) -> Any:
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                progress(state.global_step, state.max_steps or None, "train")

        def on_step_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                progress(state.global_step, state.max_steps or None, "train")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items())
                log(f"step {state.global_step}/{state.max_steps}: {shown}")

    return ProgressCallback()


def _no_final_checkpoint() -> Any:
    """transformers also saves a checkpoint when training ends off the checkpoint interval.
    The finished model is saved to ``out_dir`` right after, so that checkpoint (weights plus
    optimizer state, about three times the model) would only cost time and disk. A kill still
    resumes from the last checkpoint on the interval."""
    from transformers import TrainerCallback

    class NoFinalCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            on_interval = state.save_steps > 0 and state.global_step % state.save_steps == 0
            if state.global_step >= state.max_steps and not on_interval:
                control.should_save = False

    return NoFinalCheckpoint()


def _load_model(
    job: TrlJob, *, token: str | None, bf16: bool, attn_implementation: str | None = None
) -> tuple[Any, Any, list[int]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftpipe.models.chat_templates import apply_chat_template_choice
    from ftpipe.trainers.trl_args import quantization_config

    quant = quantization_config(job, bf16=bf16)
    options: dict[str, Any] = {"revision": job.revision, "token": token}
    if quant is not None:
        # Each rank keeps its whole quantised copy on its own GPU.
        options |= {
            "quantization_config": quant,
            "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))},
            "dtype": torch.bfloat16 if bf16 else torch.float16,
        }
    else:
        options["dtype"] = torch.float32  # master weights in fp32; autocast does the mixed precision
    tokenizer = AutoTokenizer.from_pretrained(job.base, revision=job.revision, token=token)
    if attn_implementation is None:
        model = AutoModelForCausalLM.from_pretrained(job.base, **options)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(job.base, attn_implementation=attn_implementation, **options)
        except (ValueError, ImportError):  # an architecture without it: transformers' own choice
            model = AutoModelForCausalLM.from_pretrained(job.base, **options)
    added = apply_chat_template_choice(model, tokenizer, job.chat_template)
    return model, tokenizer, added


@contextmanager
def _env_default(name: str, value: str) -> Iterator[None]:
    """``name=value`` in the environment for the block, unless the user set it."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _quiet_progress_bars() -> None:
    # datasets' per-map progress bars would flood ftpipe's output; progress has its callback.
    try:
        from datasets.utils.logging import disable_progress_bar
    except ImportError:  # pragma: no cover
        return
    disable_progress_bar()


def _peak_memory() -> dict[str, int]:
    """This process's peak memory: GPU memory allocated on its device, and resident RAM."""
    import resource

    import torch

    out = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available():
        out["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated())
    return out


def _count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def run_job(
    job: TrlJob,
    *,
    token: str | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int | None, str], None] = lambda done, total, what: None,
    callbacks: Sequence[Any] = (),
    wrap: Callable[[Any], Any] | None = None,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Train; write ``model/``, ``training_args.json`` and ``loss.json`` into ``out_dir``.
    Returns ``{"metrics": ..., "log_history": [...], "adapter": bool}``.

    ``callbacks`` join the trainer's, ``wrap`` may replace the trainer before it trains and
    ``resume_from`` names the checkpoint to continue from (else the newest one in
    ``checkpoint_dir``): how Ray Train workers plug in (ftpipe.trainers.ray_train)."""
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    from ftpipe.heap import frozen_heap
    from ftpipe.trainers import trl_args
    from ftpipe.trainers.cpu_threads import BusyElsewhere, choose_cpu_threads
    from ftpipe.trainers.trl_data import load_split

    if job.peft["type"] == "qlora":
        trl_args.check_qlora_available()
    trl_args.check_report_to(job.report_to)
    set_seed(job.seed)
    cpu_load = BusyElsewhere()  # measured while the model and data load; decided before training
    _quiet_progress_bars()
    speed = trl_args.speed_settings(
        trl_args.Capabilities.detect(),
        method=job.method,
        hyperparameters=job.hyperparameters,
        explicit=set(job.explicit),
        longest_row=job.longest_row,
    )
    fp16, bf16 = speed.config["fp16"], speed.config["bf16"]
    train = load_split(Path(job.train_file), job.method)
    if train is None:
        from ftpipe.errors import StepError

        raise StepError(f"{job.train_file}: no training examples")
    # GRPO would sample num_generations answers per validation prompt; evaluate scores the model instead.
    evaluation = load_split(Path(job.eval_file), job.method) if job.eval_file and job.method != "grpo" else None
    args, warnings = trl_args.training_config(job, fp16=fp16, bf16=bf16, speed=speed.config)
    for warning in warnings:
        log(f"warning: {warning}")
    if len(speed.config) > 2 or speed.attn_implementation:
        chosen = {k: v for k, v in speed.config.items() if v is not False} | {"attention": speed.attn_implementation}
        log("GPU defaults: " + ", ".join(f"{k}={v}" for k, v in chosen.items()))
    model, tokenizer, added = _load_model(job, token=token, bf16=bf16, attn_implementation=speed.attn_implementation)
    if added:
        log(f"chat template {job.chat_template}: added tokens {added} (their embeddings are trained)")

    # TensorBoard reads its folder when the trainer is built; unset, it writes to ./runs in
    # whatever folder ftpipe was started from.
    extra: dict[str, Any] = {}
    if job.method == "grpo":
        from ftpipe.trainers.rewards import reward_functions

        extra["reward_funcs"] = reward_functions([name for name, _ in job.rewards])
    with _env_default("TENSORBOARD_LOGGING_DIR", str(Path(job.out_dir) / "tensorboard")):
        trainer = trl_args.trainer_class(job.method)(
            model=model,
            **extra,
            args=args,
            train_dataset=train,
            eval_dataset=evaluation,
            processing_class=tokenizer,
            peft_config=trl_args.peft_config(job, added),
            callbacks=[_progress_callback(log, progress), _no_final_checkpoint(), *callbacks],
        )
    if wrap is not None:
        trainer = wrap(trainer)
    choose_cpu_threads(log, cpu_load)
    # Log lines go through ``log``; transformers would also print every log dict to stdout.
    trainer.remove_callback(PrinterCallback)
    resume = resume_from or latest_checkpoint(Path(job.checkpoint_dir), prune=trainer.is_world_process_zero())
    resumed_step = _checkpoint_step(resume) if resume is not None else 0  # read now: rotation may delete it
    if resume is not None:
        log(f"resuming from {resume.name} (model, optimizer, scheduler and RNG state)")
    with frozen_heap():  # the libraries, model and data loaded so far stay out of collections
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    metrics: dict[str, Any] = dict(output.metrics)
    metrics["global_step"] = trainer.state.global_step
    metrics["resumed_from_step"] = resumed_step
    if resume is not None:
        # TRL's train_loss covers only the steps this process ran; report the whole run's.
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        if losses:
            metrics["train_loss"] = sum(losses) / len(losses)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    if rewards:  # GRPO: the mean reward of the sampled completions, first and last logged
        metrics["reward_first"], metrics["reward_last"] = rewards[0], rewards[-1]
    metrics["trainable_parameters"], metrics["total_parameters"] = _count_parameters(trainer.model)
    metrics.update(_peak_memory())
    if evaluation is not None:
        scores = trainer.evaluate()
        metrics.update({k: scores[k] for k in ("eval_loss", "eval_mean_token_accuracy") if k in scores})

    out = Path(job.out_dir)
    trainer.save_model(str(out / "model"))  # an adapter under PEFT, else full weights; + tokenizer
    adapter = job.peft["type"] != "none"
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out / "model"))
        (out / "training_args.json").write_text(trainer.args.to_json_string() + "\n")
        (out / "loss.json").write_text(json.dumps(trainer.state.log_history, indent=1) + "\n")
    result = {"metrics": metrics, "log_history": trainer.state.log_history, "adapter": adapter}
    if job.result_file and trainer.is_world_process_zero():
        Path(job.result_file).write_text(json.dumps(result) + "\n")
    return result


def _emit(kind: str, value: Any) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(EVENT_PREFIX + json.dumps({kind: value}), flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m ftpipe.trainers.trl_job JOB.json", file=sys.stderr)
        return 2
    job = TrlJob.from_json(Path(argv[0]).read_text())
    run_job(
        job,
        token=os.environ.get("HF_TOKEN") or None,
        log=lambda line: _emit("log", line),
        progress=lambda done, total, what: _emit("progress", [done, total, what]),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
