"""The ``trainer`` block: the trl, autotrain, openai and azure-openai configs and their parts
(PEFT, hyperparameters, resources, distributed training, rewards)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    Field,
)

from ftpipe.contracts import TrainerCaps
from ftpipe.spec.block import Block, Fraction, NonNegInt, PositiveInt, Secret, _nested

# --------------------------------------------------------------------------- trainers


class NoPeft(Block):
    type: Literal["none"]


class LoraPeft(Block):
    type: Literal["lora"]
    r: PositiveInt = 8
    alpha: PositiveInt = 16
    dropout: Fraction = 0.05
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="Module names, or all-linear (the default: every linear layer but the output head)."
    )
    modules_to_save: list[str] | None = Field(
        None, description="Modules trained in full and saved with the adapter (e.g. [lm_head, embed_tokens])."
    )
    use_dora: bool = Field(False, description="DoRA: weight-decomposed low-rank adaptation.")
    use_rslora: bool = Field(False, description="rsLoRA: scale by alpha/sqrt(r) instead of alpha/r.")


class QLoraPeft(Block):
    type: Literal["qlora"]
    r: PositiveInt = 8
    alpha: PositiveInt = 16
    dropout: Fraction = 0.05
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="Module names, or all-linear (the default: every linear layer but the output head)."
    )
    modules_to_save: list[str] | None = Field(
        None, description="Modules trained in full and saved with the adapter (e.g. [lm_head, embed_tokens])."
    )
    use_dora: bool = Field(False, description="DoRA: weight-decomposed low-rank adaptation.")
    use_rslora: bool = Field(False, description="rsLoRA: scale by alpha/sqrt(r) instead of alpha/r.")
    bits: Literal[4, 8] = 4


Peft = Annotated[Union[NoPeft, LoraPeft, QLoraPeft], Field(discriminator="type")]


class TrlHyperparameters(Block):
    epochs: Annotated[float, Field(gt=0)] = 1
    max_steps: PositiveInt | None = None
    learning_rate: Annotated[float, Field(gt=0)] = 2.0e-4
    batch_size: PositiveInt = 8
    gradient_accumulation_steps: PositiveInt = 1
    max_seq_length: PositiveInt = 512
    warmup_ratio: Fraction = 0.0
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    lr_scheduler: Literal[
        "linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"
    ] = "linear"
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "paged_adamw_8bit", "adamw_8bit"] = (
        "adamw_torch"
    )
    packing: bool = False
    gradient_checkpointing: bool = False
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    beta: Annotated[float, Field(gt=0)] = 0.1
    max_prompt_length: PositiveInt | None = None
    logging_steps: PositiveInt = 10
    padding_free: bool = Field(
        False, description="SFT: batches without padding (needs a CUDA GPU with flash attention)."
    )
    # grpo
    num_generations: Annotated[int, Field(ge=2)] = Field(
        4,
        description="GRPO: completions sampled per prompt; batch_size x gradient_accumulation_steps x processes "
        "must be a multiple of it.",
    )
    max_completion_length: PositiveInt = Field(64, description="GRPO: longest sampled completion in tokens.")
    temperature: Annotated[float, Field(gt=0)] = Field(1.0, description="GRPO: sampling temperature.")
    # kto
    desirable_weight: Annotated[float, Field(gt=0)] = Field(1.0, description="KTO: loss weight of desirable examples.")
    undesirable_weight: Annotated[float, Field(gt=0)] = Field(
        1.0, description="KTO: loss weight of undesirable examples."
    )


class Checkpoint(Block):
    every_steps: PositiveInt | None = 50
    keep: PositiveInt = 2


class Resources(Block):
    gpus_per_node: NonNegInt = 0
    nodes: PositiveInt = 1
    workers: PositiveInt = Field(1, description="Ray Train workers (executor: ray): one training process each.")
    cpus_per_worker: Annotated[float, Field(gt=0)] = Field(1, description="CPUs Ray reserves for each worker.")
    max_failures: NonNegInt = Field(
        0, description="Ray Train: restart the workers from the last checkpoint up to this many times."
    )


class FsdpOptions(Block):
    sharding: Literal["full_shard", "shard_grad_op", "hybrid_shard", "no_shard"] = "full_shard"
    auto_wrap: Literal["transformer_layer", "size", "none"] = Field(
        "transformer_layer", description="Wrap each decoder layer (transformer_layer) or by parameter count (size)."
    )
    min_num_params: PositiveInt = Field(100_000_000, description="auto_wrap: size — parameters per wrapped unit.")
    activation_checkpointing: bool = False
    cpu_offload: bool = False


class DeepSpeedOptions(Block):
    stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    offload_params: bool = Field(False, description="ZeRO-3 only: keep parameters in CPU memory.")


class Distributed(Block):
    """How several training processes share the work (torchrun on one node, Ray Train across nodes)."""

    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    fsdp: FsdpOptions = _nested()
    deepspeed: DeepSpeedOptions = _nested()


class Reward(Block):
    """A GRPO reward: a metric by name (as in evaluate.metrics) with a weight."""

    metric: str = Field(description="token_f1, exact_match, rouge_l, json_valid, a plugin, or package.module:function")
    weight: float = 1.0


class TrlTrainer(Block):
    """Local training with transformers + TRL + PEFT."""

    backend: Literal["trl"]
    caps: ClassVar[TrainerCaps] = TrainerCaps(extras=("train",), torch=True, prepare_tokenizer=True)
    method: Literal["sft", "dpo", "orpo", "kto", "grpo"] = "sft"
    rewards: list[str | Reward] = Field(
        default_factory=list,
        description="GRPO: reward functions, scored (completion, reference answer) like evaluation metrics.",
    )
    use_vllm: bool | Literal["auto"] = Field(
        "auto", description="GRPO: generate with vLLM (auto: when vllm is installed and a CUDA GPU is visible)."
    )
    use_liger_kernel: bool = Field(False, description="Liger Triton kernels (needs a CUDA GPU and liger-kernel).")
    peft: Peft = _nested(type="lora")
    hyperparameters: TrlHyperparameters = _nested()
    checkpoint: Checkpoint = _nested()
    report_to: list[Literal["tensorboard", "trackio", "wandb", "mlflow"]] = Field(default_factory=list)
    seed: int = 42
    resources: Resources = _nested()
    distributed: Distributed = _nested()


class AutoTrainHyperparameters(Block):
    epochs: PositiveInt = 1
    learning_rate: Annotated[float, Field(gt=0)] = 3.0e-5
    batch_size: PositiveInt = 2
    block_size: PositiveInt | Literal[-1] = -1
    model_max_length: PositiveInt = 2048
    gradient_accumulation: PositiveInt = 4
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    optimizer: str = "adamw_torch"
    scheduler: Literal["linear", "cosine", "cosine_warmup", "constant"] = "linear"
    warmup_ratio: Fraction = 0.1
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    padding: Literal["left", "right"] = "right"
    beta: Annotated[float, Field(gt=0)] = 0.1
    max_prompt_length: PositiveInt = 128
    max_completion_length: PositiveInt | None = None
    logging_steps: int = -1


class AutoTrainTrainer(Block):
    """AutoTrain Advanced, run in an environment ftpipe manages (`ftpipe backends install autotrain`)."""

    backend: Literal["autotrain"]
    caps: ClassVar[TrainerCaps] = TrainerCaps(extras=("train",), torch=True, managed_env=True, prepare_tokenizer=True)

    @classmethod
    def pipeline_rules(cls, p: Any, base_dir: Any) -> Any:
        """Rules that relate this block to the rest of the pipeline (spec/rules_autotrain.py)."""
        from ftpipe.spec.rules_autotrain import check

        return check(p, base_dir)

    method: Literal["sft", "dpo", "orpo", "reward"] = "sft"
    peft: Peft = _nested(type="lora")
    hyperparameters: AutoTrainHyperparameters = _nested()
    chat_template: Literal["none", "zephyr", "chatml", "tokenizer"] | None = None
    seed: int = 42
    merge_adapter: bool = True


Auto = Literal["auto"]


class OpenAIHyperparameters(Block):
    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto = "auto"
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto = "auto"
    learning_rate_multiplier: Annotated[float, Field(gt=0)] | Auto = "auto"
    beta: Annotated[float, Field(gt=0, le=2)] | Auto | None = Field(None, description="DPO only.")


class Poll(Block):
    interval: Annotated[float, Field(gt=0)] = 10.0
    max_interval: Annotated[float, Field(gt=0)] = 60.0
    timeout_minutes: Annotated[float, Field(gt=0)] = 24 * 60


class OpenAITrainer(Block):
    """The OpenAI fine-tuning API."""

    backend: Literal["openai"]
    caps: ClassVar[TrainerCaps] = TrainerCaps(
        hosted=True,
        provider="openai",
        service="OpenAI",
        extras=("openai",),
        can_cancel=True,
        eval_access="chat-api",
        formats=("chat", "instruction", "preference", "sharegpt", "alpaca"),
    )
    method: Literal["sft", "dpo"] = "sft"
    hyperparameters: OpenAIHyperparameters = _nested()
    suffix: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    seed: Annotated[int, Field(ge=0, le=2147483647)] | None = None
    api_key: Secret = "${env:OPENAI_API_KEY}"
    base_url: str | None = Field(None, description="Defaults to $OPENAI_BASE_URL or the public API.")
    organization: str | None = None
    context_length: PositiveInt | None = Field(
        None, description="Base model context in tokens, for the pre-upload check."
    )
    poll: Poll = _nested()


class AzureHyperparameters(Block):
    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto = "auto"
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto = "auto"
    learning_rate_multiplier: Annotated[float, Field(gt=0)] | Auto = "auto"
    beta: Annotated[float, Field(gt=0, le=2)] | Auto | None = Field(None, description="DPO only.")


class AzureOpenAITrainer(Block):
    """Azure OpenAI fine-tuning (data plane, api-version 2024-10-21)."""

    backend: Literal["azure-openai"]
    caps: ClassVar[TrainerCaps] = TrainerCaps(
        hosted=True,
        provider="azure-openai",
        service="Azure OpenAI",
        extras=("azure",),
        can_cancel=True,
        eval_access="chat-api",
        formats=("chat", "instruction", "preference", "sharegpt", "alpaca"),
    )
    method: Literal["sft", "dpo"] = Field(
        "sft", description="dpo: for the models Azure offers it on (gpt-4o, gpt-4o-mini), on a preview api_version."
    )
    hyperparameters: AzureHyperparameters = _nested()
    suffix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")] | None = None
    seed: Annotated[int, Field(ge=0, le=2147483647)] | None = None
    endpoint: str = Field(description="https://<resource>.openai.azure.com")
    api_version: str = "2024-10-21"
    auth: Literal["api-key", "entra"] = "api-key"
    api_key: Secret | None = "${env:AZURE_OPENAI_API_KEY}"
    base_deployment: str | None = Field(
        None,
        description="The deployment that serves model.base: the base and few_shot baselines call it "
        "(Azure serves a model only through a deployment).",
    )
    context_length: PositiveInt | None = None
    poll: Poll = _nested()


BUILTIN_TRAINERS: tuple[type[Block], ...] = (TrlTrainer, AutoTrainTrainer, OpenAITrainer, AzureOpenAITrainer)
