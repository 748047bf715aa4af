"""The run store: one folder per run, a content-addressed artifact cache, per-step state
that survives crashes, and a lock per pipeline.

Layout (the nearest ``.ftpipe/`` walking up, else the repository root's, unless
``--store``/``FTPIPE_STORE`` says else: ftpipe/store_location.py)::

    runs/<run id>/run.json          status, timings, keys, metrics per step (atomic writes)
    runs/<run id>/pipeline.yaml     the resolved pipeline, secrets kept as references
    runs/<run id>/logs/<step>.log   step logs (secrets redacted)
    cache/<key>/                    a finished step's artifact; complete once _result.json exists
    state/<key>/                    a step's in-progress state (checkpoints, remote job ids)
    locks/<pipeline>.lock           held with flock while a run is in progress

Every file that a reader may see is written to a temporary name and renamed, so a run
killed at any moment leaves the store readable.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets as _secrets
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ftpipe.errors import LockHeld, NotFound

RESULT = "_result.json"


def atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with open(tmp, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk or a kill: the old file stays, no half-written leftover
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def default_store(pipeline_path: Path) -> Path:
    """``$FTPIPE_STORE``, else the nearest ``.ftpipe/`` walking up from the pipeline's folder,
    else the repository root's (see ftpipe/store_location.py)."""
    from ftpipe.store_location import store_for_pipeline

    return store_for_pipeline(pipeline_path)


@dataclass
class RunStore:
    root: Path

    # ---------------------------------------------------------------- runs
    def new_run_id(self) -> str:
        return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + _secrets.token_hex(2)

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def write_run(self, record: dict) -> None:
        write_json(self.run_dir(record["run_id"]) / "run.json", record)

    def read_run(self, run_id: str) -> dict:
        path = self.run_dir(run_id) / "run.json"
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(f"no run {run_id!r} in {self.root}") from None
        return _with_liveness(record)

    def list_runs(self) -> list[dict]:
        runs_dir = self.root / "runs"
        out = []
        if runs_dir.is_dir():
            for d in sorted(runs_dir.iterdir()):
                try:
                    out.append(_with_liveness(json.loads((d / "run.json").read_text())))
                except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
                    continue  # a run dir whose first record never landed
        return sorted(out, key=lambda r: (r.get("started_at") or "", r["run_id"]))

    def resolve_run(self, ref: str) -> str:
        """A run id from an id, a unique prefix, or 'latest'."""
        ids = [r["run_id"] for r in self.list_runs()]
        if ref in ("latest", "last") and ids:
            return ids[-1]
        if not ids:
            from ftpipe.store_location import no_runs_hint

            raise NotFound(f"no runs in {self.root}", hint=no_runs_hint(self.root))
        if ref in ids:
            return ref
        matches = [i for i in ids if i.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFound(f"no run {ref!r} in {self.root}", hint="ftpipe runs list shows the runs")
        raise NotFound(f"{ref!r} matches {len(matches)} runs: give more of the id")

    def import_run(self, source: Path, run_id: str, artifacts: tuple[str, ...] | list[str] = ()) -> tuple[dict, int]:
        """Bring a run made elsewhere (a remote executor's download) into this store:
        ``source/runs/<run_id>/`` becomes the run's folder and each ``source/cache/<key>`` that
        is complete there and missing here becomes an artifact. Returns (run record, number of
        artifacts brought). ``source`` is consumed (its folders are moved)."""
        brought = 0
        for rel in artifacts:
            key = rel.split("/", 1)[-1]
            src = source / "cache" / key
            if (src / RESULT).exists() and self.artifact(key) is None:
                dest = self.root / "cache" / key
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(dest, ignore_errors=True)  # a half-written leftover without _result.json
                os.replace(src, dest)
                brought += 1
        src_run = source / "runs" / run_id
        if not (src_run / "run.json").exists():
            raise NotFound(f"the downloaded results hold no record of run {run_id}")
        run_dir = self.run_dir(run_id)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src_run, run_dir)
        return json.loads((run_dir / "run.json").read_text()), brought

    # ---------------------------------------------------------------- artifacts
    def artifact(self, key: str) -> Path | None:
        path = self.root / "cache" / key
        return path if (path / RESULT).exists() else None

    def artifact_result(self, key: str) -> dict | None:
        path = self.artifact(key)
        return json.loads((path / RESULT).read_text()) if path else None

    def scratch(self, key: str) -> Path:
        """An empty folder for a step to write its artifact into."""
        tmp = self.root / "tmp" / f"{key[:16]}-{os.getpid()}-{_secrets.token_hex(3)}"
        tmp.mkdir(parents=True)
        return tmp

    def commit_artifact(self, key: str, scratch: Path, result: dict) -> Path:
        write_json(scratch / RESULT, result)
        dest = self.root / "cache" / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():  # a half-written leftover without _result.json
            shutil.rmtree(dest)
        os.replace(scratch, dest)
        return dest

    def state_dir(self, key: str) -> Path:
        path = self.root / "state" / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def cache_dir(self) -> Path:
        env = os.environ.get("FTPIPE_CACHE")
        path = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ftpipe"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ---------------------------------------------------------------- locking
    @contextmanager
    def lock(self, name: str, *, wait: bool = False, on_wait=None) -> Iterator[str | None]:
        """Hold the pipeline's lock. flock is released by the kernel when a process dies,
        so a lock left by a killed run is never in force; its note is reported and replaced."""
        path = self.root / "locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        stale = None
        held = False  # only the holder may clear the note: a refused run must leave it
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held = True
                    break
                except BlockingIOError:
                    holder = _read_holder(path)
                    if not wait:
                        raise LockHeld(
                            f"another run of '{name}' is in progress ({holder})",
                            hint="wait for it, or run with --wait to queue behind it",
                        ) from None
                    if on_wait:
                        on_wait(holder)
                        on_wait = None
                    time.sleep(0.5)
            previous = _read_holder_json(path)
            if (
                previous
                and previous.get("pid")
                and previous.get("host") == socket.gethostname()
                and not pid_alive(int(previous["pid"]))
            ):
                stale = f"cleared a stale lock left by pid {previous['pid']} (run {previous.get('run_id')})"
            os.ftruncate(fd, 0)
            os.pwrite(
                fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso()}).encode(), 0
            )
            yield stale
        finally:
            if held:
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
            os.close(fd)

    def note_lock_run(self, name: str, run_id: str) -> None:
        path = self.root / "locks" / f"{name}.lock"
        holder = _read_holder_json(path) or {}
        holder["run_id"] = run_id
        with open(path, "r+") as f:
            f.seek(0)
            f.write(json.dumps(holder))
            f.truncate()

    # ---------------------------------------------------------------- gc
    def gc(self, *, keep: int = 10, dry_run: bool = False) -> dict:
        """Remove all but the newest ``keep`` runs per pipeline, then every artifact and
        state folder no remaining run refers to. A run that a kept run's cached steps came
        from is kept too, so ``runs show`` never points at a removed run."""
        runs = self.list_runs()
        by_pipeline: dict[str, list[dict]] = {}
        for r in runs:
            by_pipeline.setdefault(r.get("pipeline", "?"), []).append(r)
        removed_runs = []
        for rs in by_pipeline.values():
            for r in rs[:-keep] if keep > 0 else rs:
                if r.get("status") == "running":
                    continue
                removed_runs.append(r["run_id"])
        removed_runs = _keep_referenced(runs, removed_runs)
        kept_keys = {s.get("key") for r in runs if r["run_id"] not in removed_runs for s in r.get("steps", {}).values()}
        removed_artifacts = []
        for sub in ("cache", "state"):
            d = self.root / sub
            if d.is_dir():
                for a in d.iterdir():
                    if a.name not in kept_keys:
                        removed_artifacts.append(f"{sub}/{a.name}")
        tmp = self.root / "tmp"
        stale_tmp = [p for p in tmp.iterdir()] if tmp.is_dir() else []
        if not dry_run:
            for rid in removed_runs:
                shutil.rmtree(self.run_dir(rid), ignore_errors=True)
            for rel in removed_artifacts:
                shutil.rmtree(self.root / rel, ignore_errors=True)
            for p in stale_tmp:
                pid = p.name.split("-")[1] if p.name.count("-") >= 2 else ""
                if not (pid.isdigit() and pid_alive(int(pid))):
                    shutil.rmtree(p, ignore_errors=True)
        return {"runs_removed": removed_runs, "artifacts_removed": removed_artifacts, "dry_run": dry_run}


