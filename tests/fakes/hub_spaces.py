"""Space routes of the loopback Hub: secrets, variables, runtime, pause, restart, hardware,
sleeptime, logs (``/api/spaces/{id}/...``)."""

from __future__ import annotations

import json
import threading
import time
import traceback
from typing import TYPE_CHECKING

from tests.fakes.hub_model import (
    _ACTIVE_SPACE_STAGES,
    _front_matter,
    _HttpError,
    _json,
    _now,
    _Repo,
    _Response,
    _setting,
)

if TYPE_CHECKING:
    from tests.fakes.hub_repos import _RepoApi
    from tests.fakes.hub_server import HubServer


class _SpaceApi:
    """Space-only routes: secrets, variables, runtime, pause, restart, hardware, sleeptime, logs."""

    def __init__(self, repo_api: _RepoApi):
        self.api = repo_api
        self.hub = repo_api.hub

    def _restart_if_running(self, repo: _Repo) -> None:
        if self.hub.restart_space_on_settings_change and repo.space.stage in _ACTIVE_SPACE_STAGES:
            start_space(self.hub, repo)

    def handle(self, method: str, action: str, rest: list[str], body: bytes) -> _Response:
        hub, api = self.hub, self.api
        if action == "runtime" and method == "GET":
            return _json(runtime_dict(hub._read_repo("space", api.repo_id, api.user)))
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
            return _json(runtime_dict(repo))
        if action == "restart" and method == "POST":
            if space.sdk == "static":
                raise _HttpError(400, "Static Spaces cannot be restarted")
            start_space(hub, repo)
            return _json(runtime_dict(repo))
        if action == "hardware" and method == "POST":
            space.hardware_requested = payload.get("flavor") or space.hardware_requested
            if payload.get("sleepTimeSeconds") is not None:
                space.sleep_time = payload["sleepTimeSeconds"]
            self._restart_if_running(repo)
            return _json(runtime_dict(repo))
        if action == "sleeptime" and method == "POST":
            space.sleep_time = payload.get("seconds")
            return _json(runtime_dict(repo))
        raise _HttpError(404, f"Not found: {method} {action}")

    def _logs(self, kind: str) -> _Response:
        repo = self.hub._write_repo("space", self.api.repo_id, self.api.user)
        lines = []
        for stamp, text in repo.space.logs[kind]:
            for part in text.splitlines() or [""]:
                lines.append(f"data: {json.dumps({'data': part + chr(10), 'timestamp': stamp})}\n\n")
        return _Response(200, "".join(lines).encode(), {"Content-Type": "text/event-stream"})


# -- a Space's lifecycle ---------------------------------------------------------------------


def runtime_dict(repo: _Repo) -> dict:
    space = repo.space
    host = repo.repo_id.replace("/", "-").replace("_", "-").lower()
    return {
        "stage": space.stage,
        "hardware": {"current": space.hardware_current, "requested": space.hardware_requested},
        "storage": None,
        "gcTimeout": space.sleep_time,
        "replicas": {"current": 1 if space.hardware_current else 0, "requested": 1},
        "devMode": False,
        "domains": [{"domain": f"{host}.hf.space", "stage": "READY"}],
        "errorMessage": space.error,
        "sdk": space.sdk,
    }


def app_file_present(repo: _Repo) -> bool:
    files = repo.head().files
    sdk = repo.space.sdk
    if sdk == "docker":
        return "Dockerfile" in files
    if sdk == "static":
        return True
    meta = _front_matter(files["README.md"].content.decode(errors="replace")) if "README.md" in files else {}
    return str((meta or {}).get("app_file", "app.py")) in files


def start_space(hub: HubServer, repo: _Repo) -> None:
    space = repo.space
    space.generation += 1
    space.stop_event.set()
    space.stop_event = threading.Event()
    space.error = None
    if not app_file_present(repo):
        space.stage, space.hardware_current = "NO_APP_FILE", None
        return
    space.stage = "BUILDING"
    space.logs["build"].append((_now(), f"Building {repo.repo_id} ({space.sdk})"))
    files = {path: blob.content for path, blob in repo.head().files.items()}
    secrets = {k: v["value"] for k, v in space.secrets.items()}
    variables = {k: v["value"] for k, v in space.variables.items()}
    args = (repo.repo_id, space.generation, files, secrets, variables)
    threading.Thread(target=_run_space, args=(hub, *args), name=f"space-{repo.repo_id}", daemon=True).start()


def _run_space(hub: HubServer, space_id: str, generation: int, files: dict, secrets: dict, variables: dict) -> None:
    time.sleep(hub.space_build_seconds)
    with hub._lock:
        repo = hub._repos.get(("space", space_id))
        if repo is None or repo.space.generation != generation:
            return
        space = repo.space
        space.stage, space.hardware_current = "RUNNING", space.hardware_requested
        space.runs += 1
        runner = hub.space_runner if space.sdk == "docker" else None
    if runner is None:
        return
    try:
        runner(space_id, files, secrets, variables)
    except BaseException as exc:  # noqa: BLE001 - the Space "crashed"; its stage says so
        stage, error, log = "RUNTIME_ERROR", f"{type(exc).__name__}: {exc}", traceback.format_exc()
    else:
        stage, error, log = hub.space_stage_after_exit, None, None
    with hub._lock:
        repo = hub._repos.get(("space", space_id))
        if repo is not None and repo.space.generation == generation:
            repo.space.stage, repo.space.error = stage, error
            if log:
                repo.space.logs["run"].append((_now(), log))
