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

Where things live: this module holds the server (state, lifecycle, test controls, routing,
auth), the route table and the fixtures/clients tests import; ``openai_http`` the HTTP
plumbing (requests, responses, error shapes, faults, pages); ``openai_data`` the training
data checks and similarity; ``openai_jobsim`` the simulated job and how it moves on;
``openai_job_checks`` the job-creation request checks; ``openai_files``, ``openai_jobs``,
``openai_chat`` and ``openai_azure`` the routes of each surface (a route is a function
``(server, request, *path groups) -> Response`` listed in ``_ROUTES``).
"""

from __future__ import annotations

import random
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from tests.fakes.openai_azure import arm, azure_chat, deployment_object
from tests.fakes.openai_chat import BASE_MODEL_ANSWER, chat, model_retrieve, models_list
from tests.fakes.openai_data import count_tokens
from tests.fakes.openai_files import (
    file_content,
    file_delete,
    file_list,
    file_retrieve,
    file_upload,
)
from tests.fakes.openai_http import (
    ApiError,
    Fault,
    Handler,
    HTTPServer,
    Request,
    Response,
    error_response,
    fault_response,
)
from tests.fakes.openai_jobs import (
    job_cancel,
    job_checkpoints,
    job_create,
    job_delete,
    job_events,
    job_list,
    job_retrieve,
)
from tests.fakes.openai_jobsim import (
    AZURE_FINE_TUNABLE,
    OPENAI_FINE_TUNABLE,
    TERMINAL,
    JobOutcome,
    JobSim,
    poll_job,
)

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
        self.sims: dict[str, JobSim] = {}
        self.content: dict[str, bytes] = {}
        self.file_provider: dict[str, str] = {}
        self.file_polls: dict[str, int] = {}
        self.deploy_polls: dict[str, int] = {}
        self.models: dict[str, JobSim] = {}  # fine-tuned (and checkpoint) model id -> job
        self.outcomes: list[JobOutcome] = list(job_outcomes)
        self._faults: list[Fault] = []
        self.lock = threading.RLock()
        self.rng = random.Random(20240701)
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.conns: set[socket.socket] = set()

    # -- lifecycle

    def start(self) -> OpenAIServer:
        httpd = HTTPServer(("127.0.0.1", 0), Handler)
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
        with self.lock:
            conns, self.conns = list(self.conns), set()
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

    def inject(
        self, method: str, path_regex: str, fault: int | str, times: int = 1, after_handling: bool = False
    ) -> None:
        """Answer the next ``times`` requests whose method matches (``"*"``: any) and whose
        path (without query) matches ``path_regex`` (``re.search``) with ``fault``: an HTTP
        status, or ``"drop"`` to close the connection unanswered. ``after_handling`` carries
        the request out first."""
        if fault != "drop" and not (isinstance(fault, int) and 400 <= fault <= 599):
            raise ValueError(f"fault must be an HTTP error status or 'drop', got {fault!r}")
        with self.lock:
            self._faults.append(Fault(method.upper(), re.compile(path_regex), fault, times, after_handling))

    def set_job_outcome(
        self, status: str, *, code: str | None = None, message: str | None = None, job_id: str | None = None
    ) -> None:
        """Make the next created job (or ``job_id``) end ``failed`` or ``cancelled`` (or
        ``succeeded``) when it finishes running. Calls without ``job_id`` queue up."""
        if status not in TERMINAL:
            raise ValueError(f"status must be one of {sorted(TERMINAL)}")
        defaults = JobOutcome()
        outcome = JobOutcome(status, code or defaults.code, message or defaults.message)
        with self.lock:
            if job_id is None:
                self.outcomes.append(outcome)
            else:
                self.sims[job_id].outcome = outcome

    def advance_job(self, job_id: str, polls: int | None = None) -> dict[str, Any]:
        """Move a job on as if it were polled ``polls`` times (None: until it ends)."""
        with self.lock:
            sim = self.sims[job_id]
            count = 0
            while sim.job["status"] not in TERMINAL and (polls is None or count < polls):
                poll_job(self, sim)
                count += 1
            return sim.job

    def add_deployment(self, name: str, model: str, *, version: str = "1") -> dict[str, Any]:
        """Seed a Succeeded Azure deployment (e.g. of a base model for baselines)."""
        with self.lock:
            dep = deployment_object(
                self,
                "sub",
                "rg",
                "account",
                name,
                {"name": "standard", "capacity": 1},
                {"format": "OpenAI", "name": model, "version": version},
            )
            dep["properties"]["provisioningState"] = "Succeeded"
            self.deployments[name] = dep
            return dep

    def file_content(self, file_id: str) -> bytes:
        return self.content[file_id]

    # -- request entry point (called from handler threads)

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response | None:
        with self.lock:
            self.requests.append((method, raw_path, headers, body))
            split = urlsplit(raw_path)
            path = split.path
            surface = (
                "openai"
                if path.startswith("/v1/")
                else "azure"
                if path.startswith("/openai/")
                else "arm"
                if path.lower().startswith("/subscriptions/")
                else "openai"
            )
            req = Request(method, path, parse_qsl(split.query, keep_blank_values=True), headers, body, surface)
            fault = self._take_fault(method, path)
            if fault is not None and not fault.after_handling:
                return fault_response(fault, surface)
            try:
                resp = self._dispatch(req)
            except ApiError as exc:
                resp = error_response(surface, exc)
            except Exception:  # a bug in the double: say so loudly, answer like the service
                traceback.print_exc(file=sys.stderr)
                resp = error_response(surface, ApiError(500, "internal error in the fake", type="server_error"))
            if fault is not None:
                return fault_response(fault, surface)
            return resp

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.method in ("*", method) and fault.pattern.search(path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _dispatch(self, req: Request) -> Response:
        if req.surface == "arm":
            self._auth_arm(req)
            return arm(self, req)
        if req.surface == "azure":
            self._auth_azure(req)
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", req.api_version):
                raise ApiError(404, "Resource not found")
            path = req.path[len("/openai") :]
        else:
            self._auth_openai(req)
            if not req.path.startswith("/v1/"):
                raise ApiError(404, f"Invalid URL ({req.method} {req.path})")
            path = req.path[len("/v1") :]
        for method, pattern, handler in _ROUTES:
            if (handler in _OPENAI_ONLY and req.surface != "openai") or (
                handler in _AZURE_ONLY and req.surface != "azure"
            ):
                continue
            match = re.fullmatch(pattern, path)
            if match and method == req.method:
                return handler(self, req, *(unquote(g) for g in match.groups()))
        if req.surface == "azure":
            raise ApiError(404, "Resource not found")
        raise ApiError(404, f"Invalid URL ({req.method} {req.path})")

    # -- auth

    def _auth_openai(self, req: Request) -> None:
        if req.headers.get("authorization") != f"Bearer {self.api_key}":
            raise ApiError(
                401,
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    def _auth_azure(self, req: Request) -> None:
        if req.headers.get("api-key") == self.azure_api_key:
            return
        if req.headers.get("authorization") == f"Bearer {self.azure_ad_token}":
            return
        raise ApiError(
            401,
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
            "provide a valid key for an active subscription and use a correct regional API "
            "endpoint for your resource.",
            code="401",
        )

    def _auth_arm(self, req: Request) -> None:
        auth = req.headers.get("authorization")
        if auth is None:
            raise ApiError(
                401, "Authentication failed. The 'Authorization' header is missing.", code="AuthenticationFailed"
            )
        if auth != f"Bearer {self.arm_token}":
            raise ApiError(401, "The access token is invalid.", code="InvalidAuthenticationToken")

    # -- ids and time

    def new_id(self, prefix: str, provider: str, n: int = 24) -> str:
        if provider == "azure":
            return prefix + f"{self.rng.getrandbits(128):032x}"
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        return prefix + "".join(self.rng.choice(alphabet) for _ in range(n))

    def now(self) -> int:
        return int(time.time())  # lists are ordered by creation, not by this

    def ok(self, req: Request, body: Any, *, created: str | None = None) -> Response:
        """200 on OpenAI; Azure answers creations with 201 + Location."""
        if req.surface == "azure" and created is not None:
            return Response(201, body, {"location": f"{self.url}/openai/{created}?api-version={req.api_version}"})
        return Response(200, body)


_Handler_t = Callable[..., Response]
_ROUTES: list[tuple[str, str, _Handler_t]] = [
    ("POST", r"/files", file_upload),
    ("GET", r"/files", file_list),
    ("GET", r"/files/([^/]+)", file_retrieve),
    ("DELETE", r"/files/([^/]+)", file_delete),
    ("GET", r"/files/([^/]+)/content", file_content),
    ("POST", r"/fine_tuning/jobs", job_create),
    ("GET", r"/fine_tuning/jobs", job_list),
    ("GET", r"/fine_tuning/jobs/([^/]+)", job_retrieve),
    ("POST", r"/fine_tuning/jobs/([^/]+)/cancel", job_cancel),
    ("GET", r"/fine_tuning/jobs/([^/]+)/events", job_events),
    ("GET", r"/fine_tuning/jobs/([^/]+)/checkpoints", job_checkpoints),
    ("POST", r"/chat/completions", chat),
    ("GET", r"/models", models_list),
    ("GET", r"/models/([^/]+)", model_retrieve),
    ("DELETE", r"/fine_tuning/jobs/([^/]+)", job_delete),
    ("POST", r"/deployments/([^/]+)/chat/completions", azure_chat),
]
_OPENAI_ONLY = {chat}
_AZURE_ONLY = {job_delete, azure_chat}


# ---------------------------------------------------------------- fixtures and clients


@pytest.fixture(name="openai_server")
def openai_server_fixture() -> Iterator[OpenAIServer]:
    """The ``openai_server`` fixture: a started server, stopped after the test. Register it
    with ``from tests.fakes.openai_server import openai_server_fixture  # noqa: F401``."""
    with OpenAIServer() as server:
        yield server


