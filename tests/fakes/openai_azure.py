"""Azure-only surfaces: chat through a deployment, and Azure Resource Manager deployments
(PUT/GET/DELETE, Accepted -> Creating -> Succeeded or Failed)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tests.fakes.openai_chat import chat
from tests.fakes.openai_http import ApiError, Request, Response
from tests.fakes.openai_jobsim import AZURE_FINE_TUNABLE

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tests.fakes.openai_server import OpenAIServer

# Base models an ARM deployment may name: (properties.model.name, any version).
AZURE_DEPLOYABLE_BASE = {"gpt-35-turbo", "gpt-4o-mini", "gpt-4o"}

ARM_PATH = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.CognitiveServices/accounts/(?P<account>[^/]+)/deployments(?:/(?P<name>[^/]+))?",
    re.IGNORECASE,
)


def azure_chat(srv: OpenAIServer, req: Request, deployment: str) -> Response:
    return chat(srv, req, deployment)


# ---------------------------------------------------------------- Azure Resource Manager


def arm(srv: OpenAIServer, req: Request) -> Response:
    match = ARM_PATH.fullmatch(req.path)
    if match is None:
        raise ApiError(404, f"The resource path '{req.path}' was not found.", code="NotFound")
    if not req.api_version:
        raise ApiError(
            400,
            "The api-version query parameter (?api-version=) is required for all requests.",
            code="MissingApiVersionParameter",
        )
    name = match.group("name")
    if name is None:
        if req.method != "GET":
            raise ApiError(405, "The requested method is not allowed.", code="MethodNotAllowed")
        return Response(200, {"value": list(srv.deployments.values())})
    if req.method == "PUT":
        return arm_put(srv, req, match, name)
    if req.method == "GET":
        dep = srv.deployments.get(name)
        if dep is None:
            raise ApiError(404, f"Deployment '{name}' was not found.", code="DeploymentNotFound")
        arm_progress(srv, name, dep)
        return Response(200, dep)
    if req.method == "DELETE":
        if srv.deployments.pop(name, None) is None:
            return Response(204)
        return Response(200)
    raise ApiError(405, "The requested method is not allowed.", code="MethodNotAllowed")


def arm_put(srv: OpenAIServer, req: Request, match: re.Match[str], name: str) -> Response:
    body = req.json()
    sku = body.get("sku") if isinstance(body, dict) else None
    props = body.get("properties") if isinstance(body, dict) else None
    model = props.get("model") if isinstance(props, dict) else None
    if not isinstance(sku, dict) or not isinstance(sku.get("name"), str):
        raise ApiError(400, "The 'sku' with a 'name' is required.", code="InvalidResourceProperties")
    if not isinstance(model, dict) or model.get("format") != "OpenAI" or not isinstance(model.get("name"), str):
        raise ApiError(400, "properties.model needs format 'OpenAI' and a name.", code="InvalidResourceProperties")
    existed = name in srv.deployments
    dep = deployment_object(srv, match.group("sub"), match.group("rg"), match.group("account"), name, sku, model)
    srv.deployments[name] = dep
    srv.deploy_polls[name] = 0
    return Response(200 if existed else 201, dep)


def deployment_object(srv: OpenAIServer, sub: str, rg: str, account: str, name: str, sku: dict, model: dict) -> dict:
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.CognitiveServices/"
        f"accounts/{account}/deployments/{name}",
        "name": name,
        "type": "Microsoft.CognitiveServices/accounts/deployments",
        "sku": dict(sku),
        "properties": {
            "model": dict(model),
            "provisioningState": "Accepted",
            "capabilities": {"chatCompletion": "true"},
            "rateLimits": [],
        },
        "systemData": {
            "createdAt": stamp,
            "createdBy": "ftpipe-test",
            "createdByType": "User",
            "lastModifiedAt": stamp,
            "lastModifiedBy": "ftpipe-test",
            "lastModifiedByType": "User",
        },
        "etag": f'"{srv.rng.getrandbits(64):016x}"',
    }


def arm_progress(srv: OpenAIServer, name: str, dep: dict[str, Any]) -> None:
    props = dep["properties"]
    if props["provisioningState"] in ("Succeeded", "Failed"):
        return
    srv.deploy_polls[name] = srv.deploy_polls.get(name, 0) + 1
    if srv.steps_per_state and srv.deploy_polls[name] < srv.steps_per_state:
        return
    srv.deploy_polls[name] = 0
    if props["provisioningState"] == "Accepted" and srv.steps_per_state:
        props["provisioningState"] = "Creating"
        return
    model = props["model"]["name"]
    sim = srv.models.get(model)
    deployable = (
        (sim is not None and sim.provider == "azure") or model in AZURE_DEPLOYABLE_BASE or model in AZURE_FINE_TUNABLE
    )
    props["provisioningState"] = "Succeeded" if deployable else "Failed"
