"""Space routes of the loopback Hub: secrets, variables, runtime, pause, restart, hardware,
sleeptime, logs (``/api/spaces/{id}/...``)."""

from __future__ import annotations

from __future__ import annotations


import json


from tests.fakes.hub_model import (  # noqa: F401 - shared by the route modules
    REPO_TYPES,
    _ACTIVE_SPACE_STAGES,
    _ENDPOINTS_PATH,
    _PLURAL,
    _REGULAR_MAX_SIZE,
    _SERVING_PATH,
    _URL_PREFIX,
    _Blob,
    _Commit,
    _Fault,
    _HttpError,
    _Repo,
    _Response,
    _SpaceState,
    _front_matter,
    _gitattributes,
    _json,
    _now,
    _repo_not_found,
    _setting,
    git_blob_sha1,
    SpaceRunner,
)
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fakes.hub_repos import _RepoApi


class _SpaceApi:
    """Space-only routes: secrets, variables, runtime, pause, restart, hardware, sleeptime, logs."""

    def __init__(self, repo_api: _RepoApi):
        self.api = repo_api
        self.hub = repo_api.hub

    def _restart_if_running(self, repo: _Repo) -> None:
        if self.hub.restart_space_on_settings_change and repo.space.stage in _ACTIVE_SPACE_STAGES:
            self.hub._start_space(repo)

    def handle(self, method: str, action: str, rest: list[str], body: bytes) -> _Response:
        hub, api = self.hub, self.api
        if action == "runtime" and method == "GET":
            return _json(hub._runtime_dict(hub._read_repo("space", api.repo_id, api.user)))
        if action == "logs" and method == "GET" and rest in (["run"], ["build"]):
            return self._logs(rest[0])
        repo = hub._write_repo("space", api.repo_id, api.user)
        space = repo.space
        payload = json.loads(body or b"{}") if body else {}
        if action in ("secrets", "variables"):
            store = space.secrets if action == "secrets" else space.variables
            if method == "GET":
                if action == "secrets":  # values are write-only
                    hidden = {k: {n: v[n] for n in ("description", "updatedAt")} for k, v in store.items()}
                    return _json({k: {"key": k, **v} for k, v in hidden.items()})
                return _json({k: {"key": k, **v} for k, v in store.items()})
            if method == "POST":
                if not payload.get("key") or "value" not in payload:
                    raise _HttpError(400, "key and value are required")
                store[payload["key"]] = _setting(str(payload["value"]), payload.get("description"))
            elif method == "DELETE":
                store.pop(payload.get("key"), None)
            else:
                raise _HttpError(405, "Method not allowed")
            self._restart_if_running(repo)
            if action == "secrets":
                return _Response(200, b"")
            return _json({k: {"key": k, **v} for k, v in store.items()})
        if action == "pause" and method == "POST":
            if space.sdk == "static":
                raise _HttpError(400, "Static Spaces cannot be paused")
            space.generation += 1
            space.stop_event.set()
            space.stage, space.hardware_current = "PAUSED", None
            return _json(hub._runtime_dict(repo))
        if action == "restart" and method == "POST":
            if space.sdk == "static":
                raise _HttpError(400, "Static Spaces cannot be restarted")
            hub._start_space(repo)
            return _json(hub._runtime_dict(repo))
        if action == "hardware" and method == "POST":
            space.hardware_requested = payload.get("flavor") or space.hardware_requested
            if payload.get("sleepTimeSeconds") is not None:
                space.sleep_time = payload["sleepTimeSeconds"]
            self._restart_if_running(repo)
            return _json(hub._runtime_dict(repo))
        if action == "sleeptime" and method == "POST":
            space.sleep_time = payload.get("seconds")
            return _json(hub._runtime_dict(repo))
        raise _HttpError(404, f"Not found: {method} {action}")

    def _logs(self, kind: str) -> _Response:
        repo = self.hub._write_repo("space", self.api.repo_id, self.api.user)
        lines = []
        for stamp, text in repo.space.logs[kind]:
            for part in text.splitlines() or [""]:
                lines.append(f"data: {json.dumps({'data': part + chr(10), 'timestamp': stamp})}\n\n")
        return _Response(200, "".join(lines).encode(), {"Content-Type": "text/event-stream"})

