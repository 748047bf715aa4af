"""Preflight checks of the hosted trainers (OpenAI, Azure OpenAI): read-only calls that
catch, before any file is uploaded or job created, what would otherwise fail after a
billed fine-tuning job (a base model the account cannot fine-tune, a baseline deployment
that does not exist, a refused key)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from ftpipe.preflight import Check, PreflightContext, attempt, skipped

_NEEDS_BASE = ("base", "few_shot")  # built-in baselines that call the base model


def _baseline_models(p: Any) -> tuple[bool, list[str]]:
    """(whether a built-in baseline calls the base model, the openai:<model> baselines)."""
    ev = p.evaluate
    if ev is None:
        return False, []
    uses_base, named = False, []
    for item in ev.baselines:
        name = item if isinstance(item, str) else item.name
        model = None if isinstance(item, str) else item.model
        if model is None and name in _NEEDS_BASE:
            uses_base = True
        elif model and model.startswith("openai:"):
            named.append(model[len("openai:") :])
    return uses_base, named


# --------------------------------------------------------------------------- OpenAI


def openai_checks(ctx: PreflightContext, trainer: Any) -> Iterator[Check]:
    """The key works and every model the run will use exists for it."""
    from ftpipe.trainers.openai_backend import make_client

    base = ctx.pipeline.model.base
    try:
        client = make_client(trainer).with_options(max_retries=2, timeout=20)
    except Exception as exc:  # noqa: BLE001 - a missing package is reported as a failed check
        yield Check("train", "OpenAI client", False, str(exc), getattr(exc, "hint", "") or "")
        return
    models = [("train", base, "the base model to fine-tune")] if ctx.runs("train") else []
    if ctx.runs("evaluate"):
        uses_base, named = _baseline_models(ctx.pipeline)
        if uses_base and not models:
            models.append(("evaluate", base, "the base model the base/few_shot baselines call"))
        models += [("evaluate", m, "a baseline model") for m in named]
    for step, model, role in models:
        yield attempt(
            step,
            f"OpenAI model {model} exists for this key ({role})",
            partial(_openai_model, client, model),
            fix="set model.base to a model your organization can fine-tune (e.g. "
            "gpt-4o-mini-2024-07-18); `GET /v1/models` lists what the key can use",
        )


def _openai_model(client: Any, model: str) -> str | None:
    from ftpipe.remote.openai_errors import is_not_found, openai_errors
    from ftpipe.trainers.openai_backend import HINTS

    try:
        with openai_errors(f"looking up model {model}", provider="openai", hints=HINTS):
            client.models.retrieve(model)
    except Exception as exc:
        if is_not_found(getattr(exc, "__cause__", None) or exc) or getattr(exc, "status", None) == 404:
            return f"OpenAI knows no model '{model}' that this key may use"
        raise
    return None


# --------------------------------------------------------------------------- Azure OpenAI


def azure_checks(ctx: PreflightContext, trainer: Any) -> Iterator[Check]:
    """The key works, the base model can be fine-tuned on this resource, and the
    deployment the baselines call exists (Azure serves a model only through one)."""
    from ftpipe.trainers.azure_backend import make_client

    p = ctx.pipeline
    base = p.model.base
    try:
        client = make_client(trainer).with_options(max_retries=2, timeout=20)
    except Exception as exc:  # noqa: BLE001
        yield Check("train", "Azure OpenAI client", False, str(exc), getattr(exc, "hint", "") or "")
        return
    if ctx.runs("train"):
        yield attempt(
            "train",
            f"Azure OpenAI resource can fine-tune {base}",
            lambda: _azure_fine_tunable(client, base),
            fix="pick a base model this resource's region can fine-tune (Azure portal → Model catalog, "
            "filter 'fine-tuning'); Azure names have no dots: gpt-35-turbo-0613",
        )
    uses_base, _ = _baseline_models(p)
    if not (ctx.runs("evaluate") and uses_base):
        return
    deployment = getattr(trainer, "base_deployment", None)
    what = f"a deployment serves the base model {base} for the base/few_shot baselines"
    if not deployment:
        yield Check(
            "evaluate",
            what,
            False,
            "Azure serves a model only through a deployment, and the pipeline names none for the base model",
            "deploy the base model in the Azure portal and name it in trainer.base_deployment "
            "(or drop base/few_shot from evaluate.baselines)",
        )
        return
    targets = [
        t for t in p.deploy if getattr(type(t), "caps", None) is not None and "azure-openai" in type(t).caps.providers
    ]
    if not targets:
        yield skipped(
            "evaluate",
            f"deployment {deployment} exists",
            "no azure-openai deploy target names the account, so the deployment cannot be looked up "
            "from here (it is called by name during evaluate)",
        )
        return
    yield attempt(
        "evaluate",
        f"deployment {deployment} exists (serves {base} for the baselines)",
        lambda: _arm_deployment(targets[0], deployment),
        fix=f"create a deployment of {base} named {deployment} in account {targets[0].account} "
        "(Azure portal → Deployments), or set trainer.base_deployment to the one that serves it",
    )


def _azure_fine_tunable(client: Any, base: str) -> str | None:
    """``GET /openai/models/{id}``: the model exists on this resource and can be fine-tuned."""
    from ftpipe.remote.openai_errors import openai_errors
    from ftpipe.trainers.azure_backend import HINTS

    try:
        with openai_errors(f"looking up model {base}", provider="azure-openai", hints=HINTS):
            raw = client.models.retrieve(base)
    except Exception as exc:
        if getattr(exc, "status", None) == 404:
            return f"this Azure OpenAI resource has no model '{base}'"
        raise
    caps = (getattr(raw, "model_extra", None) or {}).get("capabilities") or {}
    if caps and not caps.get("fine_tune"):
        return f"'{base}' exists on this resource but cannot be fine-tuned here (capabilities.fine_tune is false)"
    return None


def _arm_deployment(target: Any, deployment: str) -> str | None:
    from ftpipe.deploy.azure import arm_request, deployment_url, management_token

    probe = target.model_copy(update={"deployment": deployment})
    status, body = arm_request(
        "GET", deployment_url(probe), management_token(probe), what=f"looking up deployment {deployment}"
    )
    if status == 404:
        return f"account {target.account} has no deployment named {deployment}"
    state = ((body or {}).get("properties") or {}).get("provisioningState")
    if state and state != "Succeeded":
        return f"deployment {deployment} is {state}, not Succeeded"
    return None
