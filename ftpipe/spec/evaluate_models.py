"""The ``evaluate`` block: metrics, baselines, few-shot, retrieval, the judge, forgetting
benchmarks, cost, and the gate."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
)

from ftpipe.spec.block import Block, NonNegInt, PositiveInt, Secret, _nested

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
