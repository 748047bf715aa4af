"""The contracts every step implementation, trainer backend, deploy target and executor
satisfies. Steps talk to the engine only through these types.

Artifact conventions (what a step leaves in ``StepContext.out_dir``):

- prepare:  ``train.jsonl``, ``validation.jsonl``, ``test.jsonl``, ``stats.json``.
  Every line is a normalised record:
  chat/instruction -> ``{"messages": [{"role": ..., "content": ...}, ...]}``
  preference       -> ``{"prompt": [messages...], "chosen": [{"role": "assistant", ...}],
                        "rejected": [{"role": "assistant", ...}]}``
  text             -> ``{"text": "..."}``
- train:    ``model.json`` (a ``ModelRef`` as JSON); a local model lives in ``model/``
  (adapter or full weights, plus tokenizer); ``metrics.json``; ``loss.json``/``loss.png``.
- evaluate: ``report.json``, ``report.md``, ``chart.png``.
- gate:     ``gate.json`` (``{"passed": bool, "reason": str, ...}``).
- deploy:   ``deploy.json`` (``{"target": ..., "url": ..., ...}``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from pydantic import BaseModel


# The folder under ``StepContext.state_dir`` that holds resumable progress (training
# checkpoints): a crashed step continues from it; ``--force``/``--from`` discard it.
CHECKPOINTS = "checkpoints"

LogFn = Callable[[str], None]
# progress(done, total_or_None, what)
ProgressFn = Callable[[int, "int | None", str], None]


@dataclass(frozen=True)
class StepContext:
    """Everything a step may use. Steps write only below ``out_dir`` and ``state_dir``."""

    run_id: str
    step_id: str  # "prepare", "train", "evaluate", "gate", "deploy.<name>"
    # the resolved Pipeline (registry.pipeline_model(), built at run time from the plugins'
    # config models): ${env:...} replaced by values (secrets included)
    pipeline: Any
    pipeline_path: Path  # the YAML file; relative paths in it are relative to its folder
    out_dir: Path  # empty folder; becomes the step's artifact when the step returns
    inputs: Mapping[str, Path]  # step id -> artifact folder of each finished dependency
    state_dir: Path  # survives crashes, keyed by the step's cache key (checkpoints, job ids)
    cache_dir: Path  # ftpipe's shared cache (built-in tiny model, downloads)
    log: LogFn
    progress: ProgressFn
    secrets: tuple[str, ...] = ()  # values that must never be written anywhere
    cache_key: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)  # step-specific (deploy target)

    @property
    def base_dir(self) -> Path:
        return self.pipeline_path.parent


@dataclass(frozen=True)
class StepResult:
    """What a finished step reports back to the engine (stored in run.json)."""

    metrics: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""
    # "ok" | "blocked" (gate failed: dependants are skipped, run exits 3)
    outcome: str = "ok"


@dataclass(frozen=True)
class ModelRef:
    """Where a trained model is: a local folder (relative to the train artifact) or a
    hosted model id at a provider."""

    kind: str  # "local" | "hosted"
    base: str  # the base model it was trained from
    path: str | None = None  # local: folder relative to the train artifact ("model")
    adapter: bool = False  # local: folder holds a PEFT adapter on top of ``base``
    provider: str | None = None  # hosted: "openai" | "azure-openai"
    model_id: str | None = None  # hosted: fine-tuned model id
    job_id: str | None = None

    def write(self, folder: Path) -> None:
        (folder / "model.json").write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> "ModelRef":
        return cls(**json.loads((folder / "model.json").read_text()))


# --------------------------------------------------------------------------- capabilities
# What the core needs to know about a plugin, declared by the plugin (as ``caps`` on its
# config model, so validate and plan read it without importing the implementation). The
# core reads these and never tests a plugin's name: a third-party plugin gets the same
# treatment as a built-in one.


@dataclass(frozen=True)
class TrainerCaps:
    """A trainer backend's declaration."""

    # Where the fine-tune lives: False = local weights (ModelRef kind "local"); True = at a
    # provider (ModelRef kind "hosted", ``provider`` below), reached through its chat API.
    hosted: bool = False
    provider: str | None = None  # hosted: the name in ModelRef.provider that targets/eval match
    service: str | None = None  # hosted: the provider's name for people ("OpenAI"), in messages
    extras: tuple[str, ...] = ()  # ftpipe extras the machine running the step needs
    torch: bool = False  # trains with torch on this machine (or in a managed env beside it)
    can_cancel: bool = False  # implements ``cancel(record, trainer_config) -> dict``
    managed_env: bool = False  # its own environment: ``ftpipe backends install NAME``
    # how evaluation reaches the trained model: "weights" (load the local folder) or
    # "chat-api" (the plugin's ``chat_client(ctx)``: an OpenAI-compatible client + model id)
    eval_access: str = "weights"
    prepare_tokenizer: bool = False  # prepare counts/truncates with the base model's tokenizer
    formats: tuple[str, ...] | None = None  # dataset formats it trains on (None = any)
    cache_version: int = 1  # bump when what it computes changes; keys other plugins' steps not