def openai_client(
    server: OpenAIServer, *, api_key: str | None = None, max_retries: int = 2, timeout: float = 10.0
) -> OpenAI:
    """The official client, validating every response against its own types."""
    from openai import OpenAI

    return OpenAI(
        base_url=server.url + "/v1",
        api_key=api_key or server.api_key,
        max_retries=max_retries,
        timeout=timeout,
        _strict_response_validation=True,
    )


def azure_client(
    server: OpenAIServer,
    *,
    api_version: str = "2024-10-21",
    api_key: str | None = None,
    azure_ad_token: str | None = None,
    max_retries: int = 2,
    timeout: float = 10.0,
) -> AzureOpenAI:
    """The official Azure client. Not strict: its job type lists only OpenAI's states."""
    from openai import AzureOpenAI

    if azure_ad_token is not None:
        return AzureOpenAI(
            azure_endpoint=server.url,
            api_version=api_version,
            azure_ad_token=azure_ad_token,
            max_retries=max_retries,
            timeout=timeout,
        )
    return AzureOpenAI(
        azure_endpoint=server.url,
        api_version=api_version,
        api_key=api_key or server.azure_api_key,
        max_retries=max_retries,
        timeout=timeout,
    )


def arm_deployment_url(
    server: OpenAIServer,
    name: str,
    *,
    subscription: str = "sub-123",
    resource_group: str = "rg-ftpipe",
    account: str = "aoai-ftpipe",
    api_version: str = "2024-10-01",
) -> str:
    """The ARM URL of one deployment, with the server standing in for management.azure.com."""
    return (
        f"{server.url}/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
        f"Microsoft.CognitiveServices/accounts/{account}/deployments/{name}?api-version={api_version}"
    )


def arm_headers(server: OpenAIServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.arm_token}", "Content-Type": "application/json"}
