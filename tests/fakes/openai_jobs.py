"""Fine-tuning jobs: create (the request checks), list/retrieve/cancel/delete, events and
checkpoints, and how a job moves through its states when polled."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakes.openai_data import DataError, parse_training_data
from tests.fakes.openai_files import store_file
from tests.fakes.openai_http import ApiError, Request, Response, page

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


# ---------------------------------------------------------------- job create


def job_create(srv: OpenAIServer, req: Request) -> Response:
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    provider = req.surface
    preview = "preview" in req.api_version
    allowed = {"model", "training_file", "validation_file", "hyperparameters", "suffix", "seed"}
    if provider == "openai" or preview:
        allowed |= {"method", "metadata", "integrations"}
    for key in body:
        if key not in allowed:
            hint = " (not in this api-version; use a preview api-version)" if provider == "azure" else ""
            raise ApiError(400, f"Unrecognized request argument supplied: {key}{hint}", param=key,
                            code="unknown_parameter" if provider == "openai" else None)
    for key in ("model", "training_file"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise ApiError(400, f"Missing required parameter: '{key}'.", param=key,
                            code="missing_required_parameter" if provider == "openai" else None)
    model, base = resolve_base_model(srv, provider, body["model"])
    method_type, hp = check_method(body, provider)
    supported = (OPENAI_FINE_TUNABLE if provider == "openai" else AZURE_FINE_TUNABLE)[base]
    if method_type not in supported:
        raise ApiError(400, f"Model {body['model']} does not support the {method_type} method.",
                        param="method", code="invalid_value" if provider == "openai" else None)
    check_training_file(srv, req, body["training_file"], "training_file")
    if body.get("validation_file") is not None:
        check_training_file(srv, req, body["validation_file"], "validation_file")
    suffix = check_suffix(body.get("suffix"), provider)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 2147483647):
        raise ApiError(400, f"Invalid seed: {seed!r}. Must be an integer between 0 and 2147483647.",
                        param="seed", code="invalid_value" if provider == "openai" else None)
    metadata = check_metadata(body.get("metadata"))
    integrations = check_integrations(body.get("integrations"))

    job_id = srv.new_id("ftjob-", provider)
    if seed is None:
        seed = srv.rng.randrange(2**31)
    outcome = srv.outcomes.pop(0) if srv.outcomes else JobOutcome()
    job: dict[str, Any]
    if provider == "openai":
        job = {
            "id": job_id, "object": "fine_tuning.job", "created_at": srv.now(), "error": None,
            "fine_tuned_model": None, "finished_at": None, "hyperparameters": top_level_hp(hp),
            "model": model, "organization_id": ORGANIZATION_ID, "result_files": [], "seed": seed,
            "status": OPENAI_STATES[0], "trained_tokens": None, "training_file": body["training_file"],
            "validation_file": body.get("validation_file"), "estimated_finish": None,
            "integrations": integrations, "metadata": metadata,
            "method": {"type": method_type, method_type: {"hyperparameters": dict(hp)}},
            "user_provided_suffix": suffix,
        }
    else:
        job = {
            "id": job_id, "object": "fine_tuning.job", "created_at": srv.now(), "finished_at": None,
            "status": AZURE_STATES[0], "model": model, "fine_tuned_model": None,
            "training_file": body["training_file"], "validation_file": body.get("validation_file"),
            "hyperparameters": azure_pending_hp(hp), "result_files": [], "trained_tokens": None,
            "suffix": suffix, "seed": seed, "estimated_finish": None, "error": None,
        }
        if preview:
            job["method"] = {"type": method_type, method_type: {"hyperparameters": dict(hp)}}
            job["metadata"] = metadata
    sim = JobSim(provider, job, method_type, outcome, hp)
    srv.sims[job_id] = sim
    srv.jobs[job_id] = job
    event(srv, sim, f"Created fine-tuning job: {job_id}")
    files = f"Validating training file: {job['training_file']}"
    if job["validation_file"]:
        files += f" and validation file: {job['validation_file']}"
    event(srv, sim, files)
    return srv.ok(req, job, created=f"fine_tuning/jobs/{job_id}")


def resolve_base_model(srv: OpenAIServer, provider: str, name: str) -> tuple[str, str]:
    """(model as the job reports it, fine-tunable snapshot it descends from)."""
    catalog = OPENAI_FINE_TUNABLE if provider == "openai" else AZURE_FINE_TUNABLE
    if provider == "openai" and name in OPENAI_ALIASES:
        return OPENAI_ALIASES[name], OPENAI_ALIASES[name]
    if name in catalog:
        return name, name
    sim = srv.models.get(name)
    if sim is not None and sim.provider == provider:  # continued fine-tuning
        return name, root_base(srv, sim)
    hint = ""
    if provider == "azure" and "." in name and name.replace("3.5", "35") in catalog:
        hint = f" Azure model names have no dots: did you mean '{name.replace('3.5', '35')}'?"
    if provider == "openai":
        raise ApiError(400, f"Model {name} is not available for fine-tuning or does not exist.",
                        param="model", code="model_not_available")
    raise ApiError(400, f"The specified base model '{name}' does not support fine-tuning.{hint}",
                    param="model", code="invalidPayload")


def root_base(srv: OpenAIServer, sim: JobSim) -> str:
    model = sim.job["model"]
    parent = srv.models.get(model)
    return root_base(srv, parent) if parent is not None else model


def check_training_file(srv: OpenAIServer, req: Request, file_id: Any, param: str) -> None:
    if not isinstance(file_id, str) or srv.file_provider.get(file_id) != req.surface:
        raise ApiError(400, f"invalid {param}: {file_id}", param=param,
                        code="invalid_file_id" if req.surface == "openai" else "invalidPayload")
    obj = srv.files[file_id]
    if obj["purpose"] != "fine-tune":
        raise ApiError(400, f"File {file_id} has purpose '{obj['purpose']}', expected 'fine-tune'.",
                        param=param, code="invalid_file_purpose" if req.surface == "openai" else "invalidPayload")
    if obj["status"] != "processed":
        raise ApiError(400, f"The file {file_id} is not ready for fine-tuning (status: {obj['status']}). "
                             "Wait until it is processed.", param=param,
                        code="file_not_ready" if req.surface == "openai" else "invalidPayload")


def get_sim(srv: OpenAIServer, req: Request, job_id: str) -> JobSim:
    sim = srv.sims.get(job_id)
    if sim is None or sim.provider != req.surface:
        if req.surface == "azure":
            raise ApiError(404, f"The specified fine-tuning job '{job_id}' could not be found.", code="notFound")
        raise ApiError(404, f"Could not find fine-tuning job: {job_id}", param="fine_tuning_job_id",
                        code="fine_tuning_job_not_found")
    return sim


def job_retrieve(srv: OpenAIServer, req: Request, job_id: str) -> Response:
    sim = get_sim(srv, req, job_id)
    poll_job(srv, sim)
    return Response(200, sim.job)


def job_list(srv: OpenAIServer, req: Request) -> Response:
    wanted: dict[str, str] = {}
    null_metadata = False
    for key, value in req.query:
        m = re.fullmatch(r"metadata\[(.*)\]", key)
        if m:
            wanted[m.group(1)] = value
        elif key == "metadata" and value == "null":
            null_metadata = True
    items = []
    for sim in reversed(list(srv.sims.values())):  # newest first
        if sim.provider != req.surface:
            continue
        meta = sim.job.get("metadata")
        if null_metadata and meta:
            continue
        if wanted and not (meta and all(meta.get(k) == v for k, v in wanted.items())):
            continue
        items.append(sim.job)
    return Response(200, page(items, req, default_limit=20, max_limit=100))


def job_cancel(srv: OpenAIServer, req: Request, job_id: str) -> Response:
    sim = get_sim(srv, req, job_id)
    if sim.job["status"] in TERMINAL:
        raise ApiError(400, f"Job has already completed: {job_id}",
                        code="invalid_job_state" if req.surface == "openai" else "invalidPayload")
    finish(srv, sim, "cancelled")
    return Response(200, sim.job)


def job_delete(srv: OpenAIServer, req: Request, job_id: str) -> Response:  # Azure only
    sim = get_sim(srv, req, job_id)
    if sim.job["status"] not in TERMINAL:
        raise ApiError(400, f"Job {job_id} is still running; cancel it first.")
    del srv.sims[job_id], srv.jobs[job_id]
    return Response(204)


def job_events(srv: OpenAIServer, req: Request, job_id: str) -> Response:
    sim = get_sim(srv, req, job_id)
    return Response(200, page(list(reversed(sim.events)), req, default_limit=20, max_limit=100))


def job_checkpoints(srv: OpenAIServer, req: Request, job_id: str) -> Response:
    sim = get_sim(srv, req, job_id)
    return Response(200, page(list(reversed(sim.checkpoints)), req, default_limit=10, max_limit=100))


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
                content, sim.method, min_examples=10 if param == "training_file" else 1)
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
        metrics = {"step": step, "train_loss": round(loss, 4),
                   "train_mean_token_accuracy": round(min(0.99, 0.45 + 0.5 * (1 - math.exp(-3 * progress))), 4)}
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
        event(srv, sim, f"Step {step}/{total}: training loss={metrics['train_loss']:.2f}",
                    type="metrics", data=data)


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
        sim.checkpoints.append({
            "id": srv.new_id("ftckpt_" if sim.provider == "openai" else "ftchkpt-", sim.provider),
            "object": "fine_tuning.job.checkpoint", "created_at": srv.now(),
            "fine_tuned_model_checkpoint": ckpt_model, "fine_tuning_job_id": job["id"],
            "step_number": step, "metrics": metrics,
        })
        srv.models[ckpt_model] = sim
        event(srv, sim, f"Checkpoint created at step {step}")
    srv.models[model_id] = sim
    csv = metrics_csv(sim.steps, sim.provider)
    result = store_file(srv, sim.provider, "step_metrics.csv" if sim.provider == "openai" else "results.csv",
                              "fine-tune-results", csv, processed=True)
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


def event(srv: OpenAIServer, sim: JobSim, message: str, *, level: str = "info", type: str = "message",
           data: dict[str, Any] | None = None) -> None:
    if sim.provider == "azure" and level == "warn":
        level = "warning"
    sim.events.append({
        "id": srv.new_id("ftevent-", sim.provider), "object": "fine_tuning.job.event",
        "created_at": srv.now(), "level": level, "message": message, "type": type, "data": data or {},
    })


# ---------------------------------------------------------------- request validation helpers


def check_method(body: dict[str, Any], provider: str) -> tuple[str, dict[str, Any]]:
    """(method type, its hyperparameters with "auto" for unset ones)."""
    code = "invalid_value" if provider == "openai" else None
    method = body.get("method")
    top = body.get("hyperparameters")
    if top is not None and not isinstance(top, dict):
        raise ApiError(400, "'hyperparameters' must be an object.", param="hyperparameters", code=code)
    if method is None:
        method_type, hp, where = "supervised", dict(top or {}), "hyperparameters"
    else:
        if not isinstance(method, dict) or method.get("type") not in ("supervised", "dpo", "reinforcement"):
            raise ApiError(400, "method.type must be one of 'supervised', 'dpo', 'reinforcement'.",
                            param="method.type", code=code)
        method_type = method["type"]
        extra = set(method) - {"type", method_type}
        if extra:
            raise ApiError(400, f"method.{sorted(extra)[0]} does not match method.type '{method_type}'.",
                            param=f"method.{sorted(extra)[0]}", code=code)
        if method_type == "reinforcement":
            raise ApiError(400, f"Model {body.get('model')} does not support reinforcement fine-tuning.",
                            param="method.type", code=code)
        config = method.get(method_type) or {}
        if not isinstance(config, dict) or set(config) - {"hyperparameters"}:
            raise ApiError(400, f"method.{method_type} may only hold 'hyperparameters'.",
                            param=f"method.{method_type}", code=code)
        hp = dict(config.get("hyperparameters") or {})
        where = f"method.{method_type}.hyperparameters"
        if top and hp:
            raise ApiError(400, "Specify hyperparameters either in method or at the top level, not both.",
                            param="hyperparameters", code=code)
        hp = hp or dict(top or {})
    allowed = {"n_epochs", "batch_size", "learning_rate_multiplier"} | ({"beta"} if method_type == "dpo" else set())
    for key in hp:
        if key not in allowed:
            raise ApiError(400, f"Unknown hyperparameter '{key}' for the {method_type} method.",
                            param=f"{where}.{key}", code=code)
    ranges = {"n_epochs": (1, 50), "batch_size": (1, 256)}
    for key, value in hp.items():
        if value == "auto":
            continue
        bad = isinstance(value, bool) or not isinstance(value, (int, float))
        if key in ranges:
            lo, hi = ranges[key]
            bad = bad or not isinstance(value, int) or not lo <= value <= hi
            limits = f"an integer between {lo} and {hi}"
        elif key == "beta":
            bad = bad or not 0 < value <= 2
            limits = "a number in (0, 2]"
        else:
            bad = bad or not value > 0
            limits = "a number greater than 0"
        if bad:
            raise ApiError(400, f"Invalid {key}: {value!r}. Must be {limits} or 'auto'.",
                            param=f"{where}.{key}", code=code)
    for key in allowed:
        hp.setdefault(key, "auto")
    return method_type, hp


def check_suffix(suffix: Any, provider: str) -> str | None:
    if suffix is None:
        return None
    if provider == "openai":
        if not isinstance(suffix, str) or not 1 <= len(suffix) <= 64:
            raise ApiError(400, "suffix must be a string of 1 to 64 characters.", param="suffix",
                            code="invalid_value")
    elif not isinstance(suffix, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", suffix):
        raise ApiError(400, "The suffix may hold at most 40 characters from [A-Za-z0-9-_].", param="suffix")
    return suffix


def check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > 16:
        raise ApiError(400, "metadata must be an object with at most 16 pairs.", param="metadata",
                        code="invalid_value")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise ApiError(400, f"Invalid metadata entry {key!r}: keys hold at most 64 characters and values "
                                 "are strings of at most 512 characters.", param=f"metadata.{key}",
                            code="invalid_value")
    return dict(metadata)


def check_integrations(integrations: Any) -> list[dict[str, Any]]:
    if integrations is None:
        return []
    if not isinstance(integrations, list) or not all(
            isinstance(i, dict) and i.get("type") == "wandb" and isinstance(i.get("wandb"), dict)
            and isinstance(i["wandb"].get("project"), str) for i in integrations):
        raise ApiError(400, "integrations must be a list of {type: 'wandb', wandb: {project, ...}}.",
                        param="integrations", code="invalid_value")
    return integrations


def top_level_hp(hp: dict[str, Any]) -> dict[str, Any]:
    return {k: hp.get(k, "auto") for k in ("batch_size", "learning_rate_multiplier", "n_epochs")}


def azure_pending_hp(hp: dict[str, Any]) -> dict[str, Any]:
    # Azure reports hyperparameters it has not chosen yet as -1 (learning rate: 1).
    out = top_level_hp(hp)
    for key, unset in (("n_epochs", -1), ("batch_size", -1), ("learning_rate_multiplier", 1)):
        if out[key] == "auto":
            out[key] = unset
    return out


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
