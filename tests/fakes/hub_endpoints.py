"""Inference Endpoints API of the loopback Hub, and the deployed endpoints themselves."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

from tests.fakes.hub_model import (
    _SERVING_PATH,
    _HttpError,
    _json,
    _now,
    _Response,
)

if TYPE_CHECKING:
    from tests.fakes.hub_server import HubServer


class _EndpointsApi:
    """Inference Endpoints API (under HubServer.endpoints_url) and the deployed endpoints themselves."""

    def __init__(self, hub: HubServer, headers: Any):
        self.hub, self.headers = hub, headers

    def _user(self) -> str:
        user = self.hub._user(self.headers)
        if user is None:
            raise _HttpError(401, "You must be authenticated")
        return user

    def _record(self, namespace: str, name: str) -> dict:
        record = self.hub._endpoints.get((namespace, name))
        if record is None:
            raise _HttpError(404, f"Endpoint {namespace}/{name} not found")
        return record

    def _set_state(self, record: dict, state: str) -> None:
        status = record["raw"]["status"]
        status["state"] = state
        status["updatedAt"] = _now()
        ns, name = record["key"]
        if state in ("running", "scaledToZero", "updating"):
            status["url"] = f"{self.hub.url}{_SERVING_PATH}/{ns}/{name}"
            status["readyReplica"] = 1 if state == "running" else 0
        elif state in ("pending", "initializing", "paused", "failed"):
            status.pop("url", None)
            status["readyReplica"] = 0
        status["message"] = {"running": "Endpoint is ready", "failed": "Endpoint failed to start"}.get(state, state)

    def handle(self, method: str, segs: list[str], body: bytes) -> _Response:
        user = self._user()
        if segs[:1] != ["endpoint"] or len(segs) < 2:
            raise _HttpError(404, "Not found")
        namespace = segs[1]
        if namespace not in self.hub.users:
            raise _HttpError(403, f"No access to namespace {namespace}")
        payload = json.loads(body) if body else {}
        if len(segs) == 2 and method == "GET":
            records = [r for (ns, _), r in self.hub._endpoints.items() if ns == namespace]
            return _json({"items": [r["raw"] for r in records]})
        if len(segs) == 2 and method == "POST":
            return self._create(user, namespace, payload)
        name = segs[2]
        record = self._record(namespace, name)
        action = segs[3] if len(segs) > 3 else ""
        if method == "GET" and not action:
            self._advance(record)
            return _json(record["raw"])
        if method == "PUT" and not action:
            raw = record["raw"]
            for key in ("compute", "model"):
                for sub, value in (payload.get(key) or {}).items():
                    if isinstance(value, dict) and isinstance(raw[key].get(sub), dict):
                        raw[key][sub].update(value)
                    else:
                        raw[key][sub] = value
            for key in ("type", "route", "tags", "cacheHttpResponses"):
                if key in payload:
                    raw[key] = payload[key]
            record["steps"] = ["updating", self.hub.endpoint_final_state]
            self._set_state(record, "updating")
            return _json(raw)
        if method == "DELETE" and not action:
            del self.hub._endpoints[(namespace, name)]
            return _json({})
        if method == "POST" and action == "pause":
            record["steps"] = []
            self._set_state(record, "paused")
            return _json(record["raw"])
        if method == "POST" and action == "resume":
            if record["raw"]["status"]["state"] == "running":
                raise _HttpError(400, "Endpoint is already running")
            record["steps"] = list(self.hub.endpoint_steps[1:-1]) + [self.hub.endpoint_final_state]
            self._set_state(record, self.hub.endpoint_steps[0])
            return _json(record["raw"])
        if method == "POST" and action == "scale-to-zero":
            record["steps"] = []
            self._set_state(record, "scaledToZero")
            return _json(record["raw"])
        raise _HttpError(404, f"Not found: {method} {action}")

    def _create(self, user: str, namespace: str, payload: dict) -> _Response:
        name = payload.get("name") or ""
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", name):
            raise _HttpError(400, f"Invalid endpoint name {name!r}: lowercase letters, digits and '-' only, 32 max")
        if (namespace, name) in self.hub._endpoints:
            raise _HttpError(409, f"Endpoint {name} already exists")
        model = dict(payload.get("model") or {})
        repository = model.get("repository")
        repo = self.hub._repos.get(("model", repository))
        if repo is None or (repo.private and not self.hub._can_write_namespace(user, repo.namespace)):
            raise _HttpError(400, f"Model repository {repository!r} not found or not accessible")
        model.setdefault("revision", repo.branches["main"])
        model.setdefault("task", "text-generation")
        model.setdefault("framework", "pytorch")
        now = _now()
        raw = {
            "name": name,
            "type": payload.get("type") or "authenticated",
            "accountId": None,
            "provider": payload.get("provider") or {},
            "compute": payload.get("compute") or {},
            "model": model,
            "healthRoute": "/health",
            "status": {"createdAt": now, "updatedAt": now, "createdBy": {"name": user}, "updatedBy": {"name": user}},
            "tags": payload.get("tags") or [],
        }
        record = {"key": (namespace, name), "raw": raw}
        record["steps"] = list(self.hub.endpoint_steps[1:-1]) + [self.hub.endpoint_final_state]
        self._set_state(record, self.hub.endpoint_steps[0])
        self.hub._endpoints[(namespace, name)] = record
        return _json(raw)

    def _advance(self, record: dict) -> None:
        if record["steps"]:
            self._set_state(record, record["steps"].pop(0))

    def serve(self, method: str, segs: list[str], body: bytes) -> _Response:
        if len(segs) < 2:
            raise _HttpError(404, "Not found")
        namespace, name, route = segs[0], segs[1], "/".join(segs[2:])
        record = self._record(namespace, name)
        raw = record["raw"]
        if raw["type"] != "public":
            self._user()
        if raw["status"]["state"] not in ("running", "scaledToZero"):
            raise _HttpError(503, f"Endpoint is {raw['status']['state']}")
        if method == "GET" and route in ("health", "info"):
            return _json({"model_id": raw["model"]["repository"]} if route == "info" else {})
        payload = json.loads(body or b"{}")
        if method == "POST" and route in ("", "generate"):
            text = self.hub.inference_responder(name, payload.get("inputs"))
            return _json([{"generated_text": text}] if route == "" else {"generated_text": text})
        if method == "POST" and route in ("v1/chat/completions", "chat/completions"):
            messages = payload.get("messages") or []
            text = self.hub.inference_responder(name, messages)
            words = len(text.split())
            return _json(
                {
                    "id": f"chatcmpl-{next(self.hub._counter)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": raw["model"]["repository"],
                    "system_fingerprint": "fake-hub",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": words, "total_tokens": 1 + words},
                }
            )
        raise _HttpError(404, f"Not found: {method} /{route}")
