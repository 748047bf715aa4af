"""Ray Jobs API → ftpipe (the one place that knows Ray's client and its errors).

Everything the ``ray`` executor asks of a cluster goes through :class:`RayJobs`; every
error Ray's client raises (unreachable address, token auth, a 4xx/5xx from the dashboard,
a runtime environment too large) leaves here as a :class:`~ftpipe.errors.RemoteError`
that names the address and the job, with a hint — never as a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any, Iterator

from ftpipe.errors import MissingDependency, RemoteError, UsageError

SERVICE = "Ray"


class JobState(str, Enum):
    """A Ray job's status (``ray.job_submission.JobStatus``)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


TERMINAL = frozenset({JobState.STOPPED, JobState.SUCCEEDED, JobState.FAILED})


@dataclass(frozen=True)
class JobInfo:
    submission_id: str
    state: JobState
    message: str = ""
    driver_exit_code: int | None = None
    start_time: int | None = None  # ms since the epoch
    end_time: int | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


def normalize_address(address: str) -> str:
    """The Jobs API (dashboard) address as an http(s) URL."""
    address = address.strip().rstrip("/")
    if not address:
        raise UsageError("executor.address is empty", hint="give the Ray dashboard address, e.g. http://head:8265")
    if address.startswith("ray://"):
        raise UsageError(
            f"executor.address {address!r} is a Ray Client address; the ray executor talks to the Jobs API",
            hint="use the dashboard address, e.g. http://<head>:8265 (KubeRay: the head service's port 8265)",
        )
    if "://" not in address:
        address = "http://" + address
    return address


_HINTS = {
    401: "the cluster uses token authentication: set RAY_AUTH_MODE=token and the cluster's token "
    "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) where ftpipe runs",
    403: "the cluster refused the token: check RAY_AUTH_TOKEN (or the token file) is the cluster's",
    404: "the address answers but has no Ray Jobs API: give the dashboard address (port 8265 by default)",
    413: "the upload is too large: keep big files out of the pipeline's folder (.rayignore / .gitignore) "
    "or read them from shared storage",
}


@contextmanager
def ray_errors(what: str, address: str, job_id: str | None = None) -> Iterator[None]:
    """Turn anything Ray's client raises inside the block into a RemoteError."""
    try:
        yield
    except (RemoteError, UsageError, KeyboardInterrupt):
        raise
    except ImportError as exc:
        raise MissingDependency("ray[default]", "ray", "the ray executor") from exc
    except Exception as exc:  # noqa: BLE001 - this is the translation point
        raise translate(exc, what, address, job_id) from None


def translate(exc: BaseException, what: str, address: str, job_id: str | None = None) -> RemoteError:
    name = type(exc).__name__
    text = str(exc)
    if name == "AuthenticationError":
        auth = 403 if "invalid" in text.lower() or "forbidden" in text.lower() else 401
        return RemoteError(
            SERVICE,
            f"{what}: authentication failed at {address}: {_first_line(text)}",
            status=auth,
            code="auth",
            job_id=job_id,
            hint=_HINTS[auth],
        )
    if isinstance(exc, ConnectionError) or name in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout"):
        return RemoteError(
            SERVICE,
            f"{what}: cannot reach the Ray Jobs API at {address}",
            code="unreachable",
            job_id=job_id,
            hint="is the cluster up and the dashboard port reachable from here? "
            "(KubeRay: kubectl port-forward svc/<cluster>-head-svc 8265; local: ray start --head)",
        )
    if isinstance(exc, ValueError) and "address" in text.lower():
        return RemoteError(
            SERVICE,
            f"{what}: {text}",
            code="address",
            job_id=job_id,
            hint="executor.address is the dashboard URL, e.g. http://<head>:8265",
        )
    status = _status(text)
    message = _provider_message(text)
    if status == 404 and "does not exist" in text:
        return RemoteError(SERVICE, f"{what}: {message}", status=404, code="not-found", job_id=job_id)
    if "Version check returned 404" in text or "Jobs API is not supported" in text:
        status = 404
    hint = _HINTS.get(status or 0)
    if "exceeds the maximum" in text or "too large" in text.lower():
        hint = _HINTS[413]
    if status and status >= 500 and hint is None:
        hint = "the cluster had an internal error: the dashboard log on the head node has the details"
    return RemoteError(SERVICE, f"{what}: {message}", status=status, job_id=job_id, hint=hint)


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), text)


