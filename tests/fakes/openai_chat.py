"""Chat completions (OpenAI ``/chat/completions`` and Azure deployments) and ``/models``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tests.fakes.openai_data import (
    ROLES,
    content_text,
    count_tokens,
    nearest_answer,
    truncate_tokens,
    words,
)
from tests.fakes.openai_http import ApiError, Request, Response
from tests.fakes.openai_jobsim import (
    OPENAI_ALIASES,
    OPENAI_FINE_TUNABLE,
    ORGANIZATION_ID,
    JobSim,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tests.fakes.openai_server import OpenAIServer

BASE_MODEL_ANSWER = "I'm sorry, I don't have enough information to answer that."

# A model id starting with this grades answers deterministically (an LLM-as-judge double):
# the share of the reference's words the graded answer contains, on the scale the prompt
# asks for ("... from 1 to 5"), replied as "Score: N". It reads the sections "Reference
# answer:" and "Answer to grade:" of the last user message (ftpipe's default judge prompt).
JUDGE_MODEL_PREFIX = "judge-"
_JUDGE_SECTIONS = re.compile(
    r"Reference answer:\s*\n(?P<ref>.*?)\n\s*\nAnswer to grade:\s*\n(?P<ans>.*?)(?:\n\s*\n|$)", re.DOTALL
)
_JUDGE_SCALE = re.compile(r"from (-?\d+) to (-?\d+)")


def judge_reply(messages: list[dict[str, Any]]) -> str:
    """The judge double's reply to a grading prompt."""
    text = content_text(messages[-1].get("content")) if messages else ""
    sections = _JUDGE_SECTIONS.search(text)
    scale = _JUDGE_SCALE.search(text)
    low, high = (int(scale.group(1)), int(scale.group(2))) if scale else (1, 5)
    if sections is None:
        return "I cannot find the answer to grade."
    ref, ans = words(sections.group("ref")), words(sections.group("ans"))
    share = len(ref & ans) / len(ref) if ref else 0.0
    return f"Score: {low + round(share * (high - low))}"


def chat(srv: OpenAIServer, req: Request, deployment: str | None = None) -> Response:
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) and m.get("role") in ROLES for m in messages)
    ):
        raise ApiError(
            400,
            "'messages' must be a non-empty list of messages with a valid role.",
            param="messages",
            code="invalid_value" if req.surface == "openai" else None,
        )
    if body.get("stream"):
        raise ApiError(400, "stream=true is not supported by this test double.", param="stream")
    if deployment is not None:
        dep = srv.deployments.get(deployment)
        if dep is None or dep["properties"]["provisioningState"] != "Succeeded":
            raise ApiError(
                404,
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again.",
                code="DeploymentNotFound",
            )
        model = dep["properties"]["model"]["name"]
        sim = srv.models.get(model)
    else:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(
                400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
            )
        sim = srv.models.get(model)
        if sim is not None and sim.provider != "openai":
            sim = None
        known_base = model in OPENAI_FINE_TUNABLE or model in OPENAI_ALIASES or model.startswith(JUDGE_MODEL_PREFIX)
        if sim is None and not known_base:
            raise ApiError(
                404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
            )
    if isinstance(model, str) and model.startswith(JUDGE_MODEL_PREFIX):
        answer = judge_reply(messages)
    else:
        answer = model_answer(srv, messages, sim)
    n = body.get("n") or 1
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    finish = "stop"
    if isinstance(limit, int) and count_tokens(answer) > limit:
        answer, finish = truncate_tokens(answer, limit), "length"
    prompt_tokens = sum(count_tokens(content_text(m.get("content"))) for m in messages)
    completion_tokens = count_tokens(answer)
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": answer, "refusal": None, "annotations": []},
        "logprobs": None,
        "finish_reason": finish,
    }
    choices = [{**choice, "index": i} for i in range(n)]
    if req.surface == "azure":
        filters = {"hate": {"filtered": False, "severity": "safe"}}
        for c in choices:
            c["content_filter_results"] = filters
    result = {
        "id": srv.new_id("chatcmpl-", "openai", 29),
        "object": "chat.completion",
        "created": srv.now(),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens * n,
            "total_tokens": prompt_tokens + completion_tokens * n,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_ftpipe_fake",
    }
    if req.surface == "azure":
        result["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": {}}]
    return Response(200, result)


def model_answer(srv: OpenAIServer, messages: list[dict[str, Any]], sim: JobSim | None) -> str:
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        return BASE_MODEL_ANSWER
    query = content_text(messages[users[-1]].get("content"))
    if sim is not None:
        return nearest_answer(query, sim.pairs) or BASE_MODEL_ANSWER
    shots = [
        (content_text(messages[i].get("content")), content_text(messages[i + 1].get("content")))
        for i in users[:-1]
        if i + 1 < len(messages) and messages[i + 1].get("role") == "assistant"
    ]
    return nearest_answer(query, shots) or BASE_MODEL_ANSWER


def models_list(srv: OpenAIServer, req: Request) -> Response:
    created = 1700000000
    if req.surface == "azure":
        return Response(200, {"object": "list", "data": azure_models(created)})
    data = [
        {"id": m, "object": "model", "created": created, "owned_by": "system"}
        for m in [*OPENAI_FINE_TUNABLE, *OPENAI_ALIASES]
    ]
    data += [
        {"id": m, "object": "model", "created": created, "owned_by": ORGANIZATION_ID}
        for m, s in srv.models.items()
        if s.provider == "openai"
    ]
    return Response(200, {"object": "list", "data": data})


def model_retrieve(srv: OpenAIServer, req: Request, model: str) -> Response:
    for item in models_list(srv, req).body["data"]:
        if item["id"] == model:
            return Response(200, item)
    raise ApiError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")


def azure_models(created: int) -> list[dict[str, Any]]:
    """Azure's ``GET /openai/models`` (2024-10-21): base models with their capabilities."""
    from tests.fakes.openai_azure import AZURE_DEPLOYABLE_BASE
    from tests.fakes.openai_jobsim import AZURE_FINE_TUNABLE

    names = {**{m: True for m in AZURE_FINE_TUNABLE}, **{m: False for m in AZURE_DEPLOYABLE_BASE}}
    return [
        {
            "id": m,
            "object": "model",
            "status": "succeeded",
            "created_at": created,
            "lifecycle_status": "generally-available",
            "capabilities": {
                "fine_tune": tunable,
                "inference": True,
                "chat_completion": True,
                "completion": False,
                "embeddings": False,
                "scale_types": ["standard"],
            },
            "deprecation": {"inference": created + 10**8, **({"fine_tune": created + 10**8} if tunable else {})},
        }
        for m, tunable in names.items()
    ]
