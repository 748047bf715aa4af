"""The ``azure-openai`` deploy target: an Azure OpenAI deployment of the fine-tuned model,
made through Azure Resource Manager, then smoke-tested through the data plane.

``PUT .../accounts/{account}/deployments/{name}`` creates or updates the deployment; GET is
polled until ``provisioningState`` is Succeeded or Failed. A deployment that already serves
the same model, version and sku is left alone, so an unchanged redeploy changes nothing.
ARM is called with a plain HTTP client and a bearer token (``management_token``, else
azure-identity): azure-core's token policy refuses plain-http endpoints, which tests use.
:func:`arm_error` is the one place ARM answers become ftpipe errors.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from enum import Enum
from typing import Any
from urllib.parse import quote

from ftpipe.contracts import ModelRef, StepContext, StepResult
from ftpipe.errors import MissingDependency, RemoteError, StepError
from ftpipe.remote.openai_errors import is_retriable, translate
from ftpipe.remote.retry import RetryPolicy, call_with_retries
from ftpipe.spec.models import AzureDeployTarget
from ftpipe.store import write_json

SERVICE = "Azure Resource Manager"
PROVIDER = "azure-openai"  # the ModelRef.provider this target deploys (its caps.providers)
MANAGEMENT_SCOPE = "https://management.azure.com/.default"
SMOKE_PROMPT = "Hello! Please answer with one short sentence."
ARM_RETRIES = 5
SMOKE_ATTEMPTS = 6
HTTP_TIMEOUT_S = 60
ARM_POLICY = RetryPolicy(base_delay=0.2, max_delay=60.0)


class ProvisioningState(str, Enum):
    ACCEPTED = "Accepted"
    CREATING = "Creating"
    UPDATING = "Updating"
    MOVING = "Moving"
    DELETING = "Deleting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"


TERMINAL = frozenset({ProvisioningState.SUCCEEDED, ProvisioningState.FAILED, ProvisioningState.CANCELED})

_HINTS = {
    401: "the management token is missing, expired or for the wrong audience: set AZURE_MANAGEMENT_TOKEN="
    "$(az account get-access-token --query accessToken -o tsv), or leave it unset to sign in with azure-identity",
    403: "the identity needs the 'Cognitive Services Contributor' role on the account (or its resource group)",
    404: "check subscription_id, resource_group and account (the Azure OpenAI resource's name)",
    409: "another operation on this deployment is in progress: wait and run again",
    429: "Azure Resource Manager is throttling: wait and run again",
}


# --------------------------------------------------------------------------- ARM


def arm_error(what: str, status: int, body: Any, headers: Any) -> RemoteError:
    """An ARM error answer as a RemoteError (code, message, request id, hint)."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = error.get("message") or (body if isinstance(body, str) and body else f"HTTP {status}")
    rid = None
    if headers is not None:
        rid = (
            headers.get("x-ms-request-id") or headers.get("x-ms-correlation-request-id") or headers.get("x-request-id")
        )
    hint = _HINTS.get(status) or ("Azure had a server error: run again later" if status >= 500 else None)
    if status == 400:
        hint = "check the model name and version (the fine-tuned model id) and the sku (standard, capacity)"
    return RemoteError(SERVICE, f"{what}: {message}", status=status, code=error.get("code"), request_id=rid, hint=hint)


