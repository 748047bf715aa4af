"""The trl trainer block turned into TRL / PEFT / bitsandbytes config objects.

Every ftpipe field is mapped by name onto the installed TRL's field (checked against the
config dataclass), never passed through, so a renamed TRL field fails loudly here instead
of being silently ignored.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ftpipe.errors import StepError

if TYPE_CHECKING:  # pragma: no cover
    from ftpipe.trainers.trl_job import TrlJob

METHODS = ("sft", "dpo", "orpo")


def config_class(method: str) -> type:
    if method == "sft":
        from trl import SFTConfig

        return SFTConfig
    if method == "dpo":
        from trl import DPOConfig

        return DPOConfig
    if method == "orpo":
        try:  # TRL >= 0.26 keeps ORPO under experimental
            from trl.experimental.orpo import ORPOConfig
        except ImportError:  # pragma: no cover - older TRL
            from trl import ORPOConfig
        return ORPOConfig
    raise StepError(f"trainer.method: unknown method {method!r} (available: {', '.join(METHODS)})")


def trainer_class(method: str) -> type:
    if method == "sft":
        from trl import SFTTrainer

        return SFTTrainer
    if method == "dpo":
        from trl import DPOTrainer

        return DPOTrainer
    try:
        from trl.experimental.orpo import ORPOTrainer
    except ImportError:  # pragma: no cover - older TRL
        from trl import ORPOTrainer
    return ORPOTrainer


def mixed_precision(setting: str) -> tuple[bool, bool]:
    """``(fp16, bf16)`` for ``hyperparameters.mixed_precision``. ``auto``: bf16 on CUDA
    GPUs that support it, fp16 on other CUDA GPUs, full precision on CPU."""
    import torch

    cuda = torch.cuda.is_available()
    if setting == "auto":
        if not cuda:
            return False, False
        return (False, True) if torch.cuda.is_bf16_supported() else (True, False)
    if setting == "fp16":
        if not cuda:
            raise StepError("trainer.hyperparameters.mixed_precision: fp16 needs a CUDA GPU",
                            hint="use mixed_precision: auto (or no) on this machine")
        return True, False
    if setting == "bf16":
        if cuda and not torch.cuda.is_bf16_supported():
            raise StepError("trainer.hyperparameters.mixed_precision: this GPU does not support bf16",
                            hint="use mixed_precision: fp16 or auto")
        return False, True
    if setting == "no":
        return False, False
    raise StepError(f"trainer.hyperparameters.mixed_precision: unknown value {setting!r}")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _warmup(ratio: float) -> float | int:
    # transformers reads a float below 1 as a ratio of the total steps, and >= 1 as steps.
    if ratio <= 0:
        return 0
    return min(ratio, 0.999)


def training_config(job: TrlJob, *, fp16: bool, bf16: bool) -> tuple[Any, list[str]]:
    """The TRL config for ``job`` and the warnings to log (settings this TRL cannot honour)."""
    cls = config_class(job.method)
    names = {f.name for f in dataclasses.fields(cls)}
    hp = job.hyperparameters
    warnings: list[str] = []
    every = job.checkpoint_every
    kwargs: dict[str, Any] = {
        "output_dir": job.checkpoint_dir,
        "num_train_epochs": float(hp["epochs"]),
        "max_steps": int(hp["max_steps"]) if hp.get("max_steps") else -1,
        "learning_rate": float(hp["learning_rate"]),
        "per_device_train_batch_size": int(hp["batch_size"]),
        "per_device_eval_batch_size": int(hp["batch_size"]),
        "gradient_accumulation_steps": int(hp["gradient_accumulation_steps"]),
        "max_length": int(hp["max_seq_length"]),
        "warmup_steps": _warmup(float(hp["warmup_ratio"])),
        "weight_decay": float(hp["weight_decay"]),
        "lr_scheduler_type": hp["lr_scheduler"],
        "optim": hp["optimizer"],
        "logging_steps": int(hp["logging_steps"]),
        "fp16": fp16,
        "bf16": bf16,
        "seed": job.seed,
        "data_seed": job.seed,
        "save_strategy": "steps" if every else "no",
        "save_steps": every or 500,
        "save_total_limit": job.checkpoint_keep,
        "eval_strategy": "no",  # validation loss is computed once, after training
        "report_to": list(job.report_to) or "none",
        "disable_tqdm": True,  # progress goes through ctx.progress
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": _cuda(),
        # Explicit on CPU-only machines: without it transformers runs torchrun ranks as
        # independent single-process jobs instead of CPU data parallelism (gloo).
        "use_cpu": not _cuda(),
    }
    # transformers 5 renamed gradient_checkpointing; TRL defaults it to True, so always set it.
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    kwargs[checkpointing] = bool(hp["gradient_checkpointing"])

    if job.method == "sft":
        kwargs["packing"] = bool(hp["packing"])
    elif hp["packing"]:
        warnings.append(f"packing applies to sft only; ignored for {job.method}")
    if job.method in ("dpo", "orpo"):
        kwargs["beta"] = float(hp["beta"])
    prompt_len = hp.get("max_prompt_length")
    if prompt_len and job.method != "sft":
        if "max_prompt_length" in names:
            kwargs["max_prompt_length"] = int(prompt_len)
        elif "max_completion_length" in names:
            # ORPO in this TRL caps the completion instead: what max_length leaves after the prompt.
            kwargs["max_completion_length"] = max(1, int(hp["max_seq_length"]) - int(prompt_len))
        else:
            warnings.append(f"max_prompt_length: TRL's {cls.__name__} has no prompt limit; "
                            "sequences are capped by max_seq_length only")
    elif prompt_len:
        warnings.append("max_prompt_length applies to dpo/orpo only; ignored for sft")

    from ftpipe.trainers.distributed import trainer_arguments

    kwargs.update(trainer_arguments(job.distributed, bf16=bf16, fp16=fp16))
    unknown = sorted(k for k in kwargs if k not in names)
    if unknown:  # a TRL/transformers upgrade renamed something: fail, do not drop settings
        raise StepError(f"the installed TRL's {cls.__name__} lacks {', '.join(unknown)}",
                        hint="install the TRL version ftpipe supports: pip install 'ftpipe[train]'")
    return cls(**kwargs), warnings


def peft_config(job: TrlJob, new_token_ids: list[int]) -> Any | None:
    """The LoRA config, or None for full fine-tuning. ``target_modules: null`` means every
    linear layer (the QLoRA paper's choice), not PEFT's per-architecture default."""
    peft = job.peft
    if peft["type"] == "none":
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=int(peft["r"]),
        lora_alpha=int(peft["alpha"]),
        lora_dropout=float(peft["dropout"]),
        target_modules=list(peft["target_modules"]) if peft.get("target_modules") else "all-linear",
        task_type="CAUSAL_LM",
        # Tokens a chat template added have fresh embeddings: train just those rows.
        trainable_token_indices=list(new_token_ids) or None,
    )


def check_qlora_available() -> None:
    """QLoRA loads the base in 4/8 bits through bitsandbytes, which needs a CUDA GPU."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise StepError("trainer.peft: qlora needs a CUDA GPU (bitsandbytes quantisation), and none is visible",
                        hint="use peft: {type: lora} on this machine, or run on a GPU machine")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise StepError("trainer.peft: qlora needs the 'bitsandbytes' package, which is not installed",
                        hint="pip install bitsandbytes")


def quantization_config(job: TrlJob, *, bf16: bool) -> Any | None:
    if job.peft["type"] != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if int(job.peft.get("bits", 4)) == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float16,
    )


REPORTERS = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb", "mlflow": "mlflow"}


def check_report_to(report_to: list[str]) -> None:
    """Each reporter's package must be importable before a long job starts."""
    import importlib.util

    for name in report_to:
        package = REPORTERS.get(name)
        if package is None:
            raise StepError(f"trainer.report_to: unknown reporter {name!r} (available: {', '.join(REPORTERS)})")
        if importlib.util.find_spec(package) is None:
            raise StepError(f"trainer.report_to: {name} needs the '{package}' package, which is not installed",
                            hint=f"pip install {package}")
