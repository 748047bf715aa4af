"""Jobs and scheduled-Jobs routes of the loopback Hub, as ``huggingface_hub`` 2.x calls them
(hf_api.py ``run_job``, ``inspect_job``, ``fetch_job_logs``, ``list_jobs``, ``cancel_job``,
``list_jobs_hardware``, ``create_scheduled_job`` & co; payloads from _jobs_api.py).

- ``POST /api/jobs/{ns}`` ``{dockerImage|spaceId, command, arguments, environment, secrets,
  flavor, timeoutSeconds, labels, ...}`` → JobInfo ``{id, createdAt, dockerImage, command,
  arguments, environment, secrets (names only), flavor, labels, status: {stage, message},
  owner}``; stages SCHEDULING → RUNNING → COMPLETED | ERROR | CANCELED.
- ``GET /api/jobs/{ns}`` (``?stage=`` and ``?label=k=v``, repeatable), ``GET /api/jobs/{ns}/{id}``,
  ``GET /api/jobs/{ns}/{id}/logs`` (server-sent events ``data: {"data", "timestamp"}``),
  ``POST /api/jobs/{ns}/{id}/cancel``, ``GET /api/jobs/hardware``.
- ``/api/scheduled-jobs/{ns}``: create (``{jobSpec, schedule, suspend?, concurrency?}``), list
  (``?label=``), get, delete, ``/suspend``, ``/resume``, ``/schedule``, ``/run`` (trigger), ``/labels``.

A Job's command runs as a local subprocess (``hub.job_env`` + the Job's environment + its
secrets as the environment), its output becomes the Job's log; exit 0 gives COMPLETED, another
code ERROR; cancel terminates it (SIGTERM); ``timeoutSeconds`` ends it with ERROR.
"""

from __future__ import annotations

import json
import secrets as _secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tests.fakes.hub_model import _HttpError, _json, _now, _Response

if TYPE_CHECKING:
    from tests.fakes.hub_server import HubServer

TERMINAL = ("COMPLETED", "CANCELED", "ERROR", "DELETED")
HARDWARE = [
    {
        "name": "cpu-basic",
        "prettyName": "CPU Basic",
        "cpu": "2 vCPU",
        "ram": "16 GB",
        "ephemeralStorage": "50 GB",
        "accelerator": None,
        "unitCostMicroUSD": 167,
        "unitCostUSD": 0.000167,
        "unitLabel": "minute",
    },
    {
        "name": "cpu-upgrade",
        "prettyName": "CPU Upgrade",
        "cpu": "8 vCPU",
        "ram": "32 GB",
        "ephemeralStorage": "50 GB",
        "accelerator": None,
        "unitCostMicroUSD": 500,
        "unitCostUSD": 0.0005,
        "unitLabel": "minute",
    },
    {
        "name": "t4-small",
        "prettyName": "Nvidia T4 - small",
        "cpu": "4 vCPU",
        "ram": "15 GB",
        "ephemeralStorage": "50 GB",
        "accelerator": {"type": "gpu", "model": "T4", "quantity": "1", "vram": "16 GB", "manufacturer": "Nvidia"},
        "unitCostMicroUSD": 6667,
        "unitCostUSD": 0.006667,
        "unitLabel": "minute",
    },
]
_SPEC_KEYS = (
    "dockerImage",
    "spaceId",
    "command",
    "arguments",
    "environment",
    "flavor",
    "timeoutSeconds",
    "labels",
    "attempts",
    "volumes",
    "expose",
    "resourceGroupId",
)


@dataclass
class _Job:
    raw: dict  # what the API answers (secrets: names only)
    secrets: dict[str, str]  # the values, server side only
    logs: list[tuple[str, str]] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    cancelled: bool = False


