"""The Ray job's side of the ``ray`` executor: ``python -m ftpipe.executors.ray_job``.

The executor submits this module as the job's entrypoint. It runs the pipeline with the
local engine on the cluster (exactly what ``ftpipe run FILE --executor local`` does, with
the run id the client chose) and ends its output with one ``FTPIPE_RAY_RESULT {json}``
line that carries the exit code and the run record, so the client gets the outcome back
even when it cannot see the cluster's files.

Where the job keeps its run store (in this order):

1. ``--storage PATH``: a folder the cluster (and usually the client) sees: used directly.
2. ``--storage URI`` (s3://, gs://, abfs://, hdfs:// … anything ``pyarrow.fs`` opens):
   the steps' cached results and checkpoints are pulled into a node-local store before
   the run and the run, its new results and its checkpoints are pushed after it.
3. ``--client-store PATH --nonce N``: the client's own store, if this node sees it (a
   local cluster, or a shared home): the client wrote N there, so finding it proves it.
4. Otherwise ``$FTPIPE_STORE`` or ``~/.cache/ftpipe/ray-store`` on the node that runs
   the job: cached steps are reused when a later job lands on the same node, and the
   artifacts stay there (the client gets the run record only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable

RESULT_MARKER = "FTPIPE_RAY_RESULT "
STATE_DIR = ("jobs", "ray")  # <store>/jobs/ray/<pipeline>.json: the in-flight submission


def is_uri(storage: str) -> bool:
    return "://" in storage and not storage.startswith("file://")


def storage_path(storage: str) -> Path:
    return Path(storage[len("file://") :] if storage.startswith("file://") else storage).expanduser()


def state_file(store: Path, pipeline: str) -> Path:
    return store.joinpath(*STATE_DIR, f"{pipeline}.json")


class RemoteStore:
    """A run store reached through ``pyarrow.fs`` (a URI, or a path on this machine).

    Results are copied with ``_result.json`` last, so a copy cut short is never mistaken
    for a finished step (the store treats a cache entry as complete once it exists)."""

    def __init__(self, location: str) -> None:
        try:
            from pyarrow import fs
        except ImportError:
            from ftpipe.errors import MissingDependency

            raise MissingDependency("pyarrow", "ray", f"executor.storage {location!r}") from None
        self._fs_mod = fs
        target = location if is_uri(location) else str(storage_path(location).resolve())
        self.fs, self.base = fs.FileSystem.from_uri(target)
        self.base = self.base.rstrip("/")
        self.local = fs.LocalFileSystem()

    def _p(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self._p(rel)).type != self._fs_mod.FileType.NotFound

    def _files(self, filesystem: Any, root: str) -> list[str]:
        sel = self._fs_mod.FileSelector(root, recursive=True, allow_not_found=True)
        infos = filesystem.get_file_info(sel)
        rels = [i.path[len(root.rstrip("/")) + 1 :] for i in infos if i.type == self._fs_mod.FileType.File]
        return sorted(rels, key=lambda r: (r.endswith("_result.json"), r))

    def _copy(self, src_fs: Any, src: str, dst_fs: Any, dst: str) -> int:
        n = 0
        for rel in self._files(src_fs, src):
            parent = f"{dst}/{rel}".rsplit("/", 1)[0]
            dst_fs.create_dir(parent, recursive=True)
            with src_fs.open_input_stream(f"{src}/{rel}") as fin, dst_fs.open_output_stream(f"{dst}/{rel}") as fout:
                while chunk := fin.read(1 << 22):
                    fout.write(chunk)
            n += 1
        return n

    def pull(self, rel: str, store: Path) -> bool:
        """Copy ``rel`` (a folder) into ``store``; a cache entry lands atomically."""
        if not self.exists(rel):
            return False
        dest = store / rel
        tmp = store / "tmp" / f"pull-{os.getpid()}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self._copy(self.fs, self._p(rel), self.local, str(tmp))
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        return True

    def push(self, store: Path, rel: str) -> int:
        src = store / rel
        if not src.exists():
            return 0
        return self._copy(self.local, str(src), self.fs, self._p(rel))


def parse_result(log: str) -> dict | None:
    """The job's result line (its last ``FTPIPE_RAY_RESULT {json}``), if it wrote one."""
    for line in reversed(log.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                return json.loads(line[len(RESULT_MARKER) :])
            except ValueError:
                return None
    return None


def artifact_rels(record: dict) -> list[str]:
    return [s["artifact"] for s in record.get("steps", {}).values() if s.get("artifact")]


def pull_for_plan(remote: RemoteStore, store: Path, keys: Iterable[str], log) -> None:
    got = 0
    for key in keys:
        if not (store / "cache" / key / "_result.json").exists() and remote.exists(f"cache/{key}/_result.json"):
            got += remote.pull(f"cache/{key}", store)
        if remote.exists(f"state/{key}") and not (store / "state" / key).exists():
            remote.pull(f"state/{key}", store)
    log(f"storage: {got} cached step result{'s' if got != 1 else ''} pulled from {remote.base}")


def push_run(remote: RemoteStore, store: Path, record: dict, log) -> None:
    remote.push(store, f"runs/{record['run_id']}")
    for rel in artifact_rels(record):
        if not remote.exists(f"{rel}/_result.json"):
            remote.push(store, rel)
    for s in record.get("steps", {}).values():
        if s.get("status") in ("failed", "interrupted", "running") and s.get("key"):
            remote.push(store, f"state/{s['key']}")  # checkpoints to resume from
    log(f"storage: run {record['run_id']} pushed to {remote.base}")


# --------------------------------------------------------------------------- the job


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _choose_store(args: argparse.Namespace, pipeline: str) -> tuple[Path, str, RemoteStore | None]:
    if args.storage and is_uri(args.storage):
        local = Path(os.environ.get("FTPIPE_RAY_SYNC_DIR", Path.home() / ".cache" / "ftpipe" / "ray-sync"))
        local = local / hashlib.sha256(args.storage.encode()).hexdigest()[:16]
        return local, f"synced with {args.storage}", RemoteStore(args.storage)
    if args.storage:
        return storage_path(args.storage), "executor.storage", None
    if args.client_store and args.nonce:
        try:
            seen = json.loads(state_file(Path(args.client_store), pipeline).read_text()).get("nonce")
        except (OSError, ValueError):
            seen = None
        if seen == args.nonce:
            return Path(args.client_store), "the client's store, shared with this node", None
    env = os.environ.get("FTPIPE_STORE")
    path = Path(env) if env else Path.home() / ".cache" / "ftpipe" / "ray-store"
    return path, "on the cluster node (set executor.storage to bring artifacts back)", None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftpipe.executors.ray_job")
    parser.add_argument("pipeline")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--storage")
    parser.add_argument("--client-store")
    parser.add_argument("--nonce")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--from", dest="from_step")
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)

    from ftpipe.engine import execute, load_checked
    from ftpipe.errors import EXIT_STEP_FAILED, FtpipeError
    from ftpipe.planner import build_plan
    from ftpipe.progress import Reporter

    path = Path(args.pipeline)
    result: dict[str, Any] = {"exit_code": EXIT_STEP_FAILED, "run_id": args.run_id, "record": None}
    remote = None
    store = None
    try:
        loaded = load_checked(path)
        plan = build_plan(loaded.pipeline, path)
        store, how, remote = _choose_store(args, plan.pipeline)
        store = store.resolve()
        result.update(store=str(store), store_mode=how)
        if not args.quiet:
            _say(f"ray job: run store {store} ({how})")
        if remote is not None:
            pull_for_plan(remote, store, [s.key for s in plan.steps], _say if not args.quiet else lambda _t: None)
        outcome = execute(
            path,
            store=store,
            force=args.force,
            from_step=args.from_step,
            wait=args.wait,
            reporter=Reporter(quiet=args.quiet, live=False),
            executor_name="ray",
            run_id=args.run_id,
        )
        result.update(exit_code=outcome.exit_code, record=outcome.record)
    except FtpipeError as exc:
        _say(f"error: {exc}")
        result.update(exit_code=exc.exit_code, error=str(exc))
    finally:
        record = result.get("record")
        if remote is not None and store is not None and record:
            try:
                push_run(remote, store, record, _say)
            except Exception as exc:  # noqa: BLE001 - the outcome still goes back in the log
                _say(f"error: could not push the run to {args.storage}: {type(exc).__name__}: {exc}")
        print(RESULT_MARKER + json.dumps(result, default=str), flush=True)
    return int(result["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
