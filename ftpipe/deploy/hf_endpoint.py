"""The ``hf-endpoint`` deploy target: an Inference Endpoint serving a Hub model repo.

Creates the endpoint, or updates it when the model revision or compute differ, at the
commit the ``hf-hub`` target of the same run pushed (else the repo's current head); waits
until it is ready, then sends one chat request as a smoke test.
"""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Any

from ftpipe.contracts import StepContext, StepResult
from ftpipe.deploy.hf_hub import hf_api, with_retries
from ftpipe.errors import RemoteError, StepError
from ftpipe.remote.hf import hub_errors
from ftpipe.spec.interpolate import redact
from ftpipe.spec.models import EndpointTarget
from ftpipe.store import write_json

SERVICE = "Hugging Face Inference Endpoints"
POLL_FIRST_S = 0.05
POLL_MAX_S = 10.0
SMOKE_PROMPT = "Hello! Please answer with one short sentence."


class EndpointState(str, Enum):
    PENDING = "pending"
    INITIALIZING = "initializing"
    UPDATING = "updating"
    UPDATE_FAILED = "updateFailed"
    RUNNING = "running"
    PAUSED = "paused"
    FAILED = "failed"
    SCALED_TO_ZERO = "scaledToZero"


READY = frozenset({EndpointState.RUNNING, EndpointState.SCALED_TO_ZERO})
FAILED = frozenset({EndpointState.FAILED, EndpointState.UPDATE_FAILED})
TERMINAL = READY | FAILED | {EndpointState.PAUSED}


def pushed_commit(ctx: StepContext, repo: str) -> str | None:
    """The commit an ``hf-hub`` step of this run pushed to ``repo``, if there is one."""
    candidates: list[Path] = [Path(p) for p in ctx.inputs.values()]
    # Deploy steps do not depend on each other: look the others up in this run's record.
    store = ctx.state_dir.parent.parent
    try:
        record = json.loads((store / "runs" / ctx.run_id / "run.json").read_text())
        candidates += [
            store / s["artifact"]
            for s in record.get("steps", {}).values()
            if s.get("kind") == "deploy" and s.get("artifact")
        ]
    except (OSError, ValueError):
        pass
    for folder in candidates:
        try:
            doc = json.loads((folder / "deploy.json").read_text())
        except (OSError, ValueError):
            continue
        if doc.get("target") == "hf-hub" and doc.get("repo") == repo and doc.get("commit"):
            return doc["commit"]
    return None


def _state(endpoint: Any) -> EndpointState | str:
    try:
        return EndpointState(str(getattr(endpoint.status, "value", endpoint.status)))
    except ValueError:
        return str(endpoint.status)


def _differs(endpoint: Any, target: EndpointTarget, revision: str) -> list[str]:
    raw = endpoint.raw
    compute, model = raw.get("compute") or {}, raw.get("model") or {}
    scaling = compute.get("scaling") or {}
    wanted = {
        "repository": (model.get("repository"), target.repo),
        "revision": (model.get("revision"), revision),
        "task": (model.get("task"), target.task),
        "framework": (model.get("framework"), target.framework),
        "accelerator": (compute.get("accelerator"), target.accelerator),
        "instance_size": (compute.get("instanceSize"), target.instance_size),
        "instance_type": (compute.get("instanceType"), target.instance_type),
        "min_replica": (scaling.get("minReplica"), target.min_replica),
        "max_replica": (scaling.get("maxReplica"), target.max_replica),
    }
    return [k for k, (have, want) in wanted.items() if have != want]


def _wait(api: Any, target: EndpointTarget, ctx: StepContext) -> Any:
    deadline = time.monotonic() + target.timeout_s
    delay, last = POLL_FIRST_S, None
    while True:
        endpoint = with_retries(
            lambda: api.get_inference_endpoint(target.endpoint, namespace=target.namespace),
            what=f"reading endpoint {target.endpoint}",
            log=ctx.log,
            secrets=ctx.secrets,
        )
        state = _state(endpoint)
        if state != last:
            ctx.log(f"endpoint {target.endpoint}: {getattr(state, 'value', state)}")
            ctx.progress(0, None, f"endpoint {getattr(state, 'value', state)}")
            last = state
        if state in READY and endpoint.url:
            return endpoint
        if state in TERMINAL - READY:
            message = (endpoint.raw.get("status") or {}).get("message") or state
            raise RemoteError(
                SERVICE,
                f"endpoint {target.endpoint} is {getattr(state, 'value', state)}: {message}",
                hint="see the endpoint's logs on the Hub; fix the model or instance and run again",
            )
        if time.monotonic() + delay > deadline:
            raise StepError(
                f"endpoint {target.endpoint} was not running after {target.timeout_s}s "
                f"(state {getattr(state, 'value', state)})",
                hint="raise timeout_s, or run again later: the endpoint is kept and re-attached",
            )
        time.sleep(delay)
        delay = min(delay * 2, POLL_MAX_S)