class JobsState:
    """The Jobs of one HubServer. ``job_env`` is the base environment of every Job's process
    (PATH, HF_ENDPOINT, ... — what the image and the platform provide on the Hub)."""

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub
        self.jobs: dict[str, _Job] = {}
        self.scheduled: dict[str, dict] = {}
        self.job_env: dict[str, str] = {}
        self.scheduling_seconds = 0.05

    # -- test helpers ------------------------------------------------------------------------
    def all(self) -> list[dict]:
        with self.hub._lock:
            return [json.loads(json.dumps(j.raw)) for j in self.jobs.values()]

    def secret_values(self, job_id: str) -> dict[str, str]:
        with self.hub._lock:
            return dict(self.jobs[job_id].secrets)

    def log_text(self, job_id: str) -> str:
        with self.hub._lock:
            return "\n".join(text for _, text in self.jobs[job_id].logs)

    # -- running ---------------------------------------------------------------------------
    def create(self, namespace: str, spec: dict, initiator: dict | None = None) -> dict:
        job_id = _secrets.token_hex(12)
        raw = {key: spec[key] for key in _SPEC_KEYS if key in spec}
        raw.setdefault("arguments", [])
        raw.setdefault("environment", {})
        raw.update(
            id=job_id,
            createdAt=_now(),
            secrets={k: None for k in spec.get("secrets") or {}},
            status={"stage": "SCHEDULING", "message": None},
            owner={"id": namespace, "name": namespace, "type": "user"},
            initiator=initiator or {"type": "user", "id": namespace, "name": namespace},
        )
        job = _Job(raw, {str(k): str(v) for k, v in (spec.get("secrets") or {}).items()})
        self.jobs[job_id] = job
        threading.Thread(target=self._run, args=(job,), name=f"job-{job_id}", daemon=True).start()
        return raw

    def _set(self, job: _Job, stage: str, message: str | None = None) -> None:
        with self.hub._lock:
            if job.raw["status"]["stage"] in TERMINAL:
                return
            job.raw["status"] = {"stage": stage, "message": message}
            if stage == "RUNNING":
                job.raw["startedAt"] = _now()
            if stage in TERMINAL:
                job.raw["finishedAt"] = _now()

    def _run(self, job: _Job) -> None:
        time.sleep(self.scheduling_seconds)
        with self.hub._lock:
            if job.cancelled:
                return
            cmd = list(job.raw.get("command") or []) + list(job.raw.get("arguments") or [])
            env = {**self.job_env, **job.raw.get("environment", {}), **job.secrets}
            job.logs.append((_now(), f"===== Job started at {_now()} ====="))
            try:
                job.proc = subprocess.Popen(
                    cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
                )
            except OSError as exc:
                job.raw["status"] = {"stage": "ERROR", "message": f"could not start the command: {exc}"}
                return
            job.raw["status"] = {"stage": "RUNNING", "message": None}
            job.raw["startedAt"] = _now()
        proc = job.proc
        timeout = job.raw.get("timeoutSeconds")
        timer = threading.Timer(float(timeout), self._timeout, args=(job,)) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            with self.hub._lock:
                job.logs.append((_now(), line.rstrip("\n")))
        code = proc.wait()
        if timer is not None:
            timer.cancel()
        if job.cancelled:
            self._set(job, "CANCELED")
        elif code == 0:
            self._set(job, "COMPLETED")
        else:
            self._set(job, "ERROR", f"exit code {code}")

    def _timeout(self, job: _Job) -> None:
        self._set(job, "ERROR", "Job timed out")
        if job.proc is not None and job.proc.poll() is None:
            job.proc.terminate()

    def cancel(self, job: _Job) -> None:
        job.cancelled = True
        if job.raw["status"]["stage"] not in TERMINAL:
            job.raw["status"] = {"stage": "CANCELED", "message": None}
            job.raw["finishedAt"] = _now()
        if job.proc is not None and job.proc.poll() is None:
            job.proc.terminate()

    def stop_all(self) -> None:
        for job in list(self.jobs.values()):
            if job.proc is not None and job.proc.poll() is None:
                job.cancelled = True
                job.proc.terminate()
                try:
                    job.proc.wait(10)
                except subprocess.TimeoutExpired:
                    job.proc.kill()


