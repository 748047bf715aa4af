"""The one skeleton every remote executor runs on (Hugging Face Spaces, Hugging Face Jobs, Ray).

A remote executor is a :class:`RemoteBackend`: it knows how to submit one request, poll
it, read its logs and its result, download the run, cancel and clean up. Everything else
lives here, once:

- **submit once**: the request (its id, the plan's fingerprint) is written to
  ``<store>/jobs/<executor>/<pipeline>.json`` before anything is sent, and the backend
  records the remote id there (``persist``) as soon as it has one;
- **re-attach**: a runner that was killed (kill -9, a closed laptop) left that file; the
  next ``ftpipe run`` of the same plan follows the same remote run instead of starting
  another;
- **retry**: every remote call goes through the shared retry helper
  (:func:`ftpipe.remote.retry.call_with_retries`: 429/5xx/dropped connections, Retry-After
  honoured); a call that still fails ends this runner with a clear message but leaves the
  remote run going and the state in place, so the next ``ftpipe run`` re-attaches;
- **logs** of the remote run go to the terminal and into the run's ``logs/<executor>.log``;
- **Ctrl-C** cancels the remote run (a second Ctrl-C leaves it running) and brings home
  whatever record it wrote; a backend with ``stop_on_interrupt = False`` leaves it running
  and the next ``ftpipe run`` re-attaches;
- **results** come home through :meth:`RunStore.import_run`; a remote run that never
  reported a record still gets a local one saying why;
- **the outcome** is the local executor's: the same run record, the same ``--json``
  summary (plus the executor's own fields), the same exit codes.
"""

from __future__ import annotations

import hashlib
import json
import secrets as _secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click

from ftpipe import errors
from ftpipe.contracts import RunRequest
from ftpipe.errors import RemoteError, UsageError
from ftpipe.progress import Reporter
from ftpipe.spec.interpolate import redact
from ftpipe.store import RunStore, default_store, now_iso, write_json

T = TypeVar("T")
POLL_MIN_S = 0.25
LOG_TAIL = 15


@dataclass(frozen=True)
class Poll:
    """What the remote side says about a request right now."""

    stage: str  # the provider's own word (RUNNING, COMPLETED, RUNTIME_ERROR, ...)
    ended: bool  # its process is gone: only a pushed result can still say how it went
    message: str | None = None
    note: str | None = None  # what the stage means for the user, printed once per stage


@dataclass
class RemoteContext:
    """What a backend may use: the request, the prepared pipeline, the store, the reporter,
    and ``call`` (every remote call goes through it: retried, errors translated)."""

    request: RunRequest
    prepared: Any  # ftpipe.engine.Prepared
    store: RunStore
    reporter: Reporter
    secrets: tuple[str, ...]
    fingerprint: str
    plan_hash: str
    call: Callable[..., Any] = field(repr=False, default=None)  # type: ignore[assignment]

    @property
    def path(self) -> Path:
        return self.request.pipeline_path

    @property
    def pipeline(self) -> str:
        return str(self.prepared.plan.pipeline)


class RemoteBackend(Protocol):
    """One remote service. ``state`` is the persisted dict (JSON-able): the backend adds its
    remote ids to it and calls ``persist(state)`` right after the service gave them."""

    name: str  # the executor's name: "hf-jobs"
    timeout_s: int
    poll_max_s: float  # the longest pause between two polls (they start at POLL_MIN_S and back off)
    stop_on_interrupt: bool  # Ctrl-C cancels the remote run (else it keeps going and can be re-attached)

    def where(self, state: dict) -> str: ...  # "Job tester/abc", "Space tester/x": for messages
    def submit(self, state: dict, persist: Callable[[dict], None]) -> None: ...
    def alive(self, state: dict) -> bool | None: ...  # re-attach check: running (True), ended (False), gone (None)
    def poll(self, state: dict) -> Poll: ...
    def logs(self, state: dict) -> list[str]: ...  # every log line so far (the skeleton shows the new ones)
    def result(self, state: dict) -> dict | None: ...  # the pushed outcome, None until there is one
    def download(self, state: dict, result: dict, dest: Path) -> None: ...  # runs/<id>/ and cache/<key>/ into dest
    def cancel(self, state: dict) -> None: ...  # returns once it has ended; raises if it would not
    def cleanup(self, state: dict) -> None: ...  # the run is over (pause a Space); never called mid-run
    def info(self, state: dict) -> dict: ...  # what the run record keeps about the remote side


def fingerprints(plan: Any, request: RunRequest) -> tuple[str, str]:
    """(plan hash, request fingerprint): re-attach only to the same plan with the same options."""
    keys = [[s.id, s.key] for s in plan.steps]
    plan_hash = hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:8]
    fp = hashlib.sha256(json.dumps(keys + [request.force, request.from_step]).encode()).hexdigest()[:16]
    return plan_hash, fp