def smoke_test(endpoint: Any, ctx: StepContext) -> dict[str, Any]:
    """One chat request (a plain text-generation request where chat is not served)."""
    from huggingface_hub.errors import HfHubHTTPError

    messages = []
    if ctx.pipeline.dataset.system_prompt:
        messages.append({"role": "system", "content": ctx.pipeline.dataset.system_prompt})
    messages.append({"role": "user", "content": SMOKE_PROMPT})
    client = endpoint.client
    t0 = time.monotonic()
    route = "chat"
    try:
        try:
            out = client.chat_completion(messages, max_tokens=32)
            text = out.choices[0].message.content or ""
        except HfHubHTTPError as exc:
            if getattr(getattr(exc, "response", None), "status_code", None) != 404:
                raise
            route = "text-generation"
            text = client.text_generation(SMOKE_PROMPT, max_new_tokens=32)
    except Exception as exc:  # noqa: BLE001 - any failure of the request fails the step
        raise StepError(
            redact(
                f"endpoint {endpoint.name} is running but the smoke test failed: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                ctx.secrets,
            ),
            hint="check the endpoint's logs on the Hub (task, framework and image must suit the model)",
        ) from None
    return {
        "ok": True,
        "route": route,
        "prompt": SMOKE_PROMPT,
        "response": redact(str(text)[:200], ctx.secrets),
        "seconds": round(time.monotonic() - t0, 3),
    }


class EndpointDeploy:
    """Create or update an HF Inference Endpoint for a Hub repo, wait, smoke-test it."""

    name = "hf-endpoint"
    config_model = EndpointTarget

    def preflight(self, ctx: Any, target: Any) -> list[Any]:
        """Read-only checks before the run starts (ftpipe.preflight)."""
        from ftpipe.deploy import preflight_checks as pc

        return list(pc.endpoint_checks(ctx, target))

    def deploy(self, ctx: StepContext) -> StepResult:
        from huggingface_hub.errors import HfHubHTTPError

        target: EndpointTarget = ctx.options["target"]
        api = hf_api(target.token)
        name = target.endpoint
        with hub_errors(f"model {target.repo}"):
            revision = pushed_commit(ctx, target.repo)
            source = "hf-hub step"
            if revision is None:
                revision, source = api.model_info(target.repo).sha, "repo head"
        ctx.log(f"endpoint {name}: {target.repo}@{revision} (from the {source})")
        compute = {
            "accelerator": target.accelerator,
            "instance_size": target.instance_size,
            "instance_type": target.instance_type,
            "min_replica": target.min_replica,
            "max_replica": target.max_replica,
        }
        with hub_errors(f"inference endpoint {name}"):
            try:
                endpoint = api.get_inference_endpoint(name, namespace=target.namespace)
            except HfHubHTTPError as exc:
                if getattr(getattr(exc, "response", None), "status_code", None) != 404:
                    raise
                endpoint = None
            if endpoint is None:
                action = "created"
                endpoint = api.create_inference_endpoint(
                    name,
                    repository=target.repo,
                    revision=revision,
                    framework=target.framework,
                    task=target.task,
                    vendor=target.vendor,
                    region=target.region,
                    namespace=target.namespace,
                    type="authenticated",
                    **compute,
                )
            else:
                changed = _differs(endpoint, target, revision)
                action = "unchanged"
                if changed:
                    action = "updated"
                    ctx.log(f"endpoint {name}: updating {', '.join(changed)}")
                    endpoint = api.update_inference_endpoint(
                        name,
                        repository=target.repo,
                        revision=revision,
                        framework=target.framework,
                        task=target.task,
                        namespace=target.namespace,
                        **compute,
                    )
                if _state(endpoint) == EndpointState.PAUSED:
                    action = action if action != "unchanged" else "resumed"
                    endpoint = with_retries(
                        lambda: api.resume_inference_endpoint(name, namespace=target.namespace),
                        what=f"resume {name}",
                        log=ctx.log,
                        secrets=ctx.secrets,
                    )
            endpoint = _wait(api, target, ctx)
        smoke = smoke_test(endpoint, ctx)
        state = _state(endpoint)
        doc = {
            "target": "hf-endpoint",
            "endpoint": name,
            "namespace": endpoint.namespace,
            "url": endpoint.url,
            "state": getattr(state, "value", state),
            "repo": target.repo,
            "revision": revision,
            "revision_source": source,
            "action": action,
            "smoke_test": smoke,
        }
        write_json(ctx.out_dir / "deploy.json", doc)
        return StepResult(
            metrics={"smoke_test_s": smoke["seconds"]},
            summary=f"endpoint {name} {action}, {doc['state']} at {endpoint.url}",
        )
