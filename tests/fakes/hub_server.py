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

Inference Endpoints: each GET moves a new (or resumed, or updated) endpoint one state on
(pending -> initializing -> running); once running, ``status.url`` serves ``/health``, TGI-style
``POST /`` and ``POST /v1/chat/completions`` answered by ``inference_responder``.
"""

from __future__ import annotations

from tests.fakes._http import read_body

import base64
import datetime as _dt
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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

import pytest

SpaceRunner = Callable[[str, dict[str, bytes], dict[str, str], dict[str, str]], None]

REPO_TYPES = ("model", "dataset", "space")
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
_REGULAR_MAX_SIZE = 10 * 1024 * 1024  # the Hub sends bigger files to LFS whatever .gitattributes says
_ACTIVE_SPACE_STAGES = {"BUILDING", "APP_STARTING", "RUNNING", "RUNNING_BUILDING", "RUNTIME_ERROR", "BUILD_ERROR"}
_ENDPOINTS_PATH = "/endpoints-api/v2"
_SERVING_PATH = "/endpoints-serving"

# What the Hub writes into the first commit of a new repo (abridged, same rules).
# fmt: off
_LFS_PATTERNS = [
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
    "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
]
_DATASET_LFS_PATTERNS = ["*.lz4", "*.mds", "*.mp3", "*.ogg", "*.wav", "*.jpg", "*.jpeg", "*.png", "*.webp"]
# fmt: on


def _gitattributes(repo_type: str) -> bytes:
    patterns = _LFS_PATTERNS + (_DATASET_LFS_PATTERNS if repo_type == "dataset" else [])
    return "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in patterns).encode()


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob holding ``data`` (what the Hub calls a file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _front_matter(text: str) -> dict | None:
    """The YAML front matter of a README, {} if none, None if it is not valid YAML."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.S)
    if match is None:
        return {}
    try:
        import yaml

        data = yaml.safe_load(match.group(1))
    except Exception:
        return None
    return data if isinstance(data, dict) else ({} if data is None else None)


# --------------------------------------------------------------------------------------------
# In-memory model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Blob:
    content: bytes
    lfs: bool

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @cached_property
    def pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.content)}\n"
        ).encode()

    @cached_property
    def oid(self) -> str:
        """Tree oid: git sha1 of the blob git stores (the pointer file for LFS files)."""
        return git_blob_sha1(self.pointer if self.lfs else self.content)

    @cached_property
    def etag(self) -> str:
        return self.sha256 if self.lfs else git_blob_sha1(self.content)


@dataclass
class _Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict[str, _Blob]
    added: list[str]
    deleted: list[str]


@dataclass
class _SpaceState:
    sdk: str
    stage: str = "NO_APP_FILE"
    hardware_requested: str = "cpu-basic"
    hardware_current: str | None = None
    sleep_time: int | None = None
    error: str | None = None
    secrets: dict[str, dict] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)
    logs: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: {"build": [], "run": []})
    generation: int = 0
    stop_event: threading.Event = field(default_factory=threading.Event)
    runs: int = 0


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    gated: bool | str
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)  # name ("main", "refs/pr/1") -> commit oid
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)
    space: _SpaceState | None = None
    next_pr: int = 1

    @property
    def namespace(self) -> str | None:
        return self.repo_id.split("/")[0] if "/" in self.repo_id else None

    def head(self, branch: str = "main") -> _Commit:
        return self.commits[self.branches[branch]]

    def resolve(self, revision: str) -> _Commit | None:
        oid = self.branches.get(revision) or self.tags.get(revision)
        if oid is None and revision.startswith("refs/heads/"):
            oid = self.branches.get(revision[len("refs/heads/") :])
        if oid is None and re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [c for c in self.commits if c.startswith(revision)]
            oid = matches[0] if len(matches) == 1 else None
        return self.commits.get(oid) if oid else None


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern
    fault: int | str
    remaining: int
    after_handling: bool


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None  # for HEAD: the length a GET would have


class _HttpError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _json(data: Any, status: int = 200, headers: dict | None = None) -> _Response:
    return _Response(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})


def _setting(value: str, description: str | None) -> dict:
    return {"value": value, "description": description, "updatedAt": _now()}


