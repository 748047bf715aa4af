"""A Hugging Face Hub compatible HTTP server on loopback, for tests.

The real ``huggingface_hub``, ``datasets`` and ``transformers`` clients talk to it through
``HF_ENDPOINT``; Inference Endpoints through ``huggingface_hub.constants.INFERENCE_ENDPOINTS_ENDPOINT``.
It follows the public contract (see shared/reference/hf-hub.md): status codes, ``X-Error-Code`` /
``X-Error-Message``, ``X-Repo-Commit`` / ``ETag`` on resolve, git blob sha1 oids, NDJSON commits,
preupload answering the existing oid so that unchanged uploads create no commit, git-LFS basic
transfer for binary files. Everything lives in memory.

Usage::

    from tests.fakes.hub_server import hub_fixture  # noqa: F401 - registers the `hub` fixture

    def test_push(hub):
        HfApi().create_repo("tester/x")
        ...
        assert len(hub.commits("tester/x")) == 2   # initial .gitattributes commit + ours

Auth: the token (``HubServer(token=...)``, None disables auth) belongs to ``users[0]``; ``users[1:]``
are its organisations. Writes and private reads need it; anonymous reads of private or missing
repos answer 401 + ``RepoNotFound``, authenticated ones 404; a wrong token answers 401.

Fault injection: ``hub.inject("POST", r"/preupload/", 500)`` answers the next matching request with
a 500 (``429`` adds ``Retry-After: 0``, ``"drop"`` closes the connection without an answer);
``after_handling=True`` performs the real action first and then answers with the fault.

Spaces: a commit to main (or a restart, a hardware request, a secret/variable change while active)
builds the Space when its app file is there (``Dockerfile`` for sdk docker): BUILDING, then
RUNNING while ``space_runner(space_id, files, secrets, variables)`` runs in a thread; an exception
gives RUNTIME_ERROR (message in ``errorMessage`` and the run logs). A superseded run is not stopped,
but ``space_stop_event(space_id)`` is set for it. Pause gives PAUSED and keeps commits from building.

Jobs: ``/api/jobs`` and ``/api/scheduled-jobs`` (tests/fakes/hub_jobs.py) run a Job's command as a
local subprocess with ``hub.jobs.job_env`` + the Job's environment and secrets.

Routes live in modules: repos (hub_repos.py), Spaces (hub_spaces.py), Inference Endpoints
(hub_endpoints.py), Jobs (hub_jobs.py); the in-memory model in hub_model.py.

Inference Endpoints: each GET moves a new (or resumed, or updated) endpoint one state on
(pending -> initializing -> running); once running, ``status.url`` serves ``/health``, TGI-style
``POST /`` and ``POST /v1/chat/completions`` answered by ``inference_responder``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.server
import itertools
import json
import os
import re
import secrets as _secrets
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import pytest

from tests.fakes._http import read_body
from tests.fakes.hub_endpoints import _EndpointsApi
from tests.fakes.hub_jobs import JobsState, _JobsApi
from tests.fakes.hub_model import (
    _ENDPOINTS_PATH,
    _PLURAL,
    _REGULAR_MAX_SIZE,
    _SERVING_PATH,
    _URL_PREFIX,
    REPO_TYPES,
    SpaceRunner,
    _Blob,
    _Commit,
    _Fault,
    _front_matter,
    _gitattributes,
    _HttpError,
    _json,
    _now,
    _Repo,
    _repo_not_found,
    _Response,
    _setting,
    _SpaceState,
)
from tests.fakes.hub_repos import _RepoApi, lfs_batch, lfs_object, resolve
from tests.fakes.hub_spaces import runtime_dict, start_space

# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class HubServer:
    """An in-memory Hugging Face Hub (and Inference Endpoints API) served on 127.0.0.1."""

    def __init__(self, *, token: str | None = "hf_test_token", users: tuple[str, ...] = ("tester",)) -> None:
        if not users:
            raise ValueError("users needs at least one name (the token's owner)")
        self.token = token
        self.users = tuple(users)  # users[0] owns the token, the rest are its organisations
        self.url = ""
        self.endpoints_url = ""
        self.requests: list[tuple[str, str, dict]] = []
        self.faults_fired: list[tuple[str, str, int | str]] = []
        self.errors: list[str] = []  # unexpected exceptions inside the server (a bug in the fake)
        self.space_runner: SpaceRunner | None = None
        self.space_build_seconds = 0.05
        # The real Hub shows RUNTIME_ERROR once a Docker Space's main process exits, even with code 0;
        # by default the fake keeps such a Space RUNNING (set "RUNTIME_ERROR" to mimic the Hub).
        self.space_stage_after_exit = "RUNNING"
        self.restart_space_on_settings_change = True
        # The token's role as whoami reports it; "read" also makes every write answer 403, as
        # the Hub does for a read-only token.
        self.token_role = "write"
        self.tree_page_size = 1000
        self.endpoint_steps = ("pending", "initializing", "running")
        self.endpoint_final_state = "running"  # set to "failed" to make deployments fail
        self.inference_responder: Callable[[str, Any], str] = lambda name, prompt: f"echo from {name}"
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lfs: dict[str, bytes] = {}
        self._lfs_signature = _secrets.token_hex(8)
        self._endpoints: dict[tuple[str, str], dict] = {}
        self._faults: list[_Fault] = []
        self._counter = itertools.count()
        self._httpd: _ThreadingServer | None = None
        self.jobs = JobsState(self)  # Jobs and scheduled Jobs: see tests/fakes/hub_jobs.py
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> HubServer:
        self._httpd = _ThreadingServer(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self
        port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self.endpoints_url = self.url + _ENDPOINTS_PATH
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"hub-server-{port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.jobs.stop_all()
        with self._lock:
            for repo in self._repos.values():
                if repo.space is not None:
                    repo.space.generation += 1
                    repo.space.stop_event.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.close_all_connections()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test helpers ------------------------------------------------------------------------

    def inject(
        self, method: str, path_regex: str, fault: int | str, times: int = 1, after_handling: bool = False
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` ("*" for any) and ``path_regex``
        (searched in the raw, still percent-encoded path without query) with ``fault``: an HTTP
        status or "drop" (close the connection without answering)."""
        if not (fault == "drop" or (isinstance(fault, int) and 400 <= fault <= 599)):
            raise ValueError(f"fault must be an HTTP error status or 'drop', got {fault!r}")
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_regex), fault, times, after_handling))

    def commits(self, repo_id: str, repo_type: str = "model") -> list[dict]:
        """Commit history of the main branch, newest first."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            return [self._commit_dict(c) for c in self._history(repo, repo.branches["main"])]

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        with self._lock:
            commit = self._get_repo(repo_type, repo_id).resolve(revision)
            if commit is None:
                raise KeyError(f"revision {revision!r} not found in {repo_type} {repo_id}")
            return {path: blob.content for path, blob in commit.files.items()}

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def seed_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | str | Path],
        repo_type: str = "model",
        private: bool = False,
        *,
        gated: bool | str = False,
        sdk: str | None = None,
    ) -> str:
        """Create the repo if needed (as the Hub does, with an initial .gitattributes commit) and
        commit ``files`` onto main. Returns the new commit sha."""
        contents = {}
        for path, value in files.items():
            if isinstance(value, Path):
                value = value.read_bytes()
            contents[path] = value.encode() if isinstance(value, str) else bytes(value)
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
            if repo is None:
                repo = self._create_repo(repo_type, repo_id, private=private, sdk=sdk or "docker")
            # On an existing repo, only tighten access: seeding must not make a private repo public.
            repo.private = repo.private or private
            repo.gated = gated or repo.gated
            base = repo.head().files
            new = dict(base)
            for path, content in contents.items():
                new[path] = _Blob(content, self._wants_lfs(base, repo_type, path, len(content)))
            commit = self._add_commit(repo, "main", new, "Seed files", "", self.users[0])
            self._after_commit(repo, "main")
            return commit.oid

    def space_runtime(self, space_id: str) -> dict:
        with self._lock:
            return runtime_dict(self._get_repo("space", space_id))

    def space_secrets(self, space_id: str) -> dict[str, str]:
        """Secret values as stored server side (the API never returns them)."""
        with self._lock:
            return {k: v["value"] for k, v in self._get_repo("space", space_id).space.secrets.items()}

    def space_variables(self, space_id: str) -> dict[str, str]:
        with self._lock:
            return {k: v["value"] for k, v in self._get_repo("space", space_id).space.variables.items()}

    def space_stop_event(self, space_id: str) -> threading.Event:
        """Set when the current run of the Space is superseded (pause, restart, new commit, delete):
        a ``space_runner`` may wait on it to stop its work."""
        with self._lock:
            return self._get_repo("space", space_id).space.stop_event

    def space_log(self, space_id: str, text: str, *, build: bool = False) -> None:
        """Append a line to the Space's run (or build) logs, served by /api/spaces/{id}/logs/{run|build}."""
        with self._lock:
            space = self._get_repo("space", space_id).space
            space.logs["build" if build else "run"].append((_now(), text))

    def inference_endpoint(self, name: str, namespace: str | None = None) -> dict:
        with self._lock:
            return json.loads(json.dumps(self._endpoints[(namespace or self.users[0], name)]["raw"]))

    # -- internals: repos --------------------------------------------------------------------

    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        if repo_type not in REPO_TYPES:
            raise ValueError(f"repo_type must be one of {REPO_TYPES}")
        try:
            return self._repos[(repo_type, repo_id)]
        except KeyError:
            raise KeyError(f"no {repo_type} repo {repo_id!r} on this server") from None

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _create_repo(self, repo_type: str, repo_id: str, *, private: bool, sdk: str | None = None) -> _Repo:
        repo = _Repo(repo_type, repo_id, private=private, gated=False, created_at=_now())
        files = {".gitattributes": _Blob(_gitattributes(repo_type), False)}
        if repo_type == "space":
            repo.space = _SpaceState(sdk=sdk or "gradio")
            name = repo_id.split("/")[-1]
            readme = f"---\ntitle: {name}\nsdk: {repo.space.sdk}\npinned: false\n---\n"
            files["README.md"] = _Blob(readme.encode(), False)
            repo.space.stage = "RUNNING" if repo.space.sdk == "static" else "NO_APP_FILE"
        self._repos[(repo_type, repo_id)] = repo
        self._add_commit(repo, "main", files, "initial commit", "", self.users[0])
        return repo

    def _add_commit(
        self, repo: _Repo, branch: str, files: dict[str, _Blob], title: str, message: str, author: str
    ) -> _Commit:
        parent = repo.branches.get(branch)
        before = repo.commits[parent].files if parent else {}
        tree = hashlib.sha1(json.dumps(sorted((p, b.oid) for p, b in files.items())).encode()).hexdigest()
        seed = f"{parent}\0{tree}\0{title}\0{message}\0{next(self._counter)}\0{time.time_ns()}"
        oid = hashlib.sha1(seed.encode()).hexdigest()
        added = sorted(p for p, b in files.items() if before.get(p) != b)
        deleted = sorted(p for p in before if p not in files)
        commit = _Commit(oid, parent, title, message, author, _now(), dict(files), added, deleted)
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        for blob in files.values():
            if blob.lfs:
                self._lfs.setdefault(blob.sha256, blob.content)
        return commit

    def _history(self, repo: _Repo, oid: str | None) -> Iterator[_Commit]:
        while oid is not None:
            commit = repo.commits[oid]
            yield commit
            oid = commit.parent

    @staticmethod
    def _commit_dict(commit: _Commit) -> dict:
        return {
            "oid": commit.oid,
            "title": commit.title,
            "message": commit.message,
            "author": commit.author,
            "date": commit.date,
            "parent": commit.parent,
            "added": list(commit.added),
            "deleted": list(commit.deleted),
        }

    def _wants_lfs(self, files: dict[str, _Blob], repo_type: str, path: str, size: int) -> bool:
        if size >= _REGULAR_MAX_SIZE:
            return True
        attributes = files.get(".gitattributes")
        text = attributes.content.decode(errors="replace") if attributes else _gitattributes(repo_type).decode()
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and "filter=lfs" in parts[1:]:
                pattern = parts[0]
                target = path if "/" in pattern else path.rsplit("/", 1)[-1]
                if fnmatch.fnmatchcase(target, pattern):
                    return True
        return False

    def _after_commit(self, repo: _Repo, branch: str) -> None:
        if repo.space is None or branch != "main":
            return
        readme = repo.head().files.get("README.md")
        meta = _front_matter(readme.content.decode(errors="replace")) if readme else {}
        if meta and isinstance(meta.get("sdk"), str):
            repo.space.sdk = meta["sdk"]
        if repo.space.stage == "PAUSED":
            return
        start_space(self, repo)

    # -- internals: request handling ----------------------------------------------------------

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.method in (method, "*") and fault.pattern.search(path):
                    fault.remaining -= 1
                    self.faults_fired.append((method, path, fault.fault))
                    return fault
        return None

    def _user(self, headers: Any) -> str | None:
        """The caller: users[0] for the right token, None when anonymous; 401 for a wrong token."""
        if self.token is None:
            return self.users[0]
        auth = headers.get("Authorization") or ""
        if not auth:
            return None
        if auth == f"Bearer {self.token}":
            return self.users[0]
        raise _HttpError(401, "Invalid credentials in Authorization header")

    def _can_write_namespace(self, user: str | None, namespace: str | None) -> bool:
        return user is not None and namespace is not None and namespace in self.users

    def _refuse_read_only(self, user: str | None) -> None:
        if user is not None and self.token_role == "read":
            raise _HttpError(403, "You don't have the rights to do this with a read-only token")

    def _read_repo(self, repo_type: str, repo_id: str, user: str | None) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._can_write_namespace(user, repo.namespace)):
            raise _repo_not_found(user)
        return repo

    def _write_repo(self, repo_type: str, repo_id: str, user: str | None) -> _Repo:
        repo = self._read_repo(repo_type, repo_id, user)
        if user is None:
            raise _HttpError(401, "You must be authenticated to do this")
        self._refuse_read_only(user)
        if not self._can_write_namespace(user, repo.namespace):
            raise _HttpError(403, f"You don't have the rights to write to {repo_type} {repo_id}")
        return repo

    def _revision(self, repo: _Repo, revision: str) -> _Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def handle(self, method: str, raw_path: str, query: str, headers: Any, body: bytes) -> _Response:
        params = parse_qs(query, keep_blank_values=True)
        segments = [unquote(s) for s in raw_path.split("/")[1:]]
        with self._lock:
            try:
                if raw_path.startswith(_ENDPOINTS_PATH + "/"):
                    return _EndpointsApi(self, headers).handle(method, segments[2:], body)
                if raw_path.startswith(_SERVING_PATH + "/"):
                    return _EndpointsApi(self, headers).serve(method, segments[1:], body)
                user = self._user(headers)
                if raw_path.startswith("/_lfs/"):
                    return lfs_object(self, method, segments[1:], user, body)
                if raw_path.endswith(".git/info/lfs/objects/batch"):
                    return lfs_batch(self, raw_path, user, body)
                if segments[:1] == ["api"]:
                    return self._api(method, segments[1:], params, headers, user, body)
                if "resolve" in segments[1:]:
                    return resolve(self, method, segments, headers, user)
                raise _HttpError(404, "Not found")
            except json.JSONDecodeError as exc:
                return _json({"error": f"Invalid JSON body: {exc}"}, 400, {"X-Error-Message": "Invalid JSON body"})
            except _HttpError as err:
                return _json(
                    {"error": err.message},
                    err.status,
                    {**({"X-Error-Code": err.code} if err.code else {}), "X-Error-Message": err.message, **err.headers},
                )

    def _api(
        self, method: str, segs: list[str], params: dict, headers: Any, user: str | None, body: bytes
    ) -> _Response:
        route = segs[0] if segs else ""
        if route == "whoami-v2" and method == "GET":
            return self._whoami(user)
        if route == "repos" and len(segs) == 2:
            payload = json.loads(body or b"{}")
            if segs[1] == "create" and method == "POST":
                return self._api_create(payload, user)
            if segs[1] == "delete" and method == "DELETE":
                return self._api_delete(payload, user)
        if route == "validate-yaml" and method == "POST":
            return self._validate_yaml(json.loads(body or b"{}"))
        if route in ("jobs", "scheduled-jobs"):
            return _JobsApi(self, user, params).handle(method, route, segs[1:], body)
        if route in _PLURAL and len(segs) >= 2:
            repo_type = _PLURAL[route]
            repo_id, tail = self._split_repo_id(repo_type, segs[1:])
            return _RepoApi(self, repo_type, repo_id, user, params, headers).handle(method, tail, body)
        raise _HttpError(404, f"Not found: /api/{'/'.join(segs)}")

    # fmt: off
    _REPO_SUBROUTES = {
        "revision", "tree", "preupload", "commit", "paths-info", "refs", "commits", "branch", "tag",
        "settings", "auth-check", "secrets", "variables", "runtime", "pause", "restart", "hardware",
        "sleeptime", "logs",
    }
    # fmt: on

    def _split_repo_id(self, repo_type: str, rest: list[str]) -> tuple[str, list[str]]:
        if len(rest) >= 2 and (repo_type, f"{rest[0]}/{rest[1]}") in self._repos:
            return f"{rest[0]}/{rest[1]}", rest[2:]
        if (repo_type, rest[0]) in self._repos:
            return rest[0], rest[1:]
        if len(rest) >= 2 and rest[1] not in self._REPO_SUBROUTES:
            return f"{rest[0]}/{rest[1]}", rest[2:]
        return rest[0], rest[1:]

    def _whoami(self, user: str | None) -> _Response:
        if user is None:
            raise _HttpError(401, "Invalid credentials in Authorization header")
        orgs = [{"type": "org", "name": o, "fullname": o, "roleInOrg": "admin"} for o in self.users[1:]]
        return _json(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user,
                "email": f"{user}@example.invalid",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": self.token_role}},
            }
        )

    def _api_create(self, payload: dict, user: str | None) -> _Response:
        if user is None:
            raise _HttpError(401, "You must be authenticated to create a repo")
        self._refuse_read_only(user)
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise _HttpError(400, f"Invalid repo type {repo_type!r}")
        name = payload.get("name") or ""
        namespace = payload.get("organization") or user
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name) or "--" in name or ".." in name:
            raise _HttpError(400, f"Invalid repo name {name!r}")
        if namespace not in self.users:
            raise _HttpError(403, f"You don't have the rights to create a {repo_type} under the namespace {namespace}")
        repo_id = f"{namespace}/{name}"
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        existing = self._repos.get((repo_type, repo_id))
        if existing is not None:
            return _json(
                {"error": f"You already created this {repo_type} repo", "url": self._repo_url(existing)},
                409,
                {"X-Error-Message": f"You already created this {repo_type} repo"},
            )
        if repo_type == "space" and payload.get("sdk") not in ("gradio", "streamlit", "docker", "static"):
            raise _HttpError(400, "Invalid or missing sdk for a Space")
        repo = self._create_repo(repo_type, repo_id, private=private, sdk=payload.get("sdk"))
        if repo.space is not None:
            space = repo.space
            space.hardware_requested = payload.get("hardware") or "cpu-basic"
            space.sleep_time = payload.get("sleepTimeSeconds")
            for store, items in ((space.secrets, payload.get("secrets")), (space.variables, payload.get("variables"))):
                for item in items or []:
                    store[item["key"]] = _setting(item["value"], item.get("description"))
        repo_key = hashlib.sha1(repo_id.encode()).hexdigest()[:24]
        return _json({"url": self._repo_url(repo), "name": repo_id, "id": repo_key})

    def _api_delete(self, payload: dict, user: str | None) -> _Response:
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or user
        repo_id = f"{namespace}/{payload.get('name')}"
        repo = self._write_repo(repo_type, repo_id, user)
        if repo.space is not None:
            repo.space.generation += 1
            repo.space.stop_event.set()
        del self._repos[(repo_type, repo_id)]
        return _Response(200, b"")

    def _validate_yaml(self, payload: dict) -> _Response:
        meta = _front_matter(payload.get("content") or "")
        if meta is None:
            message = "Invalid YAML in README.md front matter"
            return _json({"error": message, "errors": [{"message": message}]}, 400)
        return _json({"errors": [], "warnings": []})

    # -- resolve (file download) ---------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _ThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    hub: HubServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ThreadingServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default stderr log
        pass

    def _read_body(self) -> bytes:
        return read_body(self)

    def _dispatch(self) -> None:
        hub = self.server.hub
        method = self.command
        raw_path, _, query = self.path.partition("?")
        body = self._read_body()
        hub.requests.append((method, self.path, dict(self.headers.items())))
        fault = hub._take_fault(method, raw_path)
        if fault is not None and not fault.after_handling:
            return self._send_fault(fault)
        try:
            response = hub.handle(method, raw_path, query, self.headers, body)
        except Exception:  # a bug in the fake: say so loudly instead of hanging the client
            hub.errors.append(traceback.format_exc())
            response = _json({"error": "fake hub internal error"}, 500)
        if fault is not None:
            return self._send_fault(fault)
        self._send(response)

    def _send_fault(self, fault: _Fault) -> None:
        if fault.fault == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        status = int(fault.fault)
        headers = {"X-Error-Message": "Injected fault"}
        if status == 429:
            headers["Retry-After"] = "0"
        self._send(_json({"error": f"Injected fault {status}"}, status, headers))

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, str(value).encode("latin-1", "replace").decode("latin-1"))
        length = response.content_length if response.content_length is not None else len(response.body)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Request-Id", f"fake-{id(response):x}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch


