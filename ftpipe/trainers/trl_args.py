"""The trl trainer block turned into TRL / PEFT / bitsandbytes config objects.

Every ftpipe field is mapped by name onto the installed TRL's field (checked against the
config dataclass), never passed through, so a renamed TRL field fails loudly here instead
of being silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ftpipe.errors import StepError

if TYPE_CHECKING:  # pragma: no cover
    from ftpipe.trainers.trl_job import TrlJob

METHODS = ("sft", "dpo", "orpo", "kto", "grpo")


def config_class(method: str) -> type:
    if method == "kto":
        from trl import KTOConfig

        return KTOConfig
    if method == "grpo":
        from trl import GRPOConfig

        return GRPOConfig
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
    if method == "kto":
        from trl import KTOTrainer

        return KTOTrainer
    if method == "grpo":
        from trl import GRPOTrainer

        return GRPOTrainer
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


@dataclass(frozen=True)
class Capabilities:
    """What this machine offers a training job: a CUDA GPU, bf16 on it, kernel packages."""

    cuda: bool = False
    bf16: bool = False  # the GPU computes in bf16
    flash_attn: bool = False  # the flash-attn package is installed
    liger_kernel: bool = False  # the liger-kernel package is installed

    @classmethod
    def detect(cls) -> Capabilities:
        import importlib.util

        import torch

        cuda = torch.cuda.is_available()
        return cls(
            cuda=cuda,
            bf16=cuda and torch.cuda.is_bf16_supported(),
            flash_attn=cuda and importlib.util.find_spec("flash_attn") is not None,
            liger_kernel=cuda and importlib.util.find_spec("liger_kernel") is not None,
        )


@dataclass(frozen=True)
class SpeedSettings:
    """The machine-dependent choices for one job: TRL config arguments and the attention
    implementation the model is loaded with (None: transformers' own choice)."""

    config: dict[str, Any]
    attn_implementation: str | None = None


# Rows the prepare step counted this close to max_seq_length may still be cut by TRL's own
# tokenisation (prompt/completion split), so they keep truncation and padding.
_FIT_MARGIN = 8


def speed_settings(
    caps: Capabilities,
    *,
    method: str,
    hyperparameters: dict[str, Any],
    explicit: frozenset[str] | set[str] = frozenset(),
    longest_row: int | None = None,
) -> SpeedSettings:
    """What the libraries make fast on this machine, for the settings the user left unset
    (``explicit``: the trainer settings written in the pipeline). On CUDA: bf16 where the
    GPU has it, else fp16 (``mixed_precision: auto``); flash attention 2 when flash-attn is
    installed and training is in 16 bits, else SDPA; Liger kernels when liger-kernel is installed; and, for SFT with
    flash attention, padding-free batches: with packing TRL packs padding-free already;
    without it only when every row fits (``longest_row``, the prepare step's exact count), as
    padding-free batches are not truncated. On a CPU: full precision, nothing else."""
    fp16, bf16 = mixed_precision(hyperparameters.get("mixed_precision", "auto"), caps)
    config: dict[str, Any] = {"fp16": fp16, "bf16": bf16}
    if not caps.cuda:
        return SpeedSettings(config)
    if caps.liger_kernel and "use_liger_kernel" not in explicit:
        config["use_liger_kernel"] = True
    flash = caps.flash_attn and (fp16 or bf16)  # flash attention computes in 16 bits only
    if method == "sft" and flash and "padding_free" not in explicit and not hyperparameters.get("packing"):
        limit = int(hyperparameters.get("max_seq_length") or 0)
        if longest_row is not None and limit and longest_row + _FIT_MARGIN <= limit:
            config |= {"padding_free": True, "max_length": None}
    return SpeedSettings(config, "flash_attention_2" if flash else "sdpa")


def mixed_precision(setting: str, caps: Capabilities | None = None) -> tuple[bool, bool]:
    """``(fp16, bf16)`` for ``hyperparameters.mixed_precision``. ``auto``: bf16 on CUDA
    GPUs that support it, fp16 on other CUDA GPUs, full precision on CPU."""
    caps = caps or Capabilities.detect()
    cuda = caps.cuda
    if setting == "auto":
        if not cuda:
            return False, False
        return (False, True) if caps.bf16 else (True, False)
    if setting == "fp16":
        if not cuda:
            raise StepError(
                "trainer.hyperparameters.mixed_precision: fp16 needs a CUDA GPU",
                hint="use mixed_precision: auto (or no) on this machine",
            )
        return True, False
    if setting == "bf16":
        if cuda and not caps.bf16:
            raise StepError(
                "trainer.hyperparameters.mixed_precision: this GPU does not support bf16",
                hint="use mixed_precision: fp16 or auto",
            )
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


def training_config(
    job: TrlJob, *, fp16: bool, bf16: bool, speed: dict[str, Any] | None = None
) -> tuple[Any, list[str]]:
    """The TRL config for ``job`` and the warnings to log (settings this TRL cannot honour).
    ``speed``: the machine's defaults (:func:`speed_settings`), applied over the job's."""
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
    if job.method != "grpo":  # GRPO bounds what it samples instead (max_completion_length)
        kwargs["max_length"] = int(hp["max_seq_length"])
    if job.use_liger_kernel:
        check_gpu_feature("trainer.use_liger_kernel", "liger_kernel", "liger-kernel")
        kwargs["use_liger_kernel"] = True
    kwargs |= method_settings(job, warnings)
    kwargs |= {k: v for k, v in (speed or {}).items() if k not in ("fp16", "bf16")}
    # transformers 5 renamed gradient_checkpointing; TRL defaults it to True, so always set it.
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    kwargs[checkpointing] = bool(hp["gradient_checkpointing"])

    if job.method == "sft":
        kwargs["packing"] = bool(hp["packing"])
    elif hp["packing"]:
        warnings.append(f"packing applies to sft only; ignored for {job.method}")
    if job.method in ("dpo", "orpo", "kto"):
        kwargs["beta"] = float(hp["beta"])
    prompt_len = hp.get("max_prompt_length")
    if prompt_len and job.method in ("dpo", "orpo"):
        if "max_prompt_length" in names:
            kwargs["max_prompt_length"] = int(prompt_len)
        elif "max_completion_length" in names:
            # ORPO in this TRL caps the completion instead: what max_length leaves after the prompt.
            kwargs["max_completion_length"] = max(1, int(hp["max_seq_length"]) - int(prompt_len))
        else:
            warnings.append(
                f"max_prompt_length: TRL's {cls.__name__} has no prompt limit; "
                "sequences are capped by max_seq_length only"
            )
    elif prompt_len:
        warnings.append(f"max_prompt_length applies to dpo/orpo only; ignored for {job.method}")

    from ftpipe.trainers.distributed import trainer_arguments

    kwargs.update(trainer_arguments(job.distributed, bf16=bf16, fp16=fp16))
    unknown = sorted(k for k in kwargs if k not in names)
    if unknown:  # a TRL/transformers upgrade renamed something: fail, do not drop settings
        raise StepError(
            f"the installed TRL's {cls.__name__} lacks {', '.join(unknown)}",
            hint="install the TRL version ftpipe supports: pip install 'ftpipe[train]'",
        )
    return cls(**kwargs), warnings


def method_settings(job: TrlJob, warnings: list[str]) -> dict[str, Any]:
    """The settings only one method has: KTO's example weights, GRPO's sampling, SFT's
    padding-free batches."""
    hp = job.hyperparameters
    out: dict[str, Any] = {}
    if job.method == "kto":
        out |= {
            "desirable_weight": float(hp.get("desirable_weight", 1.0)),
            "undesirable_weight": float(hp.get("undesirable_weight", 1.0)),
        }
    if job.method == "grpo":
        out |= {
            "num_generations": int(hp.get("num_generations", 4)),
            "max_completion_length": int(hp.get("max_completion_length", 64)),
            "temperature": float(hp.get("temperature", 1.0)),
            "reward_weights": [float(w) for _, w in job.rewards] or None,
            "log_completions": False,
        }
        if use_vllm(job.use_vllm):
            out |= {"use_vllm": True, "vllm_mode": "colocate"}
    if hp.get("padding_free"):
        if job.method != "sft":
            warnings.append(f"padding_free applies to sft only; ignored for {job.method}")
        else:
            check_gpu_feature("trainer.hyperparameters.padding_free", "flash_attn", "flash-attn")
            out["padding_free"] = True
            if not hp.get("packing"):
                # TRL does not truncate padding-free batches and refuses a max_length with them;
                # the prepare step already dropped every row longer than max_seq_length
                out["max_length"] = None
    return out


def use_vllm(setting: bool | str) -> bool:
    """GRPO generates with vLLM when asked, or (``auto``) when vllm is installed and a CUDA
    GPU is visible; asked for without either, the step says what is missing."""
    import importlib.util

    installed = importlib.util.find_spec("vllm") is not None
    if setting == "auto":
        return installed and _cuda()
    if setting is True and not (installed and _cuda()):
        raise StepError(
            "trainer.use_vllm: generating with vLLM needs a CUDA GPU and the 'vllm' package"
            + ("" if installed else " (not installed)"),
            hint="set use_vllm: auto (generate with transformers here), or run on a GPU machine",
        )
    return bool(setting)


def check_gpu_feature(setting: str, module: str, package: str) -> None:
    """Liger kernels and padding-free batches are Triton/flash-attention code: CUDA only."""
    import importlib.util

    if not _cuda():
        raise StepError(
            f"{setting} needs a CUDA GPU, and none is visible",
            hint="turn it off on this machine (it changes speed and memory, not the result)",
        )
    if importlib.util.find_spec(module) is None:
        raise StepError(
            f"{setting} needs the '{package}' package, which is not installed", hint=f"pip install {package}"
        )


def peft_config(job: TrlJob, new_token_ids: list[int]) -> Any | None:
    """The LoRA config, or None for full fine-tuning. ``target_modules: null`` means every
    linear layer (the QLoRA paper's choice), not PEFT's per-architecture default."""
    peft = job.peft
    if peft["type"] == "none":
        return None
    from peft import LoraConfig

    targets = peft.get("target_modules")
    return LoraConfig(
        r=int(peft["r"]),
        lora_alpha=int(peft["alpha"]),
        lora_dropout=float(peft["dropout"]),
        target_modules=list(targets) if isinstance(targets, list) and targets else "all-linear",
        modules_to_save=list(peft["modules_to_save"]) if peft.get("modules_to_save") else None,
        use_dora=bool(peft.get("use_dora", False)),
        use_rslora=bool(peft.get("use_rslora", False)),
        task_type="CAUSAL_LM",
        # Tokens a chat template added have fresh embeddings: train just those rows.
        trainable_token_indices=list(new_token_ids) or None,
    )


def check_qlora_available() -> None:
    """QLoRA loads the base in 4/8 bits through bitsandbytes, which needs a CUDA GPU."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise StepError(
            "trainer.peft: qlora needs a CUDA GPU (bitsandbytes quantisation), and none is visible",
            hint="use peft: {type: lora} on this machine, or run on a GPU machine",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise StepError(
            "trainer.peft: qlora needs the 'bitsandbytes' package, which is not installed",
            hint="pip install bitsandbytes",
        )


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
            raise StepError(
                f"trainer.report_to: {name} needs the '{package}' package, which is not installed",
                hint=f"pip install {package}",
            )