@dataclass(frozen=True)
class TargetCaps:
    """A deploy target's declaration."""

    # what it deploys from: "weights" (a local model folder), "hosted" (a fine-tune at one
    # of ``providers``), or "repo" (a Hub repo some target publishes: see ``consumes``)
    deploys_from: str = "weights"
    providers: tuple[str, ...] = ()
    publishes: str | None = None  # config field naming the Hub repo this target pushes
    consumes: str | None = None  # config field naming a repo it serves: runs after its publisher
    extras: tuple[str, ...] = ()
    cache_version: int = 1
    # evaluation can read back the model it holds now (gate ``must_beat: [deployed]``): the
    # config model defines ``deployed_model_dir(base_dir, pipeline_name) -> Path`` (a model
    # folder holding ftpipe.json, or absent)
    readable: bool = False


@dataclass(frozen=True)
class ExecutorCaps:
    """An executor's declaration."""

    remote: bool = False  # runs the pipeline off this machine (inputs are uploaded)
    extras: tuple[str, ...] = ()  # what the submitting machine needs (the remote side needs the rest)
    runs_training_here: bool = True  # False: this machine only submits and follows
    multi_worker: bool = False  # trains with trainer.resources.workers > 1 (Ray Train workers)


@dataclass(frozen=True)
class MetricCaps:
    """A metric's declaration."""

    needs_weights: bool = False  # loss/perplexity: scored from the model's logits, not its text
    higher_is_better: bool = True


@runtime_checkable
class Step(Protocol):
    """A step implementation: ``run(ctx) -> StepResult``."""

    def __call__(self, ctx: StepContext) -> StepResult: ...


@runtime_checkable
class TrainerBackend(Protocol):
    """``train(ctx)`` trains and writes a ``ModelRef``. What its caps declare it must also
    implement (checked when it registers): ``can_cancel`` -> ``cancel(state_dir, trainer) ->
    {"job_id", "status", "cancelled", "what"}``; ``eval_access="chat-api"`` ->
    ``chat_client(trainer)`` (an OpenAI-compatible client), optionally
    ``serve_for_evaluation(ctx, model_id)`` (a context manager yielding the name to call) and
    ``chat_hints(model) -> {status: hint}``; ``managed_env`` -> ``environment_status()`` and
    ``install_environment(*, force, log)``. Optional: ``preflight(pipeline, *, cache_dir)``."""

    name: str
    config_model: "type[BaseModel]"

    def train(self, ctx: StepContext) -> StepResult: ...


@runtime_checkable
class DeployTarget(Protocol):
    """``deploy(ctx)`` publishes the model. A target may also define
    ``is_current(artifact: Path) -> bool``: False makes a cached deploy run again
    (its output folder was deleted, ...)."""

    name: str
    config_model: "type[BaseModel]"

    def deploy(self, ctx: StepContext) -> StepResult: ...


@runtime_checkable
class Executor(Protocol):
    name: str
    config_model: "type[BaseModel]"

    def execute(self, request: "RunRequest") -> int: ...


@dataclass(frozen=True)
class RunRequest:
    """What `ftpipe run` asks an executor to do. Returns an exit code."""

    pipeline_path: Path
    store: Path | None = None
    force: bool = False
    from_step: str | None = None
    wait_lock: bool = False
    quiet: bool = False
    json_output: bool = False
    preflight: bool = True  # run every plugin's read-only checks before the first step
    extra: Mapping[str, Any] = field(default_factory=dict)


MetricFn = Callable[[str, str], float]