def retrying(what: str, fn: Callable[[], T], *, reporter: Reporter | None = None, secrets: tuple[str, ...] = ()) -> T:
    """``fn()`` through the shared retry helper, Hub errors translated once it gives up."""
    from ftpipe.remote.hf import hub_errors
    from ftpipe.remote.retry import call_with_retries

    log = reporter.message if reporter is not None else None
    with hub_errors(what):
        return call_with_retries(fn, what=what, log=log, secrets=secrets)


class RemoteRun:
    """Runs one request of ``request`` through ``backend`` (made by ``make_backend(ctx)``)."""

    def __init__(
        self,
        request: RunRequest,
        make_backend: Callable[[RemoteContext], RemoteBackend],
        secrets: tuple[str, ...] = (),
        *,
        secrets_elsewhere: bool = False,
    ) -> None:
        from ftpipe.engine import prepare

        # validates, plans, checks every ${env:...} is set (secrets_elsewhere: but the
        # secret ones, which the remote side's own environment may provide)
        prepared = prepare(request.pipeline_path, secrets_elsewhere=secrets_elsewhere)
        plan = prepared.plan
        if request.from_step and request.from_step not in {s.id for s in plan.steps}:
            raise UsageError(f"--from {request.from_step}: no such step (steps: {', '.join(s.id for s in plan.steps)})")
        plan_hash, fp = fingerprints(plan, request)
        store = RunStore((request.store or default_store(request.pipeline_path)).resolve())
        self.reporter = Reporter(quiet=request.quiet)
        self.ctx = RemoteContext(
            request=request,
            prepared=prepared,
            store=store,
            reporter=self.reporter,
            secrets=tuple({*prepared.secrets, *secrets}),
            fingerprint=fp,
            plan_hash=plan_hash,
        )
        self.ctx.call = self.call
        self.backend = make_backend(self.ctx)
        self.name = self.backend.name
        self.log_lines: list[str] = []
        self.log_seen = 0
        self.t0 = time.monotonic()

    # ------------------------------------------------------------------ helpers
    def call(self, what: str, fn: Callable[[], T]) -> T:
        return retrying(what, fn, reporter=self.reporter, secrets=self.ctx.secrets)

    def redact(self, text: str) -> str:
        return redact(text, self.ctx.secrets)

    @property
    def state_path(self) -> Path:
        return self.ctx.store.root / "jobs" / self.name / f"{self.ctx.pipeline}.json"

    def persist(self, state: dict) -> None:
        write_json(self.state_path, state)

    def clear(self) -> None:
        self.state_path.unlink(missing_ok=True)

    def in_flight(self) -> dict | None:
        """The request a runner submitted and has not seen end, if any."""
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and state.get("request_id") else None

    # ------------------------------------------------------------------ top level
    def run(self) -> int:
        with self.ctx.store.lock(
            f"{self.ctx.pipeline}.{self.name}",
            wait=self.ctx.request.wait_lock,
            on_wait=lambda h: self.reporter.message(f"waiting for the runner that holds the lock ({h})"),
        ):
            state = self._reattach()
            if state is None:
                state = self.new_state()
                try:
                    self.backend.submit(state, self.persist)
                except UsageError:
                    self.clear()  # refused before anything was sent
                    raise
                except KeyboardInterrupt:
                    self.reporter.error("interrupted while submitting")
                    return self._end(
                        state,
                        self._local_record(state, errors.EXIT_INTERRUPTED, "interrupted while submitting"),
                        cancel=True,
                    )
            try:
                return self._follow(state)
            except KeyboardInterrupt:
                return self._interrupted(state)
            except errors.FtpipeError as exc:
                # a remote call that kept failing: the remote run goes on, the state stays
                self.reporter.error(f"lost track of {self.backend.where(state)}: {self.redact(str(exc))}")
                self.reporter.error(f"it keeps running; `ftpipe run {self.ctx.path}` re-attaches to it")
                raise

    def new_state(self) -> dict:
        """A new request, persisted first: a runner killed during submission finds it."""
        state = {
            "request_id": self.ctx.store.new_run_id() + "-" + _secrets.token_hex(2),
            "fingerprint": self.ctx.fingerprint,
            "submitted_at": now_iso(),
        }
        self.persist(state)
        return state

    def _reattach(self) -> dict | None:
        state = self.in_flight()
        if state is None:
            return None
        if state.get("fingerprint") != self.ctx.fingerprint:
            self.reporter.message(
                f"an earlier request ({state['request_id']}) runs another plan or other options: not re-attaching to it"
            )
            try:
                if self.backend.alive(state):  # it would only cost money and race this one for the results
                    self.backend.cancel(state)
            except Exception as exc:  # noqa: BLE001 - say so and go on with the new request
                self.reporter.error(f"could not cancel {self.backend.where(state)}: {self.redact(str(exc))}")
            return None
        alive = self.backend.alive(state)
        self.persist(state)  # alive() may have found the remote id a killed runner never saved
        if alive is None:
            self.reporter.message(f"request {state['request_id']} is unknown remotely: submitting it again")
            return None
        if alive:
            self.reporter.message(
                f"re-attaching to {self.backend.where(state)} (request {state['request_id']}, "
                f"submitted {state.get('submitted_at')})"
            )
        else:
            self.reporter.message(
                f"{self.backend.where(state)} ended while no runner was attached: bringing its result home"
            )
        return state

    # ------------------------------------------------------------------ follow
    def _follow(self, state: dict) -> int:
        deadline = time.monotonic() + self.backend.timeout_s
        interval, last = POLL_MIN_S, None
        self.log_seen = 0
        while True:
            result = self.backend.result(state)
            if result is not None:
                break
            poll = self.backend.poll(state)
            if poll.stage != last:
                self.reporter.message(
                    f"{self.backend.where(state)}: {poll.stage}" + (f" — {poll.note}" if poll.note else "")
                )
                last = poll.stage
            self._pump(state)
            if poll.ended:
                result = self.backend.result(state)  # the entry pushes its result before its process ends
                if result is not None:
                    break
                return self._failed(state, poll)
            if time.monotonic() > deadline:
                msg = (
                    f"timed out after {self.backend.timeout_s}s (executor.timeout_s) waiting for "
                    f"{self.backend.where(state)}"
                )
                self.reporter.error(msg)
                self._pump(state)
                return self._end(state, self._local_record(state, errors.EXIT_STEP_FAILED, msg), cancel=True)
            time.sleep(interval)
            interval = min(self.backend.poll_max_s, interval * 1.5)
        self._pump(state)
        return self._bring_home(state, result)

    def _pump(self, state: dict) -> None:
        """Show the remote run's new log lines, secrets redacted; keep them for the run's log."""
        try:
            lines = self.backend.logs(state)
        except Exception:  # noqa: BLE001 - logs are a convenience; the pushed result is what counts
            return
        new = lines[self.log_seen :] if len(lines) >= self.log_seen else lines  # shorter: a new container's log
        self.log_seen = len(lines)
        for line in new:
            clean = self.redact(line)
            self.log_lines.append(clean)
            if not self.ctx.request.quiet:
                click.echo(f"  │ {clean}", err=True)

    def _interrupted(self, state: dict) -> int:
        """Ctrl-C while following: cancel (unless the executor says not to), then bring home
        the record the remote run wrote about its own interruption, if it wrote one."""
        where, again = self.backend.where(state), f"`ftpipe run {self.ctx.path}` re-attaches to it"
        if not self.backend.stop_on_interrupt:
            self.reporter.error(f"interrupted: {where} keeps running (executor.stop_on_interrupt is false); {again}")
            return errors.EXIT_INTERRUPTED
        self.reporter.error(f"interrupted: cancelling {where} (Ctrl-C again to leave it running)")
        try:
            self.backend.cancel(state)
            result = self.backend.result(state)
        except KeyboardInterrupt:
            self.reporter.error(f"left {where} as it was; {again}")
            return errors.EXIT_INTERRUPTED
        except errors.FtpipeError as exc:
            self.reporter.error(f"could not cancel {where}: {self.redact(str(exc))}; {again}")
            return errors.EXIT_INTERRUPTED
        if result is not None and result.get("run_id"):
            self._pump(state)
            return self._bring_home(state, result, code=errors.EXIT_INTERRUPTED)
        msg = "interrupted before the remote run reported a result"
        return self._end(state, self._local_record(state, errors.EXIT_INTERRUPTED, msg))

    def _failed(self, state: dict, poll: Poll) -> int:
        msg = f"{self.backend.where(state)} {poll.stage} before the run reported a result"
        if poll.message:
            msg += f": {self.redact(str(poll.message))}"
        tail = self.log_lines[-LOG_TAIL:]
        if tail:
            msg += "\n  last log lines:\n" + "\n".join(f"    {ln}" for ln in tail)
        self.reporter.error(msg)
        return self._end(state, self._local_record(state, errors.EXIT_STEP_FAILED, msg))

    # ------------------------------------------------------------------ results
    def _bring_home(self, state: dict, result: dict, code: int | None = None) -> int:
        code = int(result.get("exit_code", errors.EXIT_STEP_FAILED)) if code is None else code
        run_id = result.get("run_id")
        if not run_id:
            msg = self.redact(f"the run in {self.backend.where(state)} reported no run record: {result.get('error')}")
            tail = result.get("log_tail") or []
            if tail:
                msg += "\n  last log lines:\n" + "\n".join(f"    {self.redact(ln)}" for ln in tail[-LOG_TAIL:])
            self.reporter.error(msg)
            return self._end(state, self._local_record(state, code or errors.EXIT_STEP_FAILED, msg))
        rs = self.ctx.store
        tmp = rs.root / "tmp" / f"{self.name}-{state['request_id']}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.backend.download(state, result, tmp)
        try:
            record, brought = rs.import_run(tmp, run_id, result.get("artifacts", []))
        except errors.NotFound:
            raise RemoteError(
                self.name,
                f"the results hold no record of run {run_id} although request {state['request_id']} says it finished",
                hint="`ftpipe run` again re-attaches and downloads again",
            ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        record.update(
            store=str(rs.root),
            pipeline_path=str(self.ctx.path.resolve()),
            executor=self.name,
            remote=self._info(state, result),
        )
        self._write_log(rs.run_dir(run_id))
        rs.write_run(record)
        had = len(result.get("artifacts", [])) - brought
        self.reporter.message(
            f"brought run {run_id} home: {brought} new artifact{'s' if brought != 1 else ''}"
            + (f", {had} already here" if had else "")
        )
        return self._end(state, record, code=code)

    def _info(self, state: dict, result: dict | None) -> dict:
        info = {"request_id": state["request_id"], **self.backend.info(state)}
        if result:
            info["remote_store"] = (result.get("summary") or {}).get("store")
        info["client_wall_s"] = round(time.monotonic() - self.t0, 3)
        return info

    def _write_log(self, run_dir: Path) -> None:
        if self.log_lines:
            (run_dir / "logs").mkdir(parents=True, exist_ok=True)
            (run_dir / "logs" / f"{self.name}.log").write_text("\n".join(self.log_lines) + "\n")

    def _local_record(self, state: dict, code: int, error: str) -> dict:
        """A run record for a run whose own record never came back (build error, timeout, Ctrl-C)."""
        import yaml

        rs, plan = self.ctx.store, self.ctx.prepared.plan
        run_id = rs.new_run_id()
        run_dir = rs.run_dir(run_id)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (run_dir / "pipeline.yaml").write_text(yaml.safe_dump(self.ctx.prepared.redacted, sort_keys=False))
        self._write_log(run_dir)
        status = "interrupted" if code == errors.EXIT_INTERRUPTED else "failed"
        record = {
            "run_id": run_id,
            "pipeline": plan.pipeline,
            "pipeline_path": str(self.ctx.path.resolve()),
            "store": str(rs.root),
            "status": status,
            "exit_code": code,
            "started_at": state.get("submitted_at"),
            "finished_at": now_iso(),
            "duration_s": None,
            "host": f"{self.name} {self.backend.where(state)}",
            "executor": self.name,
            "error": self.redact(error),
            "steps": {
                s.id: {"kind": s.kind, "status": "not-run", "key": s.key, "needs": list(s.needs)} for s in plan.steps
            },
            "remote": self._info(state, None),
        }
        # `ftpipe runs show` prints a step's reason: say there why nothing ran
        record["steps"][plan.steps[0].id]["reason"] = record["error"].splitlines()[0]
        rs.write_run(record)
        return record

    def _end(self, state: dict, record: dict, *, cancel: bool = False, code: int | None = None) -> int:
        """The remote run is over (or given up on): cancel it if asked, clean up, forget the
        request, print the outcome."""
        if cancel:
            try:
                self.backend.cancel(state)
            except Exception as exc:  # noqa: BLE001 - say so; cleanup below still tries
                self.reporter.error(f"could not cancel {self.backend.where(state)}: {self.redact(str(exc))}")
        try:
            self.backend.cleanup(state)
        except Exception as exc:  # noqa: BLE001
            self.reporter.error(f"could not clean up {self.backend.where(state)}: {self.redact(str(exc))}")
        self.clear()
        return report(
            self.ctx.request,
            self.reporter,
            record,
            code,
            where=self.backend.where(state),
            extra={"executor": self.name, **self.backend.info(state)},
        )


def report(request: RunRequest, reporter: Reporter, record: dict, code: int | None, *, where: str, extra: dict) -> int:
    """Print the outcome as every executor does: one line, failed steps, ``--json`` summary."""
    from ftpipe.engine import RunOutcome

    code = int(record.get("exit_code") or 0) if code is None else code
    line = (
        f"run {record['run_id']} in {where}: {record.get('status')} (exit {code}) — ftpipe runs show {record['run_id']}"
    )
    (reporter.message if code == errors.EXIT_OK else reporter.error)(line)
    for sid, step in record.get("steps", {}).items():
        if step.get("status") == "failed" and step.get("error"):
            reporter.error(f"  {sid} failed: {step['error']}")
    if request.json_output:
        summary = RunOutcome(code, record["run_id"], record).summary()
        summary.update(extra)
        click.echo(json.dumps(summary, default=str))
    return code
