"""The simulated fine-tuning job: the catalogues of fine-tunable models, a job's state, and
how it moves on when polled (data checked when it leaves its first state, hyperparameters
resolved, metric events, checkpoints, the fine-tuned model)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakes.openai_data import DataError, parse_training_data
from tests.fakes.openai_files import store_file
from tests.fakes.openai_job_checks import top_level_hp

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tests.fakes.openai_server import OpenAIServer

ORGANIZATION_ID = "org-ftpipetest"
ORG_SLUG = "ftpipe-test"  # the org part of "ft:<base>:<org>:<suffix>:<id>"

# Fine-tunable snapshots and the methods each accepts.
OPENAI_FINE_TUNABLE: dict[str, tuple[str, ...]] = {
    "gpt-4o-mini-2024-07-18": ("supervised", "dpo"),
    "gpt-4o-2024-08-06": ("supervised", "dpo"),
    "gpt-4.1-2025-04-14": ("supervised", "dpo"),
    "gpt-4.1-mini-2025-04-14": ("supervised", "dpo"),
    "gpt-4.1-nano-2025-04-14": ("supervised", "dpo"),
    "gpt-3.5-turbo-0125": ("supervised",),
    "gpt-3.5-turbo-1106": ("supervised",),
}
OPENAI_ALIASES = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
}
# Azure model names have no dots ("gpt-35-turbo"), and fine-tuned ids look like
# "<base>.ft-<hex>".
AZURE_FINE_TUNABLE: dict[str, tuple[str, ...]] = {
    "gpt-35-turbo-0613": ("supervised",),
    "gpt-35-turbo-1106": ("supervised",),
    "gpt-35-turbo-0125": ("supervised",),
    "gpt-4o-mini-2024-07-18": ("supervised", "dpo"),
    "gpt-4o-2024-08-06": ("supervised", "dpo"),
}

OPENAI_STATES = ("validating_files", "queued", "running")
AZURE_STATES = ("created", "pending", "running")
TERMINAL = {"succeeded", "failed", "cancelled"}
MAX_METRIC_EVENTS = 50


@dataclass(frozen=True)
class JobOutcome:
    """How a job ends once it has run (data problems fail it earlier regardless)."""

    status: str = "succeeded"  # succeeded | failed | cancelled
    code: str = "server_error"
    message: str = "The job failed due to an internal error."


@dataclass
class JobSim:
    provider: str  # openai | azure
    job: dict[str, Any]
    method: str
    outcome: JobOutcome
    hp: dict[str, Any]  # requested hyperparameters, "auto" until the job resolves them
    state_index: int = 0
    polls_in_state: int = 0
    pairs: list[tuple[str, str]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    steps: list[dict[str, float]] = field(default_factory=list)  # planned per-step metrics
    emitted: int = 0  # how many planned metric events were emitted
    checkpoint_steps: list[int] = field(default_factory=list)
    examples: int = 0
    tokens: int = 0


# ---------------------------------------------------------------- job progression


def root_base(srv: OpenAIServer, sim: JobSim) -> str:
    model = sim.job["model"]
    parent = srv.models.get(model)
    return root_base(srv, parent) if parent is not None else model


def job_states(srv: OpenAIServer, sim: JobSim) -> tuple[str, ...]:
    return OPENAI_STATES if sim.provider == "openai" else AZURE_STATES


def poll_job(srv: OpenAIServer, sim: JobSim) -> None:
    if sim.job["status"] in TERMINAL:
        return
    if srv.steps_per_state == 0:
        while sim.job["status"] not in TERMINAL:
            step(srv, sim)
        return
    sim.polls_in_state += 1
    if sim.job["status"] == "running":
        share = math.ceil(len(sim.steps) * sim.polls_in_state / srv.steps_per_state)
        emit_metrics(srv, sim, min(share, len(sim.steps)))
    if sim.polls_in_state >= srv.steps_per_state:
        sim.polls_in_state = 0
        step(srv, sim)


def step(srv: OpenAIServer, sim: JobSim) -> None:
    states = job_states(srv, sim)
    index = sim.state_index
    if index == 0:
        if not validate_data(srv, sim):
            return
    if index + 1 < len(states):
        sim.state_index = index + 1
        sim.job["status"] = states[index + 1]
        if states[index + 1] == "running":
            sim.job["estimated_finish"] = srv.now() + 600
            event(srv, sim, "Fine-tuning job started")
        return
    emit_metrics(srv, sim, len(sim.steps))
    if sim.outcome.status == "succeeded":
        succeed(srv, sim)
    elif sim.outcome.status == "failed":
        fail(srv, sim, sim.outcome.code, sim.outcome.message, None)
    else:
        finish(srv, sim, "cancelled")


def validate_data(srv: OpenAIServer, sim: JobSim) -> bool:
    job = sim.job
    azure = sim.provider == "azure"
    for param in ("training_file", "validation_file"):
        file_id = job.get(param)
        if not file_id:
            continue
        content = srv.content.get(file_id)
        try:
            if content is None:
                raise DataError(f"file {file_id} was deleted")
            pairs, examples, tokens = parse_training_data(
                content, sim.method, min_examples=10 if param == "training_file" else 1
            )
        except DataError as exc:
            code = "jsonlValidationFailed" if azure else f"invalid_{param}"
            what = "training" if param == "training_file" else "validation"
            fail(srv, sim, code, f"The job failed due to an invalid {what} file. {exc}", param)
            return False
        if param == "training_file":
            sim.pairs, sim.examples, sim.tokens = pairs, examples, tokens
    resolve_hyperparameters(srv, sim)
    event(srv, sim, "Files validated, moving job to queued state")
    return True


def resolve_hyperparameters(srv: OpenAIServer, sim: JobSim) -> None:
    hp = sim.hp
    n = max(sim.examples, 1)
    if hp.get("n_epochs", "auto") == "auto":
        # The cookbook's rule: 3 epochs, moved within 1..25 so n * epochs lands in 100..25000.
        epochs = 3
        if n * epochs < 100:
            epochs = min(25, math.ceil(100 / n))
        elif n * epochs > 25000:
            epochs = max(1, 25000 // n)
        hp["n_epochs"] = epochs
    if hp.get("batch_size", "auto") == "auto":
        hp["batch_size"] = max(1, min(256, round(n * 0.002)))
    if hp.get("learning_rate_multiplier", "auto") == "auto":
        hp["learning_rate_multiplier"] = 1.8
    if sim.method == "dpo" and hp.get("beta", "auto") == "auto":
        hp["beta"] = 0.1
    if "method" in sim.job:
        sim.job["method"][sim.method]["hyperparameters"] = dict(hp)
    sim.job["hyperparameters"] = top_level_hp(hp)
    steps_per_epoch = math.ceil(n / hp["batch_size"])
    total = steps_per_epoch * hp["n_epochs"]
    valid = sim.job.get("validation_file") is not None
    seed_shift = (sim.job["seed"] % 97) / 970
    for step in range(1, total + 1):
        progress = step / total
        loss = 0.25 + 1.9 * math.exp(-3 * progress) + 0.04 * math.sin(step + seed_shift)
        metrics = {
            "step": step,
            "train_loss": round(loss, 4),
            "train_mean_token_accuracy": round(min(0.99, 0.45 + 0.5 * (1 - math.exp(-3 * progress))), 4),
        }
        if valid:
            metrics["valid_loss"] = round(loss + 0.08, 4)
            metrics["valid_mean_token_accuracy"] = round(metrics["train_mean_token_accuracy"] - 0.03, 4)
        sim.steps.append(metrics)
    sim.checkpoint_steps = [steps_per_epoch * e for e in range(max(1, hp["n_epochs"] - 2), hp["n_epochs"] + 1)]


def emit_metrics(srv: OpenAIServer, sim: JobSim, upto: int) -> None:
    total = len(sim.steps)
    stride = max(1, math.ceil(total / MAX_METRIC_EVENTS))
    while sim.emitted < upto:
        metrics = sim.steps[sim.emitted]
        sim.emitted += 1
        step = int(metrics["step"])
        if step % stride and step != total:
            continue
        data = {**metrics, "total_steps": total}
        event(srv, sim, f"Step {step}/{total}: training loss={metrics['train_loss']:.2f}", type="metrics", data=data)


def succeed(srv: OpenAIServer, sim: JobSim) -> None:
    job = sim.job
    short = job["id"].rsplit("-", 1)[-1][:8]
    suffix = job.get("user_provided_suffix") if sim.provider == "openai" else job.get("suffix")
    root = root_base(srv, sim)
    if sim.provider == "openai":
        model_id = f"ft:{root}:{ORG_SLUG}:{suffix or ''}:{short}"
    else:
        model_id = f"{root}.ft-{srv.rng.getrandbits(128):032x}" + (f"-{suffix}" if suffix else "")
    epochs = job["hyperparameters"]["n_epochs"]
    for step in sim.checkpoint_steps:
        metrics = dict(sim.steps[step - 1])
        if job.get("validation_file"):
            metrics["full_valid_loss"] = metrics["valid_loss"]
            metrics["full_valid_mean_token_accuracy"] = metrics["valid_mean_token_accuracy"]
        ckpt_model = f"{model_id}:ckpt-step-{step}"
        sim.checkpoints.append(
            {
                "id": srv.new_id("ftckpt_" if sim.provider == "openai" else "ftchkpt-", sim.provider),
                "object": "fine_tuning.job.checkpoint",
                "created_at": srv.now(),
                "fine_tuned_model_checkpoint": ckpt_model,
                "fine_tuning_job_id": job["id"],
                "step_number": step,
                "metrics": metrics,
            }
        )
        srv.models[ckpt_model] = sim
        event(srv, sim, f"Checkpoint created at step {step}")
    srv.models[model_id] = sim
    csv = metrics_csv(sim.steps, sim.provider)
    result = store_file(
        srv,
        sim.provider,
        "step_metrics.csv" if sim.provider == "openai" else "results.csv",
        "fine-tune-results",
        csv,
        processed=True,
    )
    job.update(fine_tuned_model=model_id, result_files=[result["id"]], trained_tokens=sim.tokens * epochs)
    event(srv, sim, f"New fine-tuned model created: {model_id}")
    event(srv, sim, "The job has successfully completed")
    finish(srv, sim, "succeeded")


def fail(srv: OpenAIServer, sim: JobSim, code: str, message: str, param: str | None) -> None:
    sim.job["error"] = {"code": code, "message": message, "param": param}
    event(srv, sim, message, level="error")
    finish(srv, sim, "failed")


def finish(srv: OpenAIServer, sim: JobSim, status: str) -> None:
    if status == "cancelled":
        event(srv, sim, "Fine-tuning job cancelled")
    sim.job.update(status=status, finished_at=srv.now(), estimated_finish=None)


def event(
    srv: OpenAIServer,
    sim: JobSim,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    if sim.provider == "azure" and level == "warn":
        level = "warning"
    sim.events.append(
        {
            "id": srv.new_id("ftevent-", sim.provider),
            "object": "fine_tuning.job.event",
            "created_at": srv.now(),
            "level": level,
            "message": message,
            "type": type,
            "data": data or {},
        }
    )


def metrics_csv(steps: list[dict[str, float]], provider: str) -> bytes:
    cols = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    if provider == "azure":
        cols = ["step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    lines = [",".join(cols)]
    for m in steps:
        acc = m["train_mean_token_accuracy"]
        row = [m["step"], m["train_loss"], acc, m.get("valid_loss", ""), m.get("valid_mean_token_accuracy", "")]
        lines.append(",".join(str(v) for v in row))
    return ("\n".join(lines) + "\n").encode()