def arm_request(
    method: str, url: str, token: str, *, what: str, body: Any = None, log: Callable[[str], None] | None = None
) -> tuple[int, Any]:
    """One ARM call with retries on throttling, server errors and dropped connections.
    Returns (status, JSON body); 404 is returned, other errors raise RemoteError."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"

    def once() -> tuple[int, Any]:
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
                return resp.status, _json(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return 404, _json(exc.read())
            raise

    try:
        return call_with_retries(once, what=what, log=log, attempts=ARM_RETRIES, policy=ARM_POLICY)
    except urllib.error.HTTPError as exc:
        raise arm_error(what, exc.code, _json(exc.read()), exc.headers) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RemoteError(
            SERVICE,
            f"{what}: cannot reach {url.split('/subscriptions/')[0]} ({reason})",
            hint="check the network and target.management_endpoint",
        ) from None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace")


def management_token(target: AzureDeployTarget) -> str:
    """``management_token`` if set, else a token from azure-identity."""
    if target.management_token:
        return target.management_token
    from ftpipe.trainers.azure_backend import entra_token_provider

    provider = entra_token_provider(MANAGEMENT_SCOPE, "the azure-openai deploy target without management_token")
    try:
        return provider()
    except MissingDependency:
        raise
    except Exception as exc:  # noqa: BLE001 - azure-identity raises several credential errors
        raise StepError(
            f"{SERVICE}: could not get a management token: {str(exc).splitlines()[0] if str(exc) else exc!r}",
            hint="sign in with `az login`, or set AZURE_MANAGEMENT_TOKEN="
            "$(az account get-access-token --query accessToken -o tsv)",
        ) from None


def deployment_url(target: AzureDeployTarget) -> str:
    def seg(s: str) -> str:
        return quote(s, safe="")

    return (
        f"{target.management_endpoint.rstrip('/')}/subscriptions/{seg(target.subscription_id)}/resourceGroups/"
        f"{seg(target.resource_group)}/providers/Microsoft.CognitiveServices/accounts/{seg(target.account)}/"
        f"deployments/{seg(target.deployment)}?api-version={seg(target.management_api_version)}"
    )


def deployment_body(target: AzureDeployTarget, model_id: str) -> dict:
    return {
        "sku": {"name": target.sku, "capacity": target.capacity},
        "properties": {"model": {"format": "OpenAI", "name": model_id, "version": target.model_version}},
    }


def _same(existing: Any, wanted: dict) -> bool:
    if not isinstance(existing, dict):
        return False
    model = (existing.get("properties") or {}).get("model") or {}
    sku = existing.get("sku") or {}
    want_model, want_sku = wanted["properties"]["model"], wanted["sku"]
    return (model.get("name"), str(model.get("version")), str(sku.get("name", "")).lower(), sku.get("capacity")) == (
        want_model["name"],
        str(want_model["version"]),
        want_sku["name"].lower(),
        want_sku["capacity"],
    )


def _label(state: Any) -> str:
    return state.value if isinstance(state, Enum) else str(state)


def _state(dep: Any) -> Any:
    raw = ((dep or {}).get("properties") or {}).get("provisioningState") if isinstance(dep, dict) else None
    try:
        return ProvisioningState(raw)
    except ValueError:
        return raw


# --------------------------------------------------------------------------- the target


class AzureDeploy:
    """Deploys an Azure OpenAI fine-tune as a deployment of the account."""

    name = "azure-openai"
    config_model = AzureDeployTarget

    def preflight(self, ctx: Any, target: Any) -> list[Any]:
        """Read-only checks before the run starts (ftpipe.preflight)."""
        from ftpipe.deploy import preflight_checks as pc

        return list(pc.azure_account_checks(ctx, target))

    def deploy(self, ctx: StepContext) -> StepResult:
        target: AzureDeployTarget = ctx.options["target"]
        ref = ModelRef.read(ctx.inputs["train"])
        if ref.kind != "hosted" or ref.provider != PROVIDER or not ref.model_id:
            raise StepError(
                f"the azure-openai target deploys an Azure OpenAI fine-tune; the train step made a "
                f"{ref.provider or ref.kind} model",
                hint="use trainer.backend: azure-openai",
            )
        trainer = ctx.pipeline.trainer
        token = management_token(target)
        url = deployment_url(target)
        wanted = deployment_body(target, ref.model_id)
        t0 = time.monotonic()

        status, existing = arm_request("GET", url, token, what=f"reading deployment {target.deployment}", log=ctx.log)
        changed = not (status == 200 and _same(existing, wanted) and _state(existing) != ProvisioningState.FAILED)
        if changed:
            action = "updating" if status == 200 else "creating"
            ctx.log(
                f"{action} deployment {target.deployment} of {ref.model_id} (sku {target.sku}, "
                f"capacity {target.capacity}) in account {target.account}"
            )
            _, dep = arm_request(
                "PUT", url, token, what=f"{action} deployment {target.deployment}", body=wanted, log=ctx.log
            )
        else:
            ctx.log(f"deployment {target.deployment} already serves {ref.model_id}: unchanged")
            dep = existing
        dep = self._wait(ctx, target, url, token, dep, poll=getattr(trainer, "poll", None))
        state = _state(dep)
        seconds = round(time.monotonic() - t0, 3)
        if state != ProvisioningState.SUCCEEDED:
            raise RemoteError(
                SERVICE,
                f"deployment {target.deployment} of {ref.model_id} ended {_label(state)}",
                hint="check that the account's region can serve this fine-tune and that the sku has "
                "quota (Azure portal → the resource → Deployments shows the reason)",
            )
        endpoint = getattr(trainer, "endpoint", "").rstrip("/")
        api_version = getattr(trainer, "api_version", "2024-10-21")
        doc: dict[str, Any] = {
            "target": self.name,
            "name": target.name,
            "deployment": target.deployment,
            "model": ref.model_id,
            "model_version": target.model_version,
            "sku": wanted["sku"],
            "account": target.account,
            "resource_id": dep.get("id") if isinstance(dep, dict) else None,
            "url": f"{endpoint}/openai/deployments/{target.deployment}/chat/completions?api-version={api_version}",
            "provisioningState": _label(state),
            "changed": changed,
            "job_id": ref.job_id,
        }
        if target.smoke_test:
            doc["smoke_test"] = self._smoke(ctx, trainer, target)
        write_json(ctx.out_dir / "deploy.json", doc)
        metrics = {"provisioning_seconds": seconds, "changed": changed}
        if target.smoke_test:
            metrics["smoke_test_ok"] = doc["smoke_test"]["ok"]
        return StepResult(
            metrics=metrics,
            summary=f"deployment {target.deployment} serves {ref.model_id}" + ("" if changed else " (unchanged)"),
        )

    def _wait(self, ctx: StepContext, target: AzureDeployTarget, url: str, token: str, dep: Any, *, poll: Any) -> Any:
        interval = getattr(poll, "interval", 5.0)
        max_interval = getattr(poll, "max_interval", 30.0)
        deadline = time.monotonic() + target.timeout_s
        last = None
        first = True  # look once right away: a deployment is often ready at once
        while True:
            state = _state(dep)
            if state != last:
                ctx.log(f"deployment {target.deployment}: {_label(state)}")
                ctx.progress(0, None, f"deployment {_label(state)}")
                last = state
            if state in TERMINAL:
                return dep
            if time.monotonic() > deadline:
                raise StepError(
                    f"deployment {target.deployment} is still {_label(state)} after {target.timeout_s}s "
                    "(target.timeout_s)",
                    hint="ARM keeps provisioning it: run again later to wait again",
                )
            if not first:
                time.sleep(interval)
                interval = min(interval * 1.5, max_interval)
            first = False
            status, dep = arm_request("GET", url, token, what=f"reading deployment {target.deployment}", log=ctx.log)
            if status == 404:
                raise RemoteError(
                    SERVICE,
                    f"deployment {target.deployment} disappeared while provisioning",
                    status=404,
                    hint="someone deleted it, or the account is wrong: run again",
                )

    def _smoke(self, ctx: StepContext, trainer: Any, target: AzureDeployTarget) -> dict:
        """One chat completion through the deployment (retried while it propagates)."""
        import openai

        from ftpipe.trainers.azure_backend import make_client

        client = make_client(trainer)
        system = ctx.pipeline.dataset.system_prompt
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": SMOKE_PROMPT}
        ]
        wait = getattr(getattr(trainer, "poll", None), "interval", 5.0)

        def answering(exc: BaseException) -> bool:
            # a new deployment may answer 404 for a few minutes while it propagates
            return isinstance(exc, openai.NotFoundError) or is_retriable(exc)

        try:
            resp = call_with_retries(
                lambda: client.chat.completions.create(
                    model=target.deployment, messages=messages, max_tokens=32, temperature=0
                ),
                what=f"smoke test of deployment {target.deployment}",
                log=ctx.log,
                attempts=SMOKE_ATTEMPTS,
                is_transient=answering,
                policy=RetryPolicy(base_delay=wait, max_delay=60.0),
                secrets=ctx.secrets,
            )
        except openai.OpenAIError as exc:
            from ftpipe.trainers.azure_backend import HINTS

            raise translate(
                exc,
                f"smoke test of deployment {target.deployment}",
                provider=PROVIDER,
                where=trainer.endpoint,
                hints=HINTS,
            ) from None
        reply = (resp.choices[0].message.content or "").strip() if resp.choices else ""
        ctx.log(f"smoke test: {reply[:200]!r}")
        return {"ok": bool(reply), "prompt": SMOKE_PROMPT, "reply": reply}
