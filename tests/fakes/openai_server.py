"""A loopback HTTP double of OpenAI fine-tuning, Azure OpenAI and Azure Resource Manager.

Tests drive it with the official ``openai`` client (``OpenAI(...,
_strict_response_validation=True)`` and ``AzureOpenAI``) exactly as production code drives
the real services; it follows the public contract in ``shared/reference/`` (object shapes,
status codes, cursor pagination, error bodies, job states), not ftpipe's convenience.

Surfaces (``server.url`` is ``http://127.0.0.1:PORT``):

- OpenAI, base URL ``url + "/v1"``: ``/files`` (multipart upload, list, retrieve, content,
  delete), ``/fine_tuning/jobs`` (create, list with ``after``/``limit``/``metadata[k]=v``,
  retrieve, cancel, ``/events``, ``/checkpoints``), ``/chat/completions``, ``/models``.
  Auth ``Authorization: Bearer <api_key>``.
- Azure OpenAI data plane, endpoint ``url`` (client base ``url + "/openai"``, every call
  carries ``?api-version=``): the same files and jobs endpoints with Azure's differences
  (201 + ``Location`` on upload and create, states ``created/pending/running/...``, files
  ``pending`` until polled, ``-1`` for hyperparameters not yet chosen, no ``method`` or
  ``metadata`` on GA api-versions, ``{"error": {code, message, target, details,
  innererror}}``) and ``/deployments/{name}/chat/completions``. Auth ``api-key: <key>`` or
  ``Authorization: Bearer <azure_ad_token>``.
- Azure Resource Manager, base ``url``: ``PUT/GET/DELETE /subscriptions/{sub}/resourceGroups/
  {rg}/providers/Microsoft.CognitiveServices/accounts/{account}/deployments/{name}``.
  Auth ``Authorization: Bearer <arm_token>``.

Time does not pass by the clock. Each GET of a job (``jobs.retrieve``) counts as one poll;
every ``steps_per_state`` polls the job moves one state on (``steps_per_state=0``: the first
poll finishes it). OpenAI: validating_files -> queued -> running -> succeeded; Azure:
created -> pending -> running -> succeeded. The training data is checked when the job leaves
its first state; bad data fails the job with ``error = {code, message, param}``. Azure files
move pending -> processed the same way on GET of the file; ARM deployments move
Accepted -> Creating -> Succeeded (or Failed for a model the account cannot deploy).
``set_job_outcome`` makes a later job fail or be cancelled instead of succeeding.

How the double "learns" (so that evaluation and the gate mean something):

- A base model answers with ``BASE_MODEL_ANSWER``, a fixed unhelpful sentence, unless its
  prompt holds few-shot examples (a user turn answered by an assistant turn before the final
  user message): then it answers with the assistant reply of the earlier user turn that is
  most lexically similar to the final user message.
- A fine-tuned model (produced by a succeeded job, or one of that job's checkpoints) answers
  with the assistant reply of the most lexically similar user turn in its job's training
  file: nearest neighbour by token overlap (Jaccard of lower-cased word sets). DPO data
  contributes the preferred output for the input's last user turn.
- Nothing overlapping means no example applies: both answer ``BASE_MODEL_ANSWER``.
- ``usage`` counts tokens with a whitespace/punctuation tokenizer (``count_tokens``).

So fine-tuning beats the zero-shot base on prompts resembling the training data, and a
few-shot prompt is a real, cheaper baseline that fine-tuning must beat.

Faults: ``inject(method, path_regex, fault, times=1, after_handling=False)`` answers the
next ``times`` matching requests with an HTTP status (429 carries ``retry-after: 0`` and
``retry-after-ms: 10``), or ``"drop"`` (the connection closes with no answer). With
``after_handling=True`` the request is carried out first (a job is stored) and the fault is
the answer: the client's retry of a POST then creates a duplicate, as with the real service.

Where the public contract names no value (error codes of some 400s, event wording, the
numbers in metrics) this double makes a plausible choice; tests should not rely on those.
"""
from __future__ import annotations

from tests.fakes._http import read_body

import email.parser
import email.policy
import json
import math
import random
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

if TYPE_CHECKING:  # pragma: no cover - typing only
    from openai import AzureOpenAI, OpenAI

__all__ = [
    "AZURE_FINE_TUNABLE",
    "BASE_MODEL_ANSWER",
    "OPENAI_FINE_TUNABLE",
    "JobOutcome",
    "OpenAIServer",
    "arm_deployment_url",
    "arm_headers",
    "azure_client",
    "count_tokens",
    "openai_client",
    "openai_server_fixture",
]

BASE_MODEL_ANSWER = "I'm sorry, I don't have enough information to answer that."
ORGANIZATION_ID = "org-ftpipetest"
_ORG_SLUG = "ftpipe-test"  # the org part of "ft:<base>:<org>:<suffix>:<id>"

# Fine-tunable snapshots and the methods each accepts.
OPENAI_FINE_TUNABLE: dict[str, tuple[str, ...]] = {
    "gpt-4o-mini-2024-07-18": ("supervised", "dpo"),
    "gpt-4o-2024-08-06": ("supervised", "dpo"),
    "gpt-4.1-2025-04-14": ("supervised", "dpo"),
    "gpt-4.1-mini-2025-04-14": ("supervised", "dpo"),
    "gpt-4.1-nano-2025-04-14": ("supervised", "dpo"),
    "gpt-3.5-turbo-0125": ("supervised",),
    "gpt-3.5-turbo-1106": ("supervised",),
}
_OPENAI_ALIASES = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
}
# Azure model names have no dots ("gpt-35-turbo"), and fine-tuned ids look like
# "<base>.ft-<hex>".
AZURE_FINE_TUNABLE: dict[str, tuple[str, ...]] = {
    "gpt-35-turbo-0613": ("supervised",),
    "gpt-35-turbo-1106": ("supervised",),
    "gpt-35-turbo-0125": ("supervised",),
    "gpt-4o-mini-2024-07-18": ("supervised", "dpo"),
    "gpt-4o-2024-08-06": ("supervised", "dpo"),
}
# Base models an ARM deployment may name: (properties.model.name, any version).
_AZURE_DEPLOYABLE_BASE = {"gpt-35-turbo", "gpt-4o-mini", "gpt-4o"}

_FILE_PURPOSES = {"assistants", "batch", "fine-tune", "vision", "user_data"}
_OPENAI_STATES = ("validating_files", "queued", "running")
_AZURE_STATES = ("created", "pending", "running")
_TERMINAL = {"succeeded", "failed", "cancelled"}
_MAX_METRIC_EVENTS = 50
_ARM_PATH = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.CognitiveServices/accounts/(?P<account>[^/]+)/deployments(?:/(?P<name>[^/]+))?",
    re.IGNORECASE,
)

# ---------------------------------------------------------------- tokens and similarity

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")


def count_tokens(text: str) -> int:
    """Tokens as this double counts them: runs of word characters and single punctuation."""
    return len(_TOKEN.findall(text))


def _words(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in _WORD.findall(text))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


# ---------------------------------------------------------------- judge models

# A model id starting with this grades answers deterministically (an LLM-as-judge double):
# the share of the reference's words the graded answer contains, on the scale the prompt
# asks for ("... from 1 to 5"), replied as "Score: N". It reads the sections "Reference
# answer:" and "Answer to grade:" of the last user message (ftpipe's default judge prompt).
JUDGE_MODEL_PREFIX = "judge-"
_JUDGE_SECTIONS = re.compile(r"Reference answer:\s*\n(?P<ref>.*?)\n\s*\nAnswer to grade:\s*\n(?P<ans>.*?)(?:\n\s*\n|$)",
                             re.DOTALL)
_JUDGE_SCALE = re.compile(r"from (-?\d+) to (-?\d+)")