# --------------------------------------------------------------------------------------------
# Pointing the real clients at a server
# --------------------------------------------------------------------------------------------

# fmt: off
_UNSET_ENV = (
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH",
    "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE", "HF_DATASETS_CACHE",
    "HF_MODULES_CACHE", "HF_OIDC_RESOURCE", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HUGGINGFACE_CO_STAGING",
    "HF_DATASETS_DOWNLOADED_DATASETS_PATH", "HF_DATASETS_EXTRACTED_DATASETS_PATH", "HF_INFERENCE_ENDPOINT",
)
# fmt: on


def point_clients_at(server: HubServer, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redirect huggingface_hub / datasets / transformers (imported or not yet) to ``server``.

    HF_ENDPOINT and HF_HOME are read when those libraries are imported, so the environment is set
    for later imports and the already-imported module constants are patched too.
    """
    hf_home.mkdir(parents=True, exist_ok=True)
    for name in _UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_UPDATE_CHECK", "1")
    monkeypatch.setenv("HF_UPDATE_DOWNLOAD_COUNTS", "0")
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("no_proxy", no_proxy)
    if server.token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", server.token)

    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    hub_cache = str(hf_home / "hub")
    patches = {
        "ENDPOINT": server.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": frozenset(constants.HF_URL_HOSTS | {"127.0.0.1"}),
        "INFERENCE_ENDPOINTS_ENDPOINT": server.endpoints_url,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": hub_cache,
        "HUGGINGFACE_HUB_CACHE": hub_cache,
        "default_cache_path": hub_cache,
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(hf_home / ".check_for_update_done"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
    }
    for name, value in patches.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    origin = ("http", "127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    monkeypatch.setattr(_http, "_HUB_ORIGINS", frozenset(_http._HUB_ORIGINS | {origin}))
    cache_manager = sys.modules.get("huggingface_hub.utils._cache_manager")
    if cache_manager is not None and hasattr(cache_manager, "HF_HUB_CACHE"):
        monkeypatch.setattr(cache_manager, "HF_HUB_CACHE", hub_cache)
    # Objects built at import time keep the endpoint of that moment: the module-level HfApi behind
    # `huggingface_hub.upload_folder` & co, and the cached HfFileSystem instances (`hffs`, `HfFileSystem()`).
    hf_api_module = sys.modules.get("huggingface_hub.hf_api")
    if hf_api_module is not None and hasattr(hf_api_module, "api"):
        monkeypatch.setattr(hf_api_module.api, "endpoint", server.url)
        monkeypatch.setattr(hf_api_module.api, "_whoami_cache", {})
    fs_module = sys.modules.get("huggingface_hub.hf_file_system")
    if fs_module is not None:
        fs_module.HfFileSystem.clear_instance_cache()
        shared = getattr(fs_module, "hffs", None)
        if shared is not None:
            monkeypatch.setattr(shared, "endpoint", server.url)
            monkeypatch.setattr(shared._api, "endpoint", server.url)
            monkeypatch.setattr(shared, "_repo_and_revision_exists_cache", {})
            shared.dircache.clear()

    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_cache = hf_home / "datasets"
        downloads = datasets_cache / "downloads"
        for name, value in {
            "HF_ENDPOINT": server.url,
            "HUB_DATASETS_URL": server.url + "/datasets/{repo_id}/resolve/{revision}/{path}",
            "HF_CACHE_HOME": str(hf_home),
            "HF_DATASETS_CACHE": datasets_cache,
            "HF_MODULES_CACHE": hf_home / "modules",
            "DOWNLOADED_DATASETS_PATH": downloads,
            "EXTRACTED_DATASETS_PATH": downloads / "extracted",
            "HF_HUB_OFFLINE": False,
            "HF_DATASETS_OFFLINE": False,
            "HF_UPDATE_DOWNLOAD_COUNTS": False,
        }.items():
            if hasattr(datasets_config, name):
                monkeypatch.setattr(datasets_config, name, value)
    for module_name in ("transformers.utils.hub", "transformers.dynamic_module_utils"):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, "HF_MODULES_CACHE"):
            monkeypatch.setattr(module, "HF_MODULES_CACHE", str(hf_home / "modules"))


@pytest.fixture(name="hub")
def hub_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A started HubServer with huggingface_hub / datasets / transformers pointed at it."""
    server = HubServer().start()
    try:
        point_clients_at(server, tmp_path / "hf_home", monkeypatch)
        yield server
    finally:
        server.stop()
    # An exception inside the fake is a bug in the fake, whatever the test concluded.
    assert not server.errors, "fake hub raised:\n" + "\n".join(server.errors)