def _repo_not_found(user: str | None) -> _HttpError:
    # Like the Hub: anonymous callers get 401 (cannot tell private from missing), others 404.
    return _HttpError(401 if user is None else 404, "Repository not found", "RepoNotFound")


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
            return self._runtime_dict(self._get_repo("space", space_id))

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
        self._start_space(repo)

    # -- internals: spaces -------------------------------------------------------------------

    def _runtime_dict(self, repo: _Repo) -> dict:
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

    def _app_file_present(self, repo: _Repo) -> bool:
        files = repo.head().files
        sdk = repo.space.sdk
        if sdk == "docker":
            return "Dockerfile" in files
        if sdk == "static":
            return True
        meta = _front_matter(files["README.md"].content.decode(errors="replace")) if "README.md" in files else {}
        return str((meta or {}).get("app_file", "app.py")) in files

    def _start_space(self, repo: _Repo) -> None:
        space = repo.space
        space.generation += 1
        space.stop_event.set()
        space.stop_event = threading.Event()
        space.error = None
        if not self._app_file_present(repo):
            space.stage, space.hardware_current = "NO_APP_FILE", None
            return
        space.stage = "BUILDING"
        space.logs["build"].append((_now(), f"Building {repo.repo_id} ({space.sdk})"))
        files = {path: blob.content for path, blob in repo.head().files.items()}
        secrets = {k: v["value"] for k, v in space.secrets.items()}
        variables = {k: v["value"] for k, v in space.variables.items()}
        args = (repo.repo_id, space.generation, files, secrets, variables)
        threading.Thread(target=self._run_space, args=args, name=f"space-{repo.repo_id}", daemon=True).start()

    def _run_space(self, space_id: str, generation: int, files: dict, secrets: dict, variables: dict) -> None:
        time.sleep(self.space_build_seconds)
        with self._lock:
            repo = self._repos.get(("space", space_id))
            if repo is None or repo.space.generation != generation:
                return
            space = repo.space
            space.stage, space.hardware_current = "RUNNING", space.hardware_requested
            space.runs += 1
            runner = self.space_runner if space.sdk == "docker" else None
        if runner is None:
            return
        try:
            runner(space_id, files, secrets, variables)
        except BaseException as exc:  # noqa: BLE001 - the Space "crashed"; its stage says so
            stage, error, log = "RUNTIME_ERROR", f"{type(exc).__name__}: {exc}", traceback.format_exc()
        else:
            stage, error, log = self.space_stage_after_exit, None, None
        with self._lock:
            repo = self._repos.get(("space", space_id))
            if repo is not None and repo.space.generation == generation:
                repo.space.stage, repo.space.error = stage, error
                if log:
                    repo.space.logs["run"].append((_now(), log))

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
                    return self._lfs_object(method, segments[1:], user, body)
                if raw_path.endswith(".git/info/lfs/objects/batch"):
                    return self._lfs_batch(raw_path, user, body)
                if segments[:1] == ["api"]:
                    return self._api(method, segments[1:], params, headers, user, body)
                if "resolve" in segments[1:]:
                    return self._resolve(method, segments, headers, user)
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

    def _resolve(self, method: str, segs: list[str], headers: Any, user: str | None) -> _Response:
        if method not in ("GET", "HEAD"):
            raise _HttpError(405, "Method not allowed")
        idx = segs.index("resolve", 1)
        prefix = segs[:idx]
        repo_type = "model"
        if prefix[0] in ("datasets", "spaces") and len(prefix) >= 2:
            repo_type, prefix = _PLURAL[prefix[0]], prefix[1:]
        if len(segs) < idx + 3:
            raise _HttpError(404, "Not found")
        repo = self._read_repo(repo_type, "/".join(prefix), user)
        commit = self._revision(repo, segs[idx + 1])
        if repo.gated and not self._can_write_namespace(user, repo.namespace):
            message = f"Access to {repo_type} {repo.repo_id} is restricted. You must have access to it."
            raise _HttpError(401 if user is None else 403, message, "GatedRepo", {"X-Repo-Commit": commit.oid})
        path = "/".join(segs[idx + 2 :])
        blob = commit.files.get(path)
        if blob is None:
            raise _HttpError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        size = len(blob.content)
        out = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{blob.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        if blob.lfs:
            out.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(size)})
        start, end, status = 0, size - 1, 200
        range_header = headers.get("Range")
        if range_header:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
            if match is None or match.groups() == ("", ""):
                raise _HttpError(416, "Invalid range", headers={"Content-Range": f"bytes */{size}"})
            first, last = match.groups()
            if first == "":
                start, end = max(size - int(last), 0), size - 1
            else:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            if start >= size or start > end:
                raise _HttpError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
            status = 206
            out["Content-Range"] = f"bytes {start}-{end}/{size}"
        data = blob.content[start : end + 1]
        return _Response(status, data, out, content_length=len(data))

    # -- git-LFS basic transfer --------------------------------------------------------------

    def _lfs_batch(self, raw_path: str, user: str | None, body: bytes) -> _Response:
        path = unquote(raw_path[1 : -len(".git/info/lfs/objects/batch")])
        repo_type = "model"
        for plural in ("datasets", "spaces"):
            if path.startswith(plural + "/"):
                repo_type, path = _PLURAL[plural], path[len(plural) + 1 :]
        payload = json.loads(body or b"{}")
        if payload.get("operation") == "upload":
            self._write_repo(repo_type, path, user)
        else:
            self._read_repo(repo_type, path, user)
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if payload.get("operation") == "upload" and oid not in self._lfs:
                entry["actions"] = {
                    "upload": {"href": f"{self.url}/_lfs/upload/{self._lfs_signature}/{oid}/{size}", "header": {}},
                    "verify": {"href": f"{self.url}/_lfs/verify", "header": {}},
                }
            elif payload.get("operation") == "download":
                if oid not in self._lfs:
                    entry = {"oid": oid, "size": size, "error": {"code": 404, "message": "Object does not exist"}}
                else:
                    entry["actions"] = {"download": {"href": f"{self.url}/_lfs/download/{oid}", "header": {}}}
            objects.append(entry)
        body = json.dumps({"transfer": "basic", "objects": objects}).encode()
        return _Response(200, body, {"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_object(self, method: str, segs: list[str], user: str | None, body: bytes) -> _Response:
        if segs[:1] == ["upload"] and method == "PUT" and len(segs) == 4:
            # A pre-signed storage URL: no Authorization header comes with it, the signature is the check.
            signature, oid, size = segs[1], segs[2], int(segs[3])
            if signature != self._lfs_signature:
                raise _HttpError(403, "Invalid signature")
            if hashlib.sha256(body).hexdigest() != oid or len(body) != size:
                raise _HttpError(400, "Uploaded content does not match its oid/size")
            self._lfs[oid] = body
            return _Response(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})
        if segs[:1] == ["verify"] and method == "POST":
            if user is None:
                raise _HttpError(401, "You must be authenticated to verify an upload")
            payload = json.loads(body or b"{}")
            content = self._lfs.get(payload.get("oid", ""))
            if content is None or len(content) != payload.get("size"):
                raise _HttpError(404, "Object not found")
            return _json({})
        if segs[:1] == ["download"] and method == "GET" and len(segs) == 2 and segs[1] in self._lfs:
            return _Response(200, self._lfs[segs[1]], {"Content-Type": "application/octet-stream"})
        raise _HttpError(404, "Not found")


class _RepoApi:
    """Routes under /api/{models|datasets|spaces}/{repo_id}/..."""

    def __init__(self, hub: HubServer, repo_type: str, repo_id: str, user: str | None, params: dict, headers: Any):
        self.hub, self.repo_type, self.repo_id, self.user = hub, repo_type, repo_id, user
        self.params, self.headers = params, headers

    def _param(self, name: str, default: str = "") -> str:
        values = self.params.get(name)
        return values[0] if values else default

    def _flag(self, name: str) -> bool:
        return self._param(name).lower() in ("1", "true", "yes")

    def handle(self, method: str, tail: list[str], body: bytes) -> _Response:
        action = tail[0] if tail else ""
        hub = self.hub
        if method == "GET" and action in ("", "revision"):
            repo = hub._read_repo(self.repo_type, self.repo_id, self.user)
            revision = tail[1] if action == "revision" and len(tail) > 1 else "main"
            return self._info(repo, hub._revision(repo, revision))
        if method == "GET" and action == "tree" and len(tail) >= 2:
            return self._tree(tail[1], "/".join(tail[2:]))
        if method == "POST" and action == "paths-info" and len(tail) == 2:
            return self._paths_info(tail[1], body)
        if method == "POST" and action == "preupload" and len(tail) == 2:
            return self._preupload(tail[1], json.loads(body or b"{}"))
        if method == "POST" and action == "commit" and len(tail) == 2:
            return self._commit(tail[1], body)
        if method == "GET" and action == "refs":
            return self._refs()
        if method == "GET" and action == "commits" and len(tail) == 2:
            return self._commits(tail[1])
        if action == "branch" and len(tail) == 2 and method in ("POST", "DELETE"):
            return self._branch(method, tail[1], json.loads(body or b"{}"))
        if action == "tag" and len(tail) == 2 and method in ("POST", "DELETE"):
            return self._tag(method, tail[1], json.loads(body or b"{}"))
        if method == "PUT" and action == "settings":
            return self._settings(json.loads(body or b"{}"))
        if method == "GET" and action == "auth-check":
            if tail[1:] == ["write"]:
                hub._write_repo(self.repo_type, self.repo_id, self.user)
            else:
                hub._read_repo(self.repo_type, self.repo_id, self.user)
            return _json({})
        if self.repo_type == "space":
            return _SpaceApi(self).handle(method, action, tail[1:], body)
        raise _HttpError(404, f"Not found: {method} {action}")

    # -- read -------------------------------------------------------------------------------

    def _info(self, repo: _Repo, commit: _Commit) -> _Response:
        blobs = self._flag("blobs")
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                blob = commit.files[path]
                sibling.update({"size": len(blob.content), "blobId": blob.oid})
                if blob.lfs:
                    size, pointer_size = len(blob.content), len(blob.pointer)
                    sibling["lfs"] = {"size": size, "sha256": blob.sha256, "pointerSize": pointer_size}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.namespace,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        readme = commit.files.get("README.md")
        card = _front_matter(readme.content.decode(errors="replace")) if readme else None
        if card:
            info["cardData"] = card
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        if repo.space is not None:
            info.update(
                {
                    "sdk": repo.space.sdk,
                    "runtime": self.hub._runtime_dict(repo),
                    "subdomain": repo.repo_id.replace("/", "-").lower(),
                    "host": f"https://{repo.repo_id.replace('/', '-').lower()}.hf.space",
                }
            )
        return _json(info)

    def _last_commit(self, repo: _Repo, head: _Commit, path: str) -> dict:
        found = head
        for commit in self.hub._history(repo, head.oid):
            current = {p: b for p, b in commit.files.items() if p == path or p.startswith(path + "/")}
            if commit.parent is None:
                found = commit
                break
            parent = repo.commits[commit.parent].files
            before = {p: b for p, b in parent.items() if p == path or p.startswith(path + "/")}
            found = commit
            if current != before:
                break
        return {"id": found.oid, "title": found.title, "date": found.date}

    def _entry(self, repo: _Repo, commit: _Commit, path: str, expand: bool) -> dict | None:
        blob = commit.files.get(path)
        if blob is not None:
            entry: dict[str, Any] = {"type": "file", "oid": blob.oid, "size": len(blob.content), "path": path}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": len(blob.content), "pointerSize": len(blob.pointer)}
        else:
            children = sorted((p, b.oid) for p, b in commit.files.items() if p.startswith(path + "/"))
            if not children:
                return None
            oid = hashlib.sha1(json.dumps(children).encode()).hexdigest()
            entry = {"type": "directory", "oid": oid, "size": 0, "path": path}
        if expand:
            entry["lastCommit"] = self._last_commit(repo, commit, path)
            if entry["type"] == "file":
                entry["securityFileStatus"] = {"status": "safe", "avScan": {}, "pickleImportScan": {}}
        return entry

    def _tree(self, revision: str, path: str) -> _Response:
        repo = self.hub._read_repo(self.repo_type, self.repo_id, self.user)
        commit = self.hub._revision(repo, revision)
        path = path.strip("/")
        recursive, expand = self._flag("recursive"), self._flag("expand")
        prefix = path + "/" if path else ""
        if path and (path in commit.files or not any(p.startswith(prefix) for p in commit.files)):
            message = f"{path} does not exist on {revision}"
            raise _HttpError(404, message, "EntryNotFound", {"X-Repo-Commit": commit.oid})
        names: set[str] = set()
        for file_path in commit.files:
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts) + 1 if recursive else 2):
                names.add(prefix + "/".join(parts[:depth]))
        ordered = sorted(names)
        offset = int(self._param("cursor") or 0)
        page_size = self.hub.tree_page_size if not expand else min(self.hub.tree_page_size, 50)
        page = ordered[offset : offset + page_size]
        headers = {}
        if offset + page_size < len(ordered):
            flags = {"recursive": str(recursive).lower(), "expand": str(expand).lower()}
            query = urlencode({**flags, "cursor": offset + page_size})
            base = f"{self.hub.url}/api/{self.repo_type}s/{self.repo_id}/tree/{quote(revision, safe='')}"
            next_url = base + (f"/{quote(path, safe='')}" if path else "") + "?" + query
            headers["Link"] = f'<{next_url}>; rel="next"'
        return _json([self._entry(repo, commit, p, expand) for p in page], headers=headers)

    def _paths_info(self, revision: str, body: bytes) -> _Response:
        repo = self.hub._read_repo(self.repo_type, self.repo_id, self.user)
        commit = self.hub._revision(repo, revision)
        content_type = self.headers.get("Content-Type") or ""
        if "json" in content_type:
            payload = json.loads(body or b"{}")
            paths, expand = payload.get("paths") or [], bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), (form.get("expand") or ["false"])[0].lower() == "true"
        entries = [self._entry(repo, commit, p.strip("/"), expand) for p in paths]
        return _json([e for e in entries if e is not None])

    def _refs(self) -> _Response:
        repo = self.hub._read_repo(self.repo_type, self.repo_id, self.user)

        def ref(name: str, full: str, oid: str) -> dict:
            return {"name": name, "ref": full, "targetCommit": oid}

        branches = [ref(n, f"refs/heads/{n}", o) for n, o in repo.branches.items() if not n.startswith("refs/")]
        prs = [ref(n, n, o) for n, o in repo.branches.items() if n.startswith("refs/pr/")]
        tags = [ref(n, f"refs/tags/{n}", o) for n, o in repo.tags.items()]
        data = {"branches": branches, "converts": [], "tags": tags}
        if self._param("include_prs"):
            data["pullRequests"] = prs
        return _json(data)

    def _commits(self, revision: str) -> _Response:
        repo = self.hub._read_repo(self.repo_type, self.repo_id, self.user)
        commit = self.hub._revision(repo, revision)
        items = [
            {
                "id": c.oid,
                "title": c.title,
                "message": c.message,
                "date": c.date,
                "authors": [{"user": c.author, "avatar": None}],
                "parents": [c.parent] if c.parent else [],
            }
            for c in self.hub._history(repo, commit.oid)
        ]
        return _json(items)

    # -- write ------------------------------------------------------------------------------

    def _branch_for_write(self, revision: str) -> tuple[_Repo, str]:
        repo = self.hub._write_repo(self.repo_type, self.repo_id, self.user)
        branch = revision[len("refs/heads/") :] if revision.startswith("refs/heads/") else revision
        if branch not in repo.branches:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo, branch

    def _preupload(self, revision: str, payload: dict) -> _Response:
        repo, branch = self._branch_for_write(revision)
        files = repo.head(branch).files
        ignore = payload.get("gitIgnore")
        if ignore is None and ".gitignore" in files:
            ignore = files[".gitignore"].content.decode(errors="replace")
        patterns = [ln.strip() for ln in (ignore or "").splitlines() if ln.strip() and not ln.startswith(("#", "!"))]
        answer = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item.get("size") or 0)
            lfs = size > 0 and self.hub._wants_lfs(files, self.repo_type, path, size)
            entry: dict[str, Any] = {
                "path": path,
                "uploadMode": "lfs" if lfs else "regular",
                "shouldIgnore": any(
                    fnmatch.fnmatchcase(path, p.strip("/")) or fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], p)
                    for p in patterns
                ),
            }
            existing = files.get(path)
            if existing is not None:
                # The client compares this with its own oid (sha256 for lfs, git sha1 otherwise)
                # and leaves unchanged files out of the commit.
                entry["oid"] = existing.sha256 if existing.lfs else git_blob_sha1(existing.content)
            answer.append(entry)
        return _json({"files": answer, "commitOid": repo.branches[branch]})

    def _commit(self, revision: str, body: bytes) -> _Response:
        repo, branch = self._branch_for_write(revision)
        try:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        except ValueError:
            raise _HttpError(400, "Invalid NDJSON body") from None
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "The first line of a commit must be its header")
        header = lines[0]["value"]
        summary = (header.get("summary") or "").strip()
        if not summary:
            raise _HttpError(400, "A commit needs a summary")
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.branches[branch]:
            raise _HttpError(412, "A commit has happened since. Please refresh and try again.")
        create_pr = self._param("create_pr") in ("1", "true")
        base = repo.head(branch).files
        files = dict(base)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = (value.get("path") or "").strip("/")
            if not path:
                raise _HttpError(400, "Every operation needs a path")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HttpError(400, f"Unsupported encoding {value.get('encoding')!r}")
                try:
                    content = base64.b64decode(value["content"], validate=True)
                except (KeyError, ValueError):
                    raise _HttpError(400, f"Invalid base64 content for {path}") from None
                lfs = self.hub._wants_lfs(base, self.repo_type, path, len(content)) and len(content) > 0
                files[path] = _Blob(content, lfs)
            elif key == "lfsFile":
                content = self.hub._lfs.get(value.get("oid", ""))
                if content is None:
                    message = f"Your push was rejected because an LFS pointer ({path}) points to a missing file"
                    raise _HttpError(422, message)
                files[path] = _Blob(content, True)
            elif key == "deletedFile":
                if path not in files:
                    raise _HttpError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                doomed = [p for p in files if p.startswith(path + "/")]
                if not doomed:
                    raise _HttpError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            else:
                raise _HttpError(400, f"Unknown commit operation {key!r}")
        pr_url = None
        if create_pr:
            number = repo.next_pr
            repo.next_pr += 1
            target = f"refs/pr/{number}"
            repo.branches[target] = repo.branches[branch]
            branch = target
            pr_url = f"{self.hub._repo_url(repo)}/discussions/{number}"
        commit = self.hub._add_commit(repo, branch, files, summary, header.get("description") or "", self.user)
        self.hub._after_commit(repo, branch)
        return _json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.hub._repo_url(repo)}/commit/{commit.oid}",
                "pullRequestUrl": pr_url,
                "hookOutput": "",
            }
        )

    def _branch(self, method: str, branch: str, payload: dict) -> _Response:
        repo = self.hub._write_repo(self.repo_type, self.repo_id, self.user)
        if method == "DELETE":
            if branch not in repo.branches or branch == "main":
                raise _HttpError(404 if branch != "main" else 403, f"Cannot delete branch {branch}", "RevisionNotFound")
            del repo.branches[branch]
            return _json({})
        if branch in repo.branches:
            raise _HttpError(409, f"Reference already exists: {branch}")
        start = self.hub._revision(repo, payload.get("startingPoint") or "main")
        repo.branches[branch] = start.oid
        return _json({})

    def _tag(self, method: str, name: str, payload: dict) -> _Response:
        repo = self.hub._write_repo(self.repo_type, self.repo_id, self.user)
        if method == "DELETE":
            if repo.tags.pop(name, None) is None:
                raise _HttpError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            return _json({})
        tag = payload.get("tag") or ""
        if tag in repo.tags:
            raise _HttpError(409, f"Tag already exists: {tag}")
        repo.tags[tag] = self.hub._revision(repo, name).oid
        return _json({})

    def _settings(self, payload: dict) -> _Response:
        repo = self.hub._write_repo(self.repo_type, self.repo_id, self.user)
        if "private" in payload:
            repo.private = bool(payload["private"])
        if "visibility" in payload:
            repo.private = payload["visibility"] == "private"
        if "gated" in payload:
            repo.gated = payload["gated"]
        return _json({})


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
