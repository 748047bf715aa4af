"""Fine-tuning job routes: create (the request checks), list, retrieve (a poll), cancel,
delete (Azure), events and checkpoints."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tests.fakes.openai_http import ApiError, Request, Response, page
from tests.fakes.openai_job_checks import (
    azure_pending_hp,
    check_integrations,
    check_metadata,
    check_method,
    check_suffix,
    top_level_hp,
)
from tests.fakes.openai_jobsim import (
    AZURE_FINE_TUNABLE,
    AZURE_STATES,
    OPENAI_ALIASES,
    OPENAI_FINE_TUNABLE,
    OPENAI_STATES,
    ORGANIZATION_ID,
    TERMINAL,
    JobOutcome,
    JobSim,
    event,
    finish,
    poll_job,
    root_base,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tests.fakes.openai_server import OpenAIServer


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
            raise ApiError(
                400,
                f"Unrecognized request argument supplied: {key}{hint}",
                param=key,
                code="unknown_parameter" if provider == "openai" else None,
            )
    for key in ("model", "training_file"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise ApiError(
                400,
                f"Missing required parameter: '{key}'.",
                param=key,
                code="missing_required_parameter" if provider == "openai" else None,
            )
    model, base = resolve_base_model(srv, provider, body["model"])
    method_type, hp = check_method(body, provider)
    supported = (OPENAI_FINE_TUNABLE if provider == "openai" else AZURE_FINE_TUNABLE)[base]
    if method_type not in supported:
        raise ApiError(
            400,
            f"Model {body['model']} does not support the {method_type} method.",
            param="method",
            code="invalid_value" if provider == "openai" else None,
        )
    check_training_file(srv, req, body["training_file"], "training_file")
    if body.get("validation_file") is not None:
        check_training_file(srv, req, body["validation_file"], "validation_file")
    suffix = check_suffix(body.get("suffix"), provider)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 2147483647):
        raise ApiError(
            400,
            f"Invalid seed: {seed!r}. Must be an integer between 0 and 2147483647.",
            param="seed",
            code="invalid_value" if provider == "openai" else None,
        )
    metadata = check_metadata(body.get("metadata"))
    integrations = check_integrations(body.get("integrations"))

    job_id = srv.new_id("ftjob-", provider)
    if seed is None:
        seed = srv.rng.randrange(2**31)
    outcome = srv.outcomes.pop(0) if srv.outcomes else JobOutcome()
    job: dict[str, Any]
    if provider == "openai":
        job = {
            "id": job_id,
            "object": "fine_tuning.job",
            "created_at": srv.now(),
            "error": None,
            "fine_tuned_model": None,
            "finished_at": None,
            "hyperparameters": top_level_hp(hp),
            "model": model,
            "organization_id": ORGANIZATION_ID,
            "result_files": [],
            "seed": seed,
            "status": OPENAI_STATES[0],
            "trained_tokens": None,
            "training_file": body["training_file"],
            "validation_file": body.get("validation_file"),
            "estimated_finish": None,
            "integrations": integrations,
            "metadata": metadata,
            "method": {"type": method_type, method_type: {"hyperparameters": dict(hp)}},
            "user_provided_suffix": suffix,
        }
    else:
        job = {
            "id": job_id,
            "object": "fine_tuning.job",
            "created_at": srv.now(),
            "finished_at": None,
            "status": AZURE_STATES[0],
            "model": model,
            "fine_tuned_model": None,
            "training_file": body["training_file"],
            "validation_file": body.get("validation_file"),
            "hyperparameters": azure_pending_hp(hp),
            "result_files": [],
            "trained_tokens": None,
            "suffix": suffix,
            "seed": seed,
            "estimated_finish": None,
            "error": None,
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
        raise ApiError(
            400,
            f"Model {name} is not available for fine-tuning or does not exist.",
            param="model",
            code="model_not_available",
        )
    raise ApiError(
        400,
        f"The specified base model '{name}' does not support fine-tuning.{hint}",
        param="model",
        code="invalidPayload",
    )


def check_training_file(srv: OpenAIServer, req: Request, file_id: Any, param: str) -> None:
    if not isinstance(file_id, str) or srv.file_provider.get(file_id) != req.surface:
        raise ApiError(
            400,
            f"invalid {param}: {file_id}",
            param=param,
            code="invalid_file_id" if req.surface == "openai" else "invalidPayload",
        )
    obj = srv.files[file_id]
    if obj["purpose"] != "fine-tune":
        raise ApiError(
            400,
            f"File {file_id} has purpose '{obj['purpose']}', expected 'fine-tune'.",
            param=param,
            code="invalid_file_purpose" if req.surface == "openai" else "invalidPayload",
        )
    if obj["status"] != "processed":
        raise ApiError(
            400,
            f"The file {file_id} is not ready for fine-tuning (status: {obj['status']}). Wait until it is processed.",
            param=param,
            code="file_not_ready" if req.surface == "openai" else "invalidPayload",
        )


def get_sim(srv: OpenAIServer, req: Request, job_id: str) -> JobSim:
    sim = srv.sims.get(job_id)
    if sim is None or sim.provider != req.surface:
        if req.surface == "azure":
            raise ApiError(404, f"The specified fine-tuning job '{job_id}' could not be found.", code="notFound")
        raise ApiError(
            404,
            f"Could not find fine-tuning job: {job_id}",
            param="fine_tuning_job_id",
            code="fine_tuning_job_not_found",
        )
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
        raise ApiError(
            400,
            f"Job has already completed: {job_id}",
            code="invalid_job_state" if req.surface == "openai" else "invalidPayload",
        )
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