def judge_reply(messages: list[dict[str, Any]]) -> str:
    """The judge double's reply to a grading prompt."""
    text = _content_text(messages[-1].get("content")) if messages else ""
    sections = _JUDGE_SECTIONS.search(text)
    scale = _JUDGE_SCALE.search(text)
    low, high = (int(scale.group(1)), int(scale.group(2))) if scale else (1, 5)
    if sections is None:
        return "I cannot find the answer to grade."
    ref, ans = _words(sections.group("ref")), _words(sections.group("ans"))
    share = len(ref & ans) / len(ref) if ref else 0.0
    return f"Score: {low + round(share * (high - low))}"


def _nearest_answer(query: str, pairs: list[tuple[str, str]]) -> str | None:
    """The answer of the pair whose prompt shares most words with ``query`` (first wins)."""
    q = _words(query)
    best, best_score = None, 0.0
    for prompt, answer in pairs:
        p = _words(prompt)
        union = q | p
        score = len(q & p) / len(union) if union else 0.0
        if score > best_score:
            best, best_score = answer, score
    return best


def _truncate_tokens(text: str, limit: int) -> str:
    spans = list(_TOKEN.finditer(text))
    return text if len(spans) <= limit else text[: spans[limit - 1].end()] if limit > 0 else ""


# ---------------------------------------------------------------- training data checks

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call"}
_SFT_KEYS = {"messages", "tools", "functions", "parallel_tool_calls"}
_DPO_KEYS = {"input", "preferred_output", "non_preferred_output"}


class _DataError(Exception):
    pass


def _check_message(msg: Any, where: str) -> None:
    if not isinstance(msg, dict):
        raise _DataError(f"{where}: each message must be an object")
    unknown = set(msg) - _MESSAGE_KEYS
    if unknown:
        raise _DataError(f"{where}: unrecognized key {sorted(unknown)[0]!r}")
    role = msg.get("role")
    if role not in _ROLES:
        raise _DataError(f"{where}: invalid role {role!r}")
    content = msg.get("content")
    calls = msg.get("tool_calls") or msg.get("function_call")
    if content is None and role == "assistant" and calls:
        pass
    elif isinstance(content, list):
        if not content or not all(isinstance(p, dict) and "type" in p for p in content):
            raise _DataError(f"{where}: content parts must be a non-empty list of typed parts")
    elif not isinstance(content, str) or not content.strip():
        raise _DataError(f"{where}: content must be a non-empty string")
    if "weight" in msg:
        if role != "assistant":
            raise _DataError(f"{where}: weight is only allowed on assistant messages")
        if msg["weight"] not in (0, 1) or isinstance(msg["weight"], bool):
            raise _DataError(f"{where}: weight must be 0 or 1")