def _keep_referenced(runs: list[dict], removed: list[str]) -> list[str]:
    """``removed`` less every run that a remaining run's cached steps were produced by."""
    by_id = {r["run_id"]: r for r in runs}
    gone = set(removed)
    todo = [r for r in runs if r["run_id"] not in gone]
    while todo:
        r = todo.pop()
        for step in r.get("steps", {}).values():
            origin = step.get("from_run")
            if origin in gone and origin in by_id:
                gone.discard(origin)
                todo.append(by_id[origin])
    return [rid for rid in removed if rid in gone]  # keeps the order


def _read_holder_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, json.JSONDecodeError):
        return None


def _read_holder(path: Path) -> str:
    h = _read_holder_json(path) or {}
    parts = [
        f"pid {h['pid']}" if h.get("pid") else None,
        f"run {h['run_id']}" if h.get("run_id") else None,
        f"since {h['since']}" if h.get("since") else None,
    ]
    return ", ".join(p for p in parts if p) or "holder unknown"


def _with_liveness(record: dict) -> dict:
    """A run recorded as running whose process is gone was interrupted (kill -9, power)."""
    if record.get("status") == "running" and record.get("host") == socket.gethostname():
        pid = record.get("pid")
        if pid and not pid_alive(int(pid)):
            record = dict(record, status="interrupted")
            record["steps"] = {
                k: (dict(v, status="interrupted") if v.get("status") == "running" else v)
                for k, v in record.get("steps", {}).items()
            }
    return record
