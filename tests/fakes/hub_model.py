"""The in-memory model of the loopback Hub (repos, commits, blobs, Space state) and the
response helpers every route module shares."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

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