def _sft_pairs(messages: Any, where: str, *, need_assistant: bool) -> list[tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise _DataError(f"{where}: 'messages' must be a non-empty list")
    pairs: list[tuple[str, str]] = []
    last_user: str | None = None
    for i, msg in enumerate(messages, 1):
        _check_message(msg, f"{where}, message {i}")
        text = _content_text(msg.get("content"))
        if msg["role"] == "user":
            last_user = text
        elif msg["role"] == "assistant" and last_user is not None and text:
            pairs.append((last_user, text))
    if need_assistant and not any(m.get("role") == "assistant" for m in messages):
        raise _DataError(f"{where}: no assistant message")
    return pairs


def _dpo_pairs(row: dict[str, Any], where: str) -> list[tuple[str, str]]:
    inp = row.get("input")
    if not isinstance(inp, dict):
        raise _DataError(f"{where}: 'input' must be an object with 'messages'")
    _sft_pairs(inp.get("messages"), f"{where}, input", need_assistant=False)
    outputs = {}
    for key in ("preferred_output", "non_preferred_output"):
        out = row.get(key)
        if not isinstance(out, list) or len(out) != 1:
            raise _DataError(f"{where}: {key!r} must be a list with one assistant message")
        _check_message(out[0], f"{where}, {key}")
        if out[0].get("role") != "assistant":
            raise _DataError(f"{where}: {key!r} must hold an assistant message")
        outputs[key] = _content_text(out[0].get("content"))
    users = [m for m in inp["messages"] if m.get("role") == "user"]
    if not users:
        raise _DataError(f"{where}: input has no user message")
    return [(_content_text(users[-1].get("content")), outputs["preferred_output"])]


def parse_training_data(content: bytes, method: str, *, min_examples: int) -> tuple[list[tuple[str, str]], int, int]:
    """Check a JSONL file as the service does; return (prompt/answer pairs, examples, tokens).

    Raises ``_DataError`` with a line-numbered message on the first problem.
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _DataError(f"file is not valid UTF-8 (byte {exc.start})") from None
    pairs: list[tuple[str, str]] = []
    examples = tokens = 0
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"Line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise _DataError(f"{where}: not valid JSON") from None
        if not isinstance(row, dict):
            raise _DataError(f"{where}: each line must be a JSON object")
        keys = _DPO_KEYS if method == "dpo" else _SFT_KEYS
        unknown = set(row) - keys
        if unknown:
            raise _DataError(f"{where}: unrecognized key {sorted(unknown)[0]!r} for {method} data")
        if method == "dpo":
            pairs += _dpo_pairs(row, where)
        else:
            pairs += _sft_pairs(row.get("messages"), where, need_assistant=True)
        examples += 1
        tokens += count_tokens(line)
    if examples < min_examples:
        raise _DataError(
            f"Training file has {examples} example(s), but must have at least {min_examples} examples"
        )
    return pairs, examples, tokens


# ---------------------------------------------------------------- small types


@dataclass(frozen=True)
class JobOutcome:
    """How a job ends once it has run (data problems fail it earlier regardless)."""

    status: str = "succeeded"  # succeeded | failed | cancelled
    code: str = "server_error"
    message: str = "The job failed due to an internal error."


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    fault: int | str
    times: int
    after_handling: bool


@dataclass
class _Response:
    status: int
    body: Any = None  # dict/list -> JSON; bytes -> as is; None -> empty
    headers: dict[str, str] = field(default_factory=dict)


class _ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type


@dataclass
class _Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    surface: str  # openai | azure | arm

    def arg(self, name: str, default: str | None = None) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return default

    @property
    def api_version(self) -> str:
        return self.arg("api-version") or ""

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _ApiError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None


@dataclass
class _JobSim:
    provider: str  # openai | azure
    job: dict[str, Any]
    method: str
    outcome: JobOutcome
    hp: dict[str, Any]  # requested hyperparameters, "auto" until the job resolves them
    state_index: int = 0
    polls_in_state: int = 0
    pairs: list[tuple[str, str]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    steps: list[dict[str, float]] = field(default_factory=list)  # planned per-step metrics
    emitted: int = 0  # how many planned metric events were emitted
    checkpoint_steps: list[int] = field(default_factory=list)
    examples: int = 0
    tokens: int = 0


# ---------------------------------------------------------------- the server


class OpenAIServer:
    """The loopback double. ``start()`` it (or use it as a context manager), point clients
    at ``url``; inspect ``jobs``, ``files``, ``deployments`` and ``requests``."""

    def __init__(
        self,
        *,
        api_key: str = "sk-test",
        azure_api_key: str = "azure-test-key",
        arm_token: str = "arm-test-token",
        steps_per_state: int = 1,
        azure_ad_token: str = "azure-ad-test-token",
        job_outcomes: tuple[JobOutcome, ...] = (),
    ) -> None:
        if steps_per_state < 0:
            raise ValueError("steps_per_state must be >= 0")
        self.api_key = api_key
        self.azure_api_key = azure_api_key
        self.azure_ad_token = azure_ad_token
        self.arm_token = arm_token
        self.steps_per_state = steps_per_state
        self.url = ""
        self.jobs: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self._sims: dict[str, _JobSim] = {}
        self._content: dict[str, bytes] = {}
        self._file_provider: dict[str, str] = {}
        self._file_polls: dict[str, int] = {}
        self._deploy_polls: dict[str, int] = {}
        self._models: dict[str, _JobSim] = {}  # fine-tuned (and checkpoint) model id -> job
        self._outcomes: list[JobOutcome] = list(job_outcomes)
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._rng = random.Random(20240701)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # -- lifecycle

    def start(self) -> OpenAIServer:
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls

    def inject(self, method: str, path_regex: str, fault: int | str, times: int = 1,
               after_handling: bool = False) -> None:
        """Answer the next ``times`` requests whose method matches (``"*"``: any) and whose
        path (without query) matches ``path_regex`` (``re.search``) with ``fault``: an HTTP
        status, or ``"drop"`` to close the connection unanswered. ``after_handling`` carries
        the request out first."""
        if fault != "drop" and not (isinstance(fault, int) and 400 <= fault <= 599):
            raise ValueError(f"fault must be an HTTP error status or 'drop', got {fault!r}")
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_regex), fault, times, after_handling))

    def set_job_outcome(self, status: str, *, code: str | None = None, message: str | None = None,
                        job_id: str | None = None) -> None:
        """Make the next created job (or ``job_id``) end ``failed`` or ``cancelled`` (or
        ``succeeded``) when it finishes running. Calls without ``job_id`` queue up."""
        if status not in _TERMINAL:
            raise ValueError(f"status must be one of {sorted(_TERMINAL)}")
        defaults = JobOutcome()
        outcome = JobOutcome(status, code or defaults.code, message or defaults.message)
        with self._lock:
            if job_id is None:
                self._outcomes.append(outcome)
            else:
                self._sims[job_id].outcome = outcome

    def advance_job(self, job_id: str, polls: int | None = None) -> dict[str, Any]:
        """Move a job on as if it were polled ``polls`` times (None: until it ends)."""
        with self._lock:
            sim = self._sims[job_id]
            count = 0
            while sim.job["status"] not in _TERMINAL and (polls is None or count < polls):
                self._poll_job(sim)
                count += 1
            return sim.job

    def add_deployment(self, name: str, model: str, *, version: str = "1") -> dict[str, Any]:
        """Seed a Succeeded Azure deployment (e.g. of a base model for baselines)."""
        with self._lock:
            dep = self._deployment_object("sub", "rg", "account", name,
                                          {"name": "standard", "capacity": 1},
                                          {"format": "OpenAI", "name": model, "version": version})
            dep["properties"]["provisioningState"] = "Succeeded"
            self.deployments[name] = dep
            return dep

    def file_content(self, file_id: str) -> bytes:
        return self._content[file_id]

    # -- request entry point (called from handler threads)

    def _handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Response | None:
        with self._lock:
            self.requests.append((method, raw_path, headers, body))
            split = urlsplit(raw_path)
            path = split.path
            surface = "openai" if path.startswith("/v1/") else "azure" if path.startswith("/openai/") else \
                "arm" if path.lower().startswith("/subscriptions/") else "openai"
            req = _Request(method, path, parse_qsl(split.query, keep_blank_values=True), headers, body, surface)
            fault = self._take_fault(method, path)
            if fault is not None and not fault.after_handling:
                return self._fault_response(fault, surface)
            try:
                resp = self._dispatch(req)
            except _ApiError as exc:
                resp = self._error_response(surface, exc)
            except Exception:  # a bug in the double: say so loudly, answer like the service
                traceback.print_exc(file=sys.stderr)
                resp = self._error_response(surface, _ApiError(500, "internal error in the fake", type="server_error"))
            if fault is not None:
                return self._fault_response(fault, surface)
            return resp

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method in ("*", method) and fault.pattern.search(path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _fault_response(self, fault: _Fault, surface: str) -> _Response | None:
        if fault.fault == "drop":
            return None
        status = int(fault.fault)
        messages = {429: "Rate limit reached. Please try again later.",
                    500: "The server had an error while processing your request. Sorry about that!"}
        exc = _ApiError(status, messages.get(status, f"Injected fault {status}."),
                        code="rate_limit_exceeded" if status == 429 else None,
                        type="requests" if status == 429 else "server_error" if status >= 500 else
                        "invalid_request_error")
        resp = self._error_response(surface, exc)
        if status == 429:
            resp.headers.update({"retry-after": "0", "retry-after-ms": "10"})
        return resp

    def _error_response(self, surface: str, exc: _ApiError) -> _Response:
        if surface == "openai":
            body = {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}
        elif surface == "azure":
            code = exc.code or {400: "invalidPayload", 401: "401", 404: "notFound", 429: "tooManyRequests"}.get(
                exc.status, "internalServerError" if exc.status >= 500 else str(exc.status))
            body = {"error": {"code": code, "message": exc.message, "target": exc.param, "details": [],
                              "innererror": None}}
        else:
            body = {"error": {"code": exc.code or ("InternalServerError" if exc.status >= 500 else "BadRequest"),
                              "message": exc.message}}
        return _Response(exc.status, body)

    def _dispatch(self, req: _Request) -> _Response:
        if req.surface == "arm":
            self._auth_arm(req)
            return self._arm(req)
        if req.surface == "azure":
            self._auth_azure(req)
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", req.api_version):
                raise _ApiError(404, "Resource not found")
            path = req.path[len("/openai"):]
        else:
            self._auth_openai(req)
            if not req.path.startswith("/v1/"):
                raise _ApiError(404, f"Invalid URL ({req.method} {req.path})")
            path = req.path[len("/v1"):]
        for method, pattern, handler in _ROUTES:
            if (handler in _OPENAI_ONLY and req.surface != "openai") or (
                    handler in _AZURE_ONLY and req.surface != "azure"):
                continue
            match = re.fullmatch(pattern, path)
            if match and method == req.method:
                return handler(self, req, *(unquote(g) for g in match.groups()))
        if req.surface == "azure":
            raise _ApiError(404, "Resource not found")
        raise _ApiError(404, f"Invalid URL ({req.method} {req.path})")

    # -- auth

    def _auth_openai(self, req: _Request) -> None:
        if req.headers.get("authorization") != f"Bearer {self.api_key}":
            raise _ApiError(401, "Incorrect API key provided. You can find your API key at "
                                 "https://platform.openai.com/account/api-keys.", code="invalid_api_key")

    def _auth_azure(self, req: _Request) -> None:
        if req.headers.get("api-key") == self.azure_api_key:
            return
        if req.headers.get("authorization") == f"Bearer {self.azure_ad_token}":
            return
        raise _ApiError(401, "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
                             "provide a valid key for an active subscription and use a correct regional API "
                             "endpoint for your resource.", code="401")

    def _auth_arm(self, req: _Request) -> None:
        auth = req.headers.get("authorization")
        if auth is None:
            raise _ApiError(401, "Authentication failed. The 'Authorization' header is missing.",
                            code="AuthenticationFailed")
        if auth != f"Bearer {self.arm_token}":
            raise _ApiError(401, "The access token is invalid.", code="InvalidAuthenticationToken")

    # -- ids and time

    def _id(self, prefix: str, provider: str, n: int = 24) -> str:
        if provider == "azure":
            return prefix + f"{self._rng.getrandbits(128):032x}"
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        return prefix + "".join(self._rng.choice(alphabet) for _ in range(n))

    def _now(self) -> int:
        return int(time.time())  # lists are ordered by creation, not by this

    def _ok(self, req: _Request, body: Any, *, created: str | None = None) -> _Response:
        """200 on OpenAI; Azure answers creations with 201 + Location."""
        if req.surface == "azure" and created is not None:
            return _Response(201, body, {"location": f"{self.url}/openai/{created}?api-version={req.api_version}"})
        return _Response(200, body)

    # ---------------------------------------------------------------- files

    def _file_upload(self, req: _Request) -> _Response:
        parts = _parse_multipart(req.headers.get("content-type", ""), req.body)
        if "file" not in parts:
            raise _ApiError(400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        if "purpose" not in parts:
            raise _ApiError(400, "Missing required parameter: 'purpose'.", param="purpose",
                            code="missing_required_parameter")
        filename, data = parts["file"]
        purpose = parts["purpose"][1].decode("utf-8", "replace")
        if purpose not in _FILE_PURPOSES:
            raise _ApiError(400, f"'{purpose}' is not one of {sorted(_FILE_PURPOSES)} - 'purpose'",
                            param="purpose", code="invalid_value")
        filename = filename or "upload"
        if purpose == "fine-tune" and not filename.endswith(".jsonl"):
            raise _ApiError(400, "Invalid file format for Fine-Tuning API. Must be .jsonl", param="file",
                            code="invalid_file_format")
        if not data:
            raise _ApiError(400, "File is empty.", param="file", code="invalid_file_format")
        obj = self._store_file(req.surface, filename, purpose, data)
        return self._ok(req, obj, created=f"files/{obj['id']}")

    def _store_file(self, provider: str, filename: str, purpose: str, data: bytes, *, processed: bool = False) -> dict:
        file_id = self._id("file-", provider, 22)
        obj: dict[str, Any] = {"id": file_id, "object": "file", "bytes": len(data), "created_at": self._now(),
                               "filename": filename, "purpose": purpose}
        if provider == "azure":
            obj["status"] = "processed" if processed else "pending"
        else:
            obj.update(status="processed", expires_at=None, status_details=None)
        self.files[file_id] = obj
        self._content[file_id] = data
        self._file_provider[file_id] = provider
        return obj

    def _get_file(self, req: _Request, file_id: str) -> dict[str, Any]:
        if self._file_provider.get(file_id) != req.surface:
            if req.surface == "azure":
                raise _ApiError(404, f"File with id '{file_id}' not found.", code="notFound")
            raise _ApiError(404, f"No such File object: {file_id}", param="id")
        return self.files[file_id]

    def _file_retrieve(self, req: _Request, file_id: str) -> _Response:
        obj = self._get_file(req, file_id)
        if req.surface == "azure" and obj["status"] == "pending":
            self._file_polls[file_id] = self._file_polls.get(file_id, 0) + 1
            if self._file_polls[file_id] >= max(1, self.steps_per_state):
                obj["status"] = "processed"
        return _Response(200, obj)

    def _file_list(self, req: _Request) -> _Response:
        items = [f for fid, f in self.files.items() if self._file_provider[fid] == req.surface]
        purpose = req.arg("purpose")
        if purpose:
            items = [f for f in items if f["purpose"] == purpose]
        if req.arg("order", "desc") == "desc":
            items.reverse()
        return _Response(200, _page(items, req, default_limit=10000, max_limit=10000))

    def _file_delete(self, req: _Request, file_id: str) -> _Response:
        self._get_file(req, file_id)
        del self.files[file_id], self._content[file_id], self._file_provider[file_id]
        return _Response(200, {"id": file_id, "object": "file", "deleted": True})

    def _file_content(self, req: _Request, file_id: str) -> _Response:
        obj = self._get_file(req, file_id)
        if req.surface == "openai" and obj["purpose"] == "fine-tune":
            raise _ApiError(400, "Not allowed to download files of purpose: fine-tune")
        return _Response(200, self._content[file_id], {"content-type": "application/octet-stream"})

    # ---------------------------------------------------------------- job create

    def _job_create(self, req: _Request) -> _Response:
        body = req.json()
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        provider = req.surface
        preview = "preview" in req.api_version
        allowed = {"model", "training_file", "validation_file", "hyperparameters", "suffix", "seed"}
        if provider == "openai" or preview:
            allowed |= {"method", "metadata", "integrations"}
        for key in body:
            if key not in allowed:
                hint = " (not in this api-version; use a preview api-version)" if provider == "azure" else ""
                raise _ApiError(400, f"Unrecognized request argument supplied: {key}{hint}", param=key,
                                code="unknown_parameter" if provider == "openai" else None)
        for key in ("model", "training_file"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise _ApiError(400, f"Missing required parameter: '{key}'.", param=key,
                                code="missing_required_parameter" if provider == "openai" else None)
        model, base = self._resolve_base_model(provider, body["model"])
        method_type, hp = _check_method(body, provider)
        supported = (OPENAI_FINE_TUNABLE if provider == "openai" else AZURE_FINE_TUNABLE)[base]
        if method_type not in supported:
            raise _ApiError(400, f"Model {body['model']} does not support the {method_type} method.",
                            param="method", code="invalid_value" if provider == "openai" else None)
        self._check_training_file(req, body["training_file"], "training_file")
        if body.get("validation_file") is not None:
            self._check_training_file(req, body["validation_file"], "validation_file")
        suffix = _check_suffix(body.get("suffix"), provider)
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 2147483647):
            raise _ApiError(400, f"Invalid seed: {seed!r}. Must be an integer between 0 and 2147483647.",
                            param="seed", code="invalid_value" if provider == "openai" else None)
        metadata = _check_metadata(body.get("metadata"))
        integrations = _check_integrations(body.get("integrations"))

        job_id = self._id("ftjob-", provider)
        if seed is None:
            seed = self._rng.randrange(2**31)
        outcome = self._outcomes.pop(0) if self._outcomes else JobOutcome()
        job: dict[str, Any]
        if provider == "openai":
            job = {
                "id": job_id, "object": "fine_tuning.job", "created_at": self._now(), "error": None,
                "fine_tuned_model": None, "finished_at": None, "hyperparameters": _top_level_hp(hp),
                "model": model, "organization_id": ORGANIZATION_ID, "result_files": [], "seed": seed,
                "status": _OPENAI_STATES[0], "trained_tokens": None, "training_file": body["training_file"],
                "validation_file": body.get("validation_file"), "estimated_finish": None,
                "integrations": integrations, "metadata": metadata,
                "method": {"type": method_type, method_type: {"hyperparameters": dict(hp)}},
                "user_provided_suffix": suffix,
            }
        else:
            job = {
                "id": job_id, "object": "fine_tuning.job", "created_at": self._now(), "finished_at": None,
                "status": _AZURE_STATES[0], "model": model, "fine_tuned_model": None,
                "training_file": body["training_file"], "validation_file": body.get("validation_file"),
                "hyperparameters": _azure_pending_hp(hp), "result_files": [], "trained_tokens": None,
                "suffix": suffix, "seed": seed, "estimated_finish": None, "error": None,
            }
            if preview:
                job["method"] = {"type": method_type, method_type: {"hyperparameters": dict(hp)}}
                job["metadata"] = metadata
        sim = _JobSim(provider, job, method_type, outcome, hp)
        self._sims[job_id] = sim
        self.jobs[job_id] = job
        self._event(sim, f"Created fine-tuning job: {job_id}")
        files = f"Validating training file: {job['training_file']}"
        if job["validation_file"]:
            files += f" and validation file: {job['validation_file']}"
        self._event(sim, files)
        return self._ok(req, job, created=f"fine_tuning/jobs/{job_id}")

    def _resolve_base_model(self, provider: str, name: str) -> tuple[str, str]:
        """(model as the job reports it, fine-tunable snapshot it descends from)."""
        catalog = OPENAI_FINE_TUNABLE if provider == "openai" else AZURE_FINE_TUNABLE
        if provider == "openai" and name in _OPENAI_ALIASES:
            return _OPENAI_ALIASES[name], _OPENAI_ALIASES[name]
        if name in catalog:
            return name, name
        sim = self._models.get(name)
        if sim is not None and sim.provider == provider:  # continued fine-tuning
            return name, self._root_base(sim)
        hint = ""
        if provider == "azure" and "." in name and name.replace("3.5", "35") in catalog:
            hint = f" Azure model names have no dots: did you mean '{name.replace('3.5', '35')}'?"
        if provider == "openai":
            raise _ApiError(400, f"Model {name} is not available for fine-tuning or does not exist.",
                            param="model", code="model_not_available")
        raise _ApiError(400, f"The specified base model '{name}' does not support fine-tuning.{hint}",
                        param="model", code="invalidPayload")

    def _root_base(self, sim: _JobSim) -> str:
        model = sim.job["model"]
        parent = self._models.get(model)
        return self._root_base(parent) if parent is not None else model

    def _check_training_file(self, req: _Request, file_id: Any, param: str) -> None:
        if not isinstance(file_id, str) or self._file_provider.get(file_id) != req.surface:
            raise _ApiError(400, f"invalid {param}: {file_id}", param=param,
                            code="invalid_file_id" if req.surface == "openai" else "invalidPayload")
        obj = self.files[file_id]
        if obj["purpose"] != "fine-tune":
            raise _ApiError(400, f"File {file_id} has purpose '{obj['purpose']}', expected 'fine-tune'.",
                            param=param, code="invalid_file_purpose" if req.surface == "openai" else "invalidPayload")
        if obj["status"] != "processed":
            raise _ApiError(400, f"The file {file_id} is not ready for fine-tuning (status: {obj['status']}). "
                                 "Wait until it is processed.", param=param,
                            code="file_not_ready" if req.surface == "openai" else "invalidPayload")

    # ---------------------------------------------------------------- job read / cancel

    def _get_sim(self, req: _Request, job_id: str) -> _JobSim:
        sim = self._sims.get(job_id)
        if sim is None or sim.provider != req.surface:
            if req.surface == "azure":
                raise _ApiError(404, f"The specified fine-tuning job '{job_id}' could not be found.", code="notFound")
            raise _ApiError(404, f"Could not find fine-tuning job: {job_id}", param="fine_tuning_job_id",
                            code="fine_tuning_job_not_found")
        return sim

    def _job_retrieve(self, req: _Request, job_id: str) -> _Response:
        sim = self._get_sim(req, job_id)
        self._poll_job(sim)
        return _Response(200, sim.job)

    def _job_list(self, req: _Request) -> _Response:
        wanted: dict[str, str] = {}
        null_metadata = False
        for key, value in req.query:
            m = re.fullmatch(r"metadata\[(.*)\]", key)
            if m:
                wanted[m.group(1)] = value
            elif key == "metadata" and value == "null":
                null_metadata = True
        items = []
        for sim in reversed(list(self._sims.values())):  # newest first
            if sim.provider != req.surface:
                continue
            meta = sim.job.get("metadata")
            if null_metadata and meta:
                continue
            if wanted and not (meta and all(meta.get(k) == v for k, v in wanted.items())):
                continue
            items.append(sim.job)
        return _Response(200, _page(items, req, default_limit=20, max_limit=100))

    def _job_cancel(self, req: _Request, job_id: str) -> _Response:
        sim = self._get_sim(req, job_id)
        if sim.job["status"] in _TERMINAL:
            raise _ApiError(400, f"Job has already completed: {job_id}",
                            code="invalid_job_state" if req.surface == "openai" else "invalidPayload")
        self._finish(sim, "cancelled")
        return _Response(200, sim.job)

    def _job_delete(self, req: _Request, job_id: str) -> _Response:  # Azure only
        sim = self._get_sim(req, job_id)
        if sim.job["status"] not in _TERMINAL:
            raise _ApiError(400, f"Job {job_id} is still running; cancel it first.")
        del self._sims[job_id], self.jobs[job_id]
        return _Response(204)

    def _job_events(self, req: _Request, job_id: str) -> _Response:
        sim = self._get_sim(req, job_id)
        return _Response(200, _page(list(reversed(sim.events)), req, default_limit=20, max_limit=100))

    def _job_checkpoints(self, req: _Request, job_id: str) -> _Response:
        sim = self._get_sim(req, job_id)
        return _Response(200, _page(list(reversed(sim.checkpoints)), req, default_limit=10, max_limit=100))

    # ---------------------------------------------------------------- job progression

    def _states(self, sim: _JobSim) -> tuple[str, ...]:
        return _OPENAI_STATES if sim.provider == "openai" else _AZURE_STATES

    def _poll_job(self, sim: _JobSim) -> None:
        if sim.job["status"] in _TERMINAL:
            return
        if self.steps_per_state == 0:
            while sim.job["status"] not in _TERMINAL:
                self._step(sim)
            return
        sim.polls_in_state += 1
        if sim.job["status"] == "running":
            share = math.ceil(len(sim.steps) * sim.polls_in_state / self.steps_per_state)
            self._emit_metrics(sim, min(share, len(sim.steps)))
        if sim.polls_in_state >= self.steps_per_state:
            sim.polls_in_state = 0
            self._step(sim)

    def _step(self, sim: _JobSim) -> None:
        states = self._states(sim)
        index = sim.state_index
        if index == 0:
            if not self._validate_data(sim):
                return
        if index + 1 < len(states):
            sim.state_index = index + 1
            sim.job["status"] = states[index + 1]
            if states[index + 1] == "running":
                sim.job["estimated_finish"] = self._now() + 600
                self._event(sim, "Fine-tuning job started")
            return
        self._emit_metrics(sim, len(sim.steps))
        if sim.outcome.status == "succeeded":
            self._succeed(sim)
        elif sim.outcome.status == "failed":
            self._fail(sim, sim.outcome.code, sim.outcome.message, None)
        else:
            self._finish(sim, "cancelled")

    def _validate_data(self, sim: _JobSim) -> bool:
        job = sim.job
        azure = sim.provider == "azure"
        for param in ("training_file", "validation_file"):
            file_id = job.get(param)
            if not file_id:
                continue
            content = self._content.get(file_id)
            try:
                if content is None:
                    raise _DataError(f"file {file_id} was deleted")
                pairs, examples, tokens = parse_training_data(
                    content, sim.method, min_examples=10 if param == "training_file" else 1)
            except _DataError as exc:
                code = "jsonlValidationFailed" if azure else f"invalid_{param}"
                what = "training" if param == "training_file" else "validation"
                self._fail(sim, code, f"The job failed due to an invalid {what} file. {exc}", param)
                return False
            if param == "training_file":
                sim.pairs, sim.examples, sim.tokens = pairs, examples, tokens
        self._resolve_hyperparameters(sim)
        self._event(sim, "Files validated, moving job to queued state")
        return True

    def _resolve_hyperparameters(self, sim: _JobSim) -> None:
        hp = sim.hp
        n = max(sim.examples, 1)
        if hp.get("n_epochs", "auto") == "auto":
            # The cookbook's rule: 3 epochs, moved within 1..25 so n * epochs lands in 100..25000.
            epochs = 3
            if n * epochs < 100:
                epochs = min(25, math.ceil(100 / n))
            elif n * epochs > 25000:
                epochs = max(1, 25000 // n)
            hp["n_epochs"] = epochs
        if hp.get("batch_size", "auto") == "auto":
            hp["batch_size"] = max(1, min(256, round(n * 0.002)))
        if hp.get("learning_rate_multiplier", "auto") == "auto":
            hp["learning_rate_multiplier"] = 1.8
        if sim.method == "dpo" and hp.get("beta", "auto") == "auto":
            hp["beta"] = 0.1
        if "method" in sim.job:
            sim.job["method"][sim.method]["hyperparameters"] = dict(hp)
        sim.job["hyperparameters"] = _top_level_hp(hp)
        steps_per_epoch = math.ceil(n / hp["batch_size"])
        total = steps_per_epoch * hp["n_epochs"]
        valid = sim.job.get("validation_file") is not None
        seed_shift = (sim.job["seed"] % 97) / 970
        for step in range(1, total + 1):
            progress = step / total
            loss = 0.25 + 1.9 * math.exp(-3 * progress) + 0.04 * math.sin(step + seed_shift)
            metrics = {"step": step, "train_loss": round(loss, 4),
                       "train_mean_token_accuracy": round(min(0.99, 0.45 + 0.5 * (1 - math.exp(-3 * progress))), 4)}
            if valid:
                metrics["valid_loss"] = round(loss + 0.08, 4)
                metrics["valid_mean_token_accuracy"] = round(metrics["train_mean_token_accuracy"] - 0.03, 4)
            sim.steps.append(metrics)
        sim.checkpoint_steps = [steps_per_epoch * e for e in range(max(1, hp["n_epochs"] - 2), hp["n_epochs"] + 1)]

    def _emit_metrics(self, sim: _JobSim, upto: int) -> None:
        total = len(sim.steps)
        stride = max(1, math.ceil(total / _MAX_METRIC_EVENTS))
        while sim.emitted < upto:
            metrics = sim.steps[sim.emitted]
            sim.emitted += 1
            step = int(metrics["step"])
            if step % stride and step != total:
                continue
            data = {**metrics, "total_steps": total}
            self._event(sim, f"Step {step}/{total}: training loss={metrics['train_loss']:.2f}",
                        type="metrics", data=data)

    def _succeed(self, sim: _JobSim) -> None:
        job = sim.job
        short = job["id"].rsplit("-", 1)[-1][:8]
        suffix = job.get("user_provided_suffix") if sim.provider == "openai" else job.get("suffix")
        root = self._root_base(sim)
        if sim.provider == "openai":
            model_id = f"ft:{root}:{_ORG_SLUG}:{suffix or ''}:{short}"
        else:
            model_id = f"{root}.ft-{self._rng.getrandbits(128):032x}" + (f"-{suffix}" if suffix else "")
        epochs = job["hyperparameters"]["n_epochs"]
        for step in sim.checkpoint_steps:
            metrics = dict(sim.steps[step - 1])
            if job.get("validation_file"):
                metrics["full_valid_loss"] = metrics["valid_loss"]
                metrics["full_valid_mean_token_accuracy"] = metrics["valid_mean_token_accuracy"]
            ckpt_model = f"{model_id}:ckpt-step-{step}"
            sim.checkpoints.append({
                "id": self._id("ftckpt_" if sim.provider == "openai" else "ftchkpt-", sim.provider),
                "object": "fine_tuning.job.checkpoint", "created_at": self._now(),
                "fine_tuned_model_checkpoint": ckpt_model, "fine_tuning_job_id": job["id"],
                "step_number": step, "metrics": metrics,
            })
            self._models[ckpt_model] = sim
            self._event(sim, f"Checkpoint created at step {step}")
        self._models[model_id] = sim
        csv = _metrics_csv(sim.steps, sim.provider)
        result = self._store_file(sim.provider, "step_metrics.csv" if sim.provider == "openai" else "results.csv",
                                  "fine-tune-results", csv, processed=True)
        job.update(fine_tuned_model=model_id, result_files=[result["id"]], trained_tokens=sim.tokens * epochs)
        self._event(sim, f"New fine-tuned model created: {model_id}")
        self._event(sim, "The job has successfully completed")
        self._finish(sim, "succeeded")

    def _fail(self, sim: _JobSim, code: str, message: str, param: str | None) -> None:
        sim.job["error"] = {"code": code, "message": message, "param": param}
        self._event(sim, message, level="error")
        self._finish(sim, "failed")

    def _finish(self, sim: _JobSim, status: str) -> None:
        if status == "cancelled":
            self._event(sim, "Fine-tuning job cancelled")
        sim.job.update(status=status, finished_at=self._now(), estimated_finish=None)

    def _event(self, sim: _JobSim, message: str, *, level: str = "info", type: str = "message",
               data: dict[str, Any] | None = None) -> None:
        if sim.provider == "azure" and level == "warn":
            level = "warning"
        sim.events.append({
            "id": self._id("ftevent-", sim.provider), "object": "fine_tuning.job.event",
            "created_at": self._now(), "level": level, "message": message, "type": type, "data": data or {},
        })

    # ---------------------------------------------------------------- chat completions

    def _chat(self, req: _Request, deployment: str | None = None) -> _Response:
        body = req.json()
        if not isinstance(body, dict):
            raise _ApiError(400, "The request body must be a JSON object.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") in _ROLES for m in messages):
            raise _ApiError(400, "'messages' must be a non-empty list of messages with a valid role.",
                            param="messages", code="invalid_value" if req.surface == "openai" else None)
        if body.get("stream"):
            raise _ApiError(400, "stream=true is not supported by this test double.", param="stream")
        if deployment is not None:
            dep = self.deployments.get(deployment)
            if dep is None or dep["properties"]["provisioningState"] != "Succeeded":
                raise _ApiError(404, "The API deployment for this resource does not exist. If you created the "
                                     "deployment within the last 5 minutes, please wait a moment and try again.",
                                code="DeploymentNotFound")
            model = dep["properties"]["model"]["name"]
            sim = self._models.get(model)
        else:
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise _ApiError(400, "Missing required parameter: 'model'.", param="model",
                                code="missing_required_parameter")
            sim = self._models.get(model)
            if sim is not None and sim.provider != "openai":
                sim = None
            known_base = model in OPENAI_FINE_TUNABLE or model in _OPENAI_ALIASES or model.startswith(JUDGE_MODEL_PREFIX)
            if sim is None and not known_base:
                raise _ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                                code="model_not_found")
        if isinstance(model, str) and model.startswith(JUDGE_MODEL_PREFIX):
            answer = judge_reply(messages)
        else:
            answer = self._answer(messages, sim)
        n = body.get("n") or 1
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and count_tokens(answer) > limit:
            answer, finish = _truncate_tokens(answer, limit), "length"
        prompt_tokens = sum(count_tokens(_content_text(m.get("content"))) for m in messages)
        completion_tokens = count_tokens(answer)
        choice = {"index": 0, "message": {"role": "assistant", "content": answer, "refusal": None,
                                          "annotations": []},
                  "logprobs": None, "finish_reason": finish}
        choices = [{**choice, "index": i} for i in range(n)]
        if req.surface == "azure":
            filters = {"hate": {"filtered": False, "severity": "safe"}}
            for c in choices:
                c["content_filter_results"] = filters
        result = {
            "id": self._id("chatcmpl-", "openai", 29), "object": "chat.completion", "created": self._now(),
            "model": model, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens * n,
                      "total_tokens": prompt_tokens + completion_tokens * n,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 0,
                                                    "rejected_prediction_tokens": 0}},
            "service_tier": "default", "system_fingerprint": "fp_ftpipe_fake",
        }
        if req.surface == "azure":
            result["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": {}}]
        return _Response(200, result)

    def _answer(self, messages: list[dict[str, Any]], sim: _JobSim | None) -> str:
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if not users:
            return BASE_MODEL_ANSWER
        query = _content_text(messages[users[-1]].get("content"))
        if sim is not None:
            return _nearest_answer(query, sim.pairs) or BASE_MODEL_ANSWER
        shots = [(_content_text(messages[i].get("content")), _content_text(messages[i + 1].get("content")))
                 for i in users[:-1] if i + 1 < len(messages) and messages[i + 1].get("role") == "assistant"]
        return _nearest_answer(query, shots) or BASE_MODEL_ANSWER

    def _models_list(self, req: _Request) -> _Response:
        created = 1700000000
        data = [{"id": m, "object": "model", "created": created, "owned_by": "system"}
                for m in [*OPENAI_FINE_TUNABLE, *_OPENAI_ALIASES]]
        data += [{"id": m, "object": "model", "created": created, "owned_by": ORGANIZATION_ID}
                 for m, s in self._models.items() if s.provider == "openai"]
        return _Response(200, {"object": "list", "data": data})

    def _model_retrieve(self, req: _Request, model: str) -> _Response:
        for item in self._models_list(req).body["data"]:
            if item["id"] == model:
                return _Response(200, item)
        raise _ApiError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")

    def _azure_chat(self, req: _Request, deployment: str) -> _Response:
        return self._chat(req, deployment)

    # ---------------------------------------------------------------- Azure Resource Manager

    def _arm(self, req: _Request) -> _Response:
        match = _ARM_PATH.fullmatch(req.path)
        if match is None:
            raise _ApiError(404, f"The resource path '{req.path}' was not found.", code="NotFound")
        if not req.api_version:
            raise _ApiError(400, "The api-version query parameter (?api-version=) is required for all requests.",
                            code="MissingApiVersionParameter")
        name = match.group("name")
        if name is None:
            if req.method != "GET":
                raise _ApiError(405, "The requested method is not allowed.", code="MethodNotAllowed")
            return _Response(200, {"value": list(self.deployments.values())})
        if req.method == "PUT":
            return self._arm_put(req, match, name)
        if req.method == "GET":
            dep = self.deployments.get(name)
            if dep is None:
                raise _ApiError(404, f"Deployment '{name}' was not found.", code="DeploymentNotFound")
            self._arm_progress(name, dep)
            return _Response(200, dep)
        if req.method == "DELETE":
            if self.deployments.pop(name, None) is None:
                return _Response(204)
            return _Response(200)
        raise _ApiError(405, "The requested method is not allowed.", code="MethodNotAllowed")

    def _arm_put(self, req: _Request, match: re.Match[str], name: str) -> _Response:
        body = req.json()
        sku = body.get("sku") if isinstance(body, dict) else None
        props = body.get("properties") if isinstance(body, dict) else None
        model = props.get("model") if isinstance(props, dict) else None
        if not isinstance(sku, dict) or not isinstance(sku.get("name"), str):
            raise _ApiError(400, "The 'sku' with a 'name' is required.", code="InvalidResourceProperties")
        if not isinstance(model, dict) or model.get("format") != "OpenAI" or not isinstance(model.get("name"), str):
            raise _ApiError(400, "properties.model needs format 'OpenAI' and a name.",
                            code="InvalidResourceProperties")
        existed = name in self.deployments
        dep = self._deployment_object(match.group("sub"), match.group("rg"), match.group("account"), name, sku, model)
        self.deployments[name] = dep
        self._deploy_polls[name] = 0
        return _Response(200 if existed else 201, dep)

    def _deployment_object(self, sub: str, rg: str, account: str, name: str, sku: dict, model: dict) -> dict:
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return {
            "id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.CognitiveServices/"
                  f"accounts/{account}/deployments/{name}",
            "name": name, "type": "Microsoft.CognitiveServices/accounts/deployments",
            "sku": dict(sku),
            "properties": {"model": dict(model), "provisioningState": "Accepted",
                           "capabilities": {"chatCompletion": "true"}, "rateLimits": []},
            "systemData": {"createdAt": stamp, "createdBy": "ftpipe-test", "createdByType": "User",
                           "lastModifiedAt": stamp, "lastModifiedBy": "ftpipe-test", "lastModifiedByType": "User"},
            "etag": f'"{self._rng.getrandbits(64):016x}"',
        }

    def _arm_progress(self, name: str, dep: dict[str, Any]) -> None:
        props = dep["properties"]
        if props["provisioningState"] in ("Succeeded", "Failed"):
            return
        self._deploy_polls[name] = self._deploy_polls.get(name, 0) + 1
        if self.steps_per_state and self._deploy_polls[name] < self.steps_per_state:
            return
        self._deploy_polls[name] = 0
        if props["provisioningState"] == "Accepted" and self.steps_per_state:
            props["provisioningState"] = "Creating"
            return
        model = props["model"]["name"]
        sim = self._models.get(model)
        deployable = (sim is not None and sim.provider == "azure") or model in _AZURE_DEPLOYABLE_BASE \
            or model in AZURE_FINE_TUNABLE
        props["provisioningState"] = "Succeeded" if deployable else "Failed"


# ---------------------------------------------------------------- request validation helpers


def _check_method(body: dict[str, Any], provider: str) -> tuple[str, dict[str, Any]]:
    """(method type, its hyperparameters with "auto" for unset ones)."""
    code = "invalid_value" if provider == "openai" else None
    method = body.get("method")
    top = body.get("hyperparameters")
    if top is not None and not isinstance(top, dict):
        raise _ApiError(400, "'hyperparameters' must be an object.", param="hyperparameters", code=code)
    if method is None:
        method_type, hp, where = "supervised", dict(top or {}), "hyperparameters"
    else:
        if not isinstance(method, dict) or method.get("type") not in ("supervised", "dpo", "reinforcement"):
            raise _ApiError(400, "method.type must be one of 'supervised', 'dpo', 'reinforcement'.",
                            param="method.type", code=code)
        method_type = method["type"]
        extra = set(method) - {"type", method_type}
        if extra:
            raise _ApiError(400, f"method.{sorted(extra)[0]} does not match method.type '{method_type}'.",
                            param=f"method.{sorted(extra)[0]}", code=code)
        if method_type == "reinforcement":
            raise _ApiError(400, f"Model {body.get('model')} does not support reinforcement fine-tuning.",
                            param="method.type", code=code)
        config = method.get(method_type) or {}
        if not isinstance(config, dict) or set(config) - {"hyperparameters"}:
            raise _ApiError(400, f"method.{method_type} may only hold 'hyperparameters'.",
                            param=f"method.{method_type}", code=code)
        hp = dict(config.get("hyperparameters") or {})
        where = f"method.{method_type}.hyperparameters"
        if top and hp:
            raise _ApiError(400, "Specify hyperparameters either in method or at the top level, not both.",
                            param="hyperparameters", code=code)
        hp = hp or dict(top or {})
    allowed = {"n_epochs", "batch_size", "learning_rate_multiplier"} | ({"beta"} if method_type == "dpo" else set())
    for key in hp:
        if key not in allowed:
            raise _ApiError(400, f"Unknown hyperparameter '{key}' for the {method_type} method.",
                            param=f"{where}.{key}", code=code)
    ranges = {"n_epochs": (1, 50), "batch_size": (1, 256)}
    for key, value in hp.items():
        if value == "auto":
            continue
        bad = isinstance(value, bool) or not isinstance(value, (int, float))
        if key in ranges:
            lo, hi = ranges[key]
            bad = bad or not isinstance(value, int) or not lo <= value <= hi
            limits = f"an integer between {lo} and {hi}"
        elif key == "beta":
            bad = bad or not 0 < value <= 2
            limits = "a number in (0, 2]"
        else:
            bad = bad or not value > 0
            limits = "a number greater than 0"
        if bad:
            raise _ApiError(400, f"Invalid {key}: {value!r}. Must be {limits} or 'auto'.",
                            param=f"{where}.{key}", code=code)
    for key in allowed:
        hp.setdefault(key, "auto")
    return method_type, hp


def _check_suffix(suffix: Any, provider: str) -> str | None:
    if suffix is None:
        return None
    if provider == "openai":
        if not isinstance(suffix, str) or not 1 <= len(suffix) <= 64:
            raise _ApiError(400, "suffix must be a string of 1 to 64 characters.", param="suffix",
                            code="invalid_value")
    elif not isinstance(suffix, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", suffix):
        raise _ApiError(400, "The suffix may hold at most 40 characters from [A-Za-z0-9-_].", param="suffix")
    return suffix


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > 16:
        raise _ApiError(400, "metadata must be an object with at most 16 pairs.", param="metadata",
                        code="invalid_value")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise _ApiError(400, f"Invalid metadata entry {key!r}: keys hold at most 64 characters and values "
                                 "are strings of at most 512 characters.", param=f"metadata.{key}",
                            code="invalid_value")
    return dict(metadata)


def _check_integrations(integrations: Any) -> list[dict[str, Any]]:
    if integrations is None:
        return []
    if not isinstance(integrations, list) or not all(
            isinstance(i, dict) and i.get("type") == "wandb" and isinstance(i.get("wandb"), dict)
            and isinstance(i["wandb"].get("project"), str) for i in integrations):
        raise _ApiError(400, "integrations must be a list of {type: 'wandb', wandb: {project, ...}}.",
                        param="integrations", code="invalid_value")
    return integrations


def _top_level_hp(hp: dict[str, Any]) -> dict[str, Any]:
    return {k: hp.get(k, "auto") for k in ("batch_size", "learning_rate_multiplier", "n_epochs")}


def _azure_pending_hp(hp: dict[str, Any]) -> dict[str, Any]:
    # Azure reports hyperparameters it has not chosen yet as -1 (learning rate: 1).
    out = _top_level_hp(hp)
    for key, unset in (("n_epochs", -1), ("batch_size", -1), ("learning_rate_multiplier", 1)):
        if out[key] == "auto":
            out[key] = unset
    return out


def _page(items: list[dict[str, Any]], req: _Request, *, default_limit: int, max_limit: int) -> dict[str, Any]:
    """A cursor page: items after the one whose id is ``after``, ``limit`` of them."""
    raw = req.arg("limit")
    try:
        limit = default_limit if raw is None else int(raw)
    except ValueError:
        raise _ApiError(400, f"Invalid limit: {raw!r}.", param="limit", code="invalid_value") from None
    if limit < 1:
        raise _ApiError(400, f"Invalid limit: {limit}. Must be at least 1.", param="limit", code="invalid_value")
    limit = min(limit, max_limit)
    after = req.arg("after")
    start = 0
    if after:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    data = items[start:start + limit]
    return {"object": "list", "data": data, "has_more": start + limit < len(items)}


def _metrics_csv(steps: list[dict[str, float]], provider: str) -> bytes:
    cols = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    if provider == "azure":
        cols = ["step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    lines = [",".join(cols)]
    for m in steps:
        acc = m["train_mean_token_accuracy"]
        row = [m["step"], m["train_loss"], acc, m.get("valid_loss", ""), m.get("valid_mean_token_accuracy", "")]
        lines.append(",".join(str(v) for v in row))
    return ("\n".join(lines) + "\n").encode()


def _parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    if not content_type.lower().startswith("multipart/form-data"):
        raise _ApiError(400, "Expected a multipart/form-data body.", param="file", code="invalid_request")
    raw = b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    if not message.is_multipart():
        raise _ApiError(400, "Could not parse the multipart body.", param="file", code="invalid_request")
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            parts[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return parts


_Handler_t = Callable[..., _Response]
_ROUTES: list[tuple[str, str, _Handler_t]] = [
    ("POST", r"/files", OpenAIServer._file_upload),
    ("GET", r"/files", OpenAIServer._file_list),
    ("GET", r"/files/([^/]+)", OpenAIServer._file_retrieve),
    ("DELETE", r"/files/([^/]+)", OpenAIServer._file_delete),
    ("GET", r"/files/([^/]+)/content", OpenAIServer._file_content),
    ("POST", r"/fine_tuning/jobs", OpenAIServer._job_create),
    ("GET", r"/fine_tuning/jobs", OpenAIServer._job_list),
    ("GET", r"/fine_tuning/jobs/([^/]+)", OpenAIServer._job_retrieve),
    ("POST", r"/fine_tuning/jobs/([^/]+)/cancel", OpenAIServer._job_cancel),
    ("GET", r"/fine_tuning/jobs/([^/]+)/events", OpenAIServer._job_events),
    ("GET", r"/fine_tuning/jobs/([^/]+)/checkpoints", OpenAIServer._job_checkpoints),
    ("POST", r"/chat/completions", OpenAIServer._chat),
    ("GET", r"/models", OpenAIServer._models_list),
    ("GET", r"/models/([^/]+)", OpenAIServer._model_retrieve),
    ("DELETE", r"/fine_tuning/jobs/([^/]+)", OpenAIServer._job_delete),
    ("POST", r"/deployments/([^/]+)/chat/completions", OpenAIServer._azure_chat),
]
_OPENAI_ONLY = {OpenAIServer._chat, OpenAIServer._models_list, OpenAIServer._model_retrieve}
_AZURE_ONLY = {OpenAIServer._job_delete, OpenAIServer._azure_chat}


# ---------------------------------------------------------------- HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: OpenAIServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Without this, a response written in two parts waits ~40 ms on delayed ACKs.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.owner._lock:
            self.server.owner._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.owner._lock:
                self.server.owner._conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _serve(self) -> None:
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        resp = self.server.owner._handle(self.command, self.path, headers, body)
        if resp is None:  # "drop": close without a status line
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if isinstance(resp.body, (dict, list)):
            payload = json.dumps(resp.body).encode()
            resp.headers.setdefault("content-type", "application/json")
        else:
            payload = resp.body or b""
        self.send_response(resp.status)
        request_id = f"req_{random.getrandbits(128):032x}"
        self.send_header("x-request-id", request_id)
        if self.path.startswith("/openai/"):
            self.send_header("apim-request-id", request_id)
        for key, value in resp.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self._headers_buffer.append(b"\r\n" + payload)  # headers and body in one write
        self.flush_headers()

    def _read_body(self) -> bytes:
        return read_body(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


# ---------------------------------------------------------------- fixtures and clients


@pytest.fixture(name="openai_server")
def openai_server_fixture() -> Iterator[OpenAIServer]:
    """The ``openai_server`` fixture: a started server, stopped after the test. Register it
    with ``from tests.fakes.openai_server import openai_server_fixture  # noqa: F401``."""
    with OpenAIServer() as server:
        yield server


def openai_client(server: OpenAIServer, *, api_key: str | None = None, max_retries: int = 2,
                  timeout: float = 10.0) -> OpenAI:
    """The official client, validating every response against its own types."""
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=api_key or server.api_key, max_retries=max_retries,
                  timeout=timeout, _strict_response_validation=True)


def azure_client(server: OpenAIServer, *, api_version: str = "2024-10-21", api_key: str | None = None,
                 azure_ad_token: str | None = None, max_retries: int = 2, timeout: float = 10.0) -> AzureOpenAI:
    """The official Azure client. Not strict: its job type lists only OpenAI's states."""
    from openai import AzureOpenAI

    if azure_ad_token is not None:
        return AzureOpenAI(azure_endpoint=server.url, api_version=api_version, azure_ad_token=azure_ad_token,
                           max_retries=max_retries, timeout=timeout)
    return AzureOpenAI(azure_endpoint=server.url, api_version=api_version,
                       api_key=api_key or server.azure_api_key, max_retries=max_retries, timeout=timeout)


def arm_deployment_url(server: OpenAIServer, name: str, *, subscription: str = "sub-123",
                       resource_group: str = "rg-ftpipe", account: str = "aoai-ftpipe",
                       api_version: str = "2024-10-01") -> str:
    """The ARM URL of one deployment, with the server standing in for management.azure.com."""
    return (f"{server.url}/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
            f"Microsoft.CognitiveServices/accounts/{account}/deployments/{name}?api-version={api_version}")


def arm_headers(server: OpenAIServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.arm_token}", "Content-Type": "application/json"}