def _status(text: str) -> int | None:
    # Ray's client reports HTTP failures as "Request failed with status code 404: ...";
    # the dashboard wraps the job agent's own status inside that text: keep the innermost.
    codes = re.findall(r"status code (\d{3})", text)
    return int(codes[-1]) if codes else None


def _provider_message(text: str) -> str:
    """The useful sentence inside Ray's error text (which often embeds a traceback)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip() != "."]
    for ln in reversed(lines):
        m = re.match(r"^(?:[A-Za-z_.]+(?:Error|Exception)): (.+)$", ln)
        if m:
            return m.group(1).rstrip(".")
    tail = re.sub(r"^Request failed with status code \d{3}: ", "", lines[-1] if lines else text)
    return tail.rstrip(".")[:500]


def _headers() -> dict[str, Any] | None:
    """HTTP headers for the Jobs API from RAY_JOB_HEADERS (JSON), as the `ray job` CLI reads them
    (a proxy's or Anyscale's auth header)."""
    raw = os.environ.get("RAY_JOB_HEADERS")
    if not raw:
        return None
    try:
        headers = json.loads(raw)
    except ValueError:
        headers = None
    if not isinstance(headers, dict):
        raise UsageError(
            "RAY_JOB_HEADERS is not a JSON object", hint='e.g. RAY_JOB_HEADERS=\'{"Authorization": "Bearer ..."}\''
        )
    return headers


def is_transient(exc: BaseException) -> bool:
    """Worth asking again: a dropped connection, or the dashboard's 429/5xx (Ray's client
    reports HTTP failures as text: the status is read from it)."""
    from ftpipe.remote.retry import TRANSIENT_STATUS
    from ftpipe.remote.retry import is_transient as transient

    if transient(exc) or type(exc).__name__ in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout"):
        return True
    status = _status(str(exc))
    return status is not None and (status in TRANSIENT_STATUS or status >= 500)


class RayJobs:
    """A Jobs API client for one address: submit, inspect, read logs, stop. Reads and
    stops (idempotent) go through the shared retry helper; ``log`` hears each retry."""

    def __init__(self, address: str, *, log: Callable[[str], None] | None = None) -> None:
        self.log = log
        self.address = normalize_address(address)
        with ray_errors("connecting", self.address):
            from ray.job_submission import JobSubmissionClient

            # Ray's client logs each upload at INFO (after configuring its loggers on
            # import); ftpipe says once what it uploads.
            for name in ("ray.dashboard.modules.dashboard_sdk", "ray._private.runtime_env.packaging"):
                logging.getLogger(name).setLevel(logging.WARNING)

            self._client = JobSubmissionClient(self.address, headers=_headers())

    def submit(
        self,
        *,
        entrypoint: str,
        submission_id: str,
        runtime_env: dict[str, Any],
        metadata: dict[str, str],
        num_cpus: float | None,
        num_gpus: float | None,
        memory: int | None,
    ) -> str:
        with ray_errors("submitting the job", self.address, submission_id):
            return self._client.submit_job(
                entrypoint=entrypoint,
                submission_id=submission_id,
                runtime_env=runtime_env,
                metadata=metadata,
                entrypoint_num_cpus=num_cpus,
                entrypoint_num_gpus=num_gpus or None,
                entrypoint_memory=memory,
            )

    def info(self, submission_id: str) -> JobInfo | None:
        """The job's state, or None if the cluster has no such job (e.g. it was restarted)."""
        try:
            with ray_errors("reading the job status", self.address, submission_id):
                raw = self._retried(lambda: self._client.get_job_info(submission_id), "reading the job status")
        except RemoteError as exc:
            if exc.code == "not-found":
                return None
            raise
        status = getattr(raw.status, "value", str(raw.status))
        return JobInfo(
            submission_id, JobState(status), raw.message or "", raw.driver_exit_code, raw.start_time, raw.end_time
        )

    def logs(self, submission_id: str) -> str:
        with ray_errors("reading the job logs", self.address, submission_id):
            return str(self._retried(lambda: self._client.get_job_logs(submission_id), "reading the job logs"))

    def stop(self, submission_id: str) -> bool:
        with ray_errors("stopping the job", self.address, submission_id):
            return bool(self._retried(lambda: self._client.stop_job(submission_id), "stopping the job"))

    def _retried(self, fn: Callable[[], Any], what: str) -> Any:
        from ftpipe.remote.retry import call_with_retries

        return call_with_retries(fn, what=f"Ray {what} at {self.address}", log=self.log, is_transient=is_transient)