class _JobsApi:
    """``/api/jobs/...`` and ``/api/scheduled-jobs/...`` for one request."""

    def __init__(self, hub: HubServer, user: str | None, params: dict) -> None:
        self.hub, self.state, self.user, self.params = hub, hub.jobs, user, params

    def _namespace(self, namespace: str) -> str:
        if self.user is None:
            raise _HttpError(401, "You must be authenticated to use Jobs")
        if namespace not in self.hub.users:
            raise _HttpError(403, f"You don't have the rights to run Jobs under the namespace {namespace}")
        return namespace

    def _job(self, namespace: str, job_id: str) -> _Job:
        job = self.state.jobs.get(job_id)
        if job is None or job.raw["owner"]["name"] != namespace:
            raise _HttpError(404, f"Job {job_id} not found")
        return job

    def handle(self, method: str, route: str, segs: list[str], body: bytes) -> _Response:
        if route == "jobs":
            return self._jobs(method, segs, body)
        return self._scheduled(method, segs, body)

    # -- jobs --------------------------------------------------------------------------------
    def _jobs(self, method: str, segs: list[str], body: bytes) -> _Response:
        if segs == ["hardware"] and method == "GET":
            return _json(HARDWARE)
        if not segs:
            raise _HttpError(404, "Not found: /api/jobs")
        ns = self._namespace(segs[0])
        if len(segs) == 1 and method == "POST":
            spec = json.loads(body or b"{}")
            _check_spec(spec)
            return _json(self.state.create(ns, spec))
        if len(segs) == 1 and method == "GET":
            return _json(self._list(ns))
        job = self._job(ns, segs[1])
        action = segs[2] if len(segs) > 2 else ""
        if method == "GET" and action == "":
            return _json(job.raw)
        if method == "GET" and action == "logs":
            return self._logs(job)
        if method == "POST" and action == "cancel":
            self.state.cancel(job)
            return _Response(200, b"")
        raise _HttpError(404, f"Not found: {method} /api/jobs/{'/'.join(segs)}")

    def _list(self, namespace: str) -> list[dict]:
        stages = set(self.params.get("stage", []))
        labels = [lb.split("=", 1) for lb in self.params.get("label", [])]
        out = []
        for job in self.state.jobs.values():
            raw = job.raw
            if raw["owner"]["name"] != namespace or (stages and raw["status"]["stage"] not in stages):
                continue
            if all((raw.get("labels") or {}).get(k) == v for k, v in labels):
                out.append(raw)
        return out

    def _logs(self, job: _Job) -> _Response:
        tail = self.params.get("tail")
        events = job.logs[-int(tail[0]) :] if tail else job.logs
        lines = [f"data: {json.dumps({'data': text, 'timestamp': stamp})}\n\n" for stamp, text in events]
        return _Response(200, "".join(lines).encode(), {"Content-Type": "text/event-stream"})

    # -- scheduled jobs ----------------------------------------------------------------------
    def _scheduled(self, method: str, segs: list[str], body: bytes) -> _Response:
        if not segs:
            raise _HttpError(404, "Not found: /api/scheduled-jobs")
        ns = self._namespace(segs[0])
        scheduled = self.state.scheduled
        if len(segs) == 1 and method == "POST":
            payload = json.loads(body or b"{}")
            if not payload.get("schedule") or not isinstance(payload.get("jobSpec"), dict):
                raise _HttpError(400, "schedule and jobSpec are required")
            _check_spec(payload["jobSpec"])
            sid = _secrets.token_hex(12)
            spec = dict(payload["jobSpec"])
            values = {str(k): str(v) for k, v in (spec.get("secrets") or {}).items()}
            spec["secrets"] = {k: None for k in values}
            scheduled[sid] = {
                "id": sid,
                "createdAt": _now(),
                "jobSpec": spec,
                "schedule": payload["schedule"],
                "suspend": bool(payload.get("suspend", False)),
                "concurrency": bool(payload.get("concurrency", False)),
                "status": {"lastJob": None, "nextJobRunAt": None},
                "owner": {"id": ns, "name": ns, "type": "user"},
                "_secrets": values,
            }
            return _json(_public(scheduled[sid]))
        if len(segs) == 1 and method == "GET":
            label = self.params.get("label", [])
            wanted = [lb.split("=", 1) for lb in label]
            return _json(
                [
                    _public(s)
                    for s in scheduled.values()
                    if s["owner"]["name"] == ns
                    and all((s["jobSpec"].get("labels") or {}).get(k) == v for k, v in wanted)
                ]
            )
        item = scheduled.get(segs[1])
        if item is None or item["owner"]["name"] != ns:
            raise _HttpError(404, f"Scheduled Job {segs[1]} not found")
        action = segs[2] if len(segs) > 2 else ""
        if method == "GET" and action == "":
            return _json(_public(item))
        if method == "DELETE" and action == "":
            del scheduled[segs[1]]
            return _Response(200, b"")
        if method == "POST" and action in ("suspend", "resume"):
            item["suspend"] = action == "suspend"
            return _Response(200, b"")
        if method == "POST" and action == "schedule":
            item["schedule"] = json.loads(body or b"{}")["schedule"]
            return _json(_public(item))
        if method == "PUT" and action == "labels":
            item["jobSpec"]["labels"] = json.loads(body or b"{}").get("labels") or {}
            return _json(_public(item))
        if method == "POST" and action == "run":
            spec = {**item["jobSpec"], "secrets": item["_secrets"]}
            raw = self.state.create(ns, spec, {"type": "scheduled-job", "id": item["id"]})
            item["status"]["lastJob"] = {"id": raw["id"], "at": _now()}
            return _json(raw)
        raise _HttpError(404, f"Not found: {method} /api/scheduled-jobs/{'/'.join(segs)}")


def _check_spec(spec: dict) -> None:
    if not (spec.get("dockerImage") or spec.get("spaceId")):
        raise _HttpError(400, "dockerImage or spaceId is required")
    if not isinstance(spec.get("command"), list) or not spec["command"]:
        raise _HttpError(400, "command must be a non-empty list")
    if spec.get("flavor") not in {h["name"] for h in HARDWARE} | _OTHER_FLAVORS:
        raise _HttpError(400, f"Invalid flavor {spec.get('flavor')!r}")
    for name, value in (spec.get("environment") or {}).items():
        if not isinstance(value, str):
            raise _HttpError(400, f"environment.{name} must be a string")


# flavors the real Hub accepts that the hardware list above leaves out (kept short)
_OTHER_FLAVORS = {
    "cpu-performance",
    "cpu-xl",
    "t4-medium",
    "l4x1",
    "l4x4",
    "a10g-small",
    "a10g-large",
    "a100-large",
    "h200",
}


def _public(item: dict) -> dict:
    return {k: v for k, v in item.items() if not k.startswith("_")}
