"""What a Space made by the ``hf-spaces`` executor runs (its Dockerfile's CMD is
``python -m ftpipe.executors.space_entry``), and what a Job made by ``hf-jobs`` runs.

1. download the run's inputs (the pipeline file, its local data, the request) from the
   private dataset repo, at the revision the Dockerfile pins;
2. seed the run store with this plan's finished steps already in the results repo;
3. run ``ftpipe run <pipeline> --executor local --json`` — the command a laptop runs;
4. push the run record, its logs and the artifacts it references to the private results
   repo in one commit, together with ``requests/<request id>.json``: the client's
   completion signal (a Space's stage cannot be one: the Hub shows RUNTIME_ERROR when the
   main process exits, whatever its code);
5. pause its own Space, so that a Space whose client went away stops costing money.

Everything comes from the environment: the Dockerfile's ENV (repos, revision, Space id) and
the Space's secrets (HF_TOKEN and the variables the pipeline references). While it works it
answers HTTP on $FTPIPE_STATUS_PORT, so the Hub sees a healthy app.

This module is imported by the client for its constants: it imports nothing heavy at the top.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

ENV_INPUTS = "FTPIPE_INPUTS_REPO"
ENV_REVISION = "FTPIPE_INPUTS_REVISION"
ENV_RESULTS = "FTPIPE_RESULTS_REPO"
ENV_SPACE = "FTPIPE_SPACE_ID"
ENV_PORT = "FTPIPE_STATUS_PORT"  # "" = no status server; "0" = any free port
ENV_WORKDIR = "FTPIPE_SPACE_WORKDIR"
ENV_SELF_PAUSE = "FTPIPE_SELF_PAUSE"
TOKEN_VAR = "HF_TOKEN"
REQUEST_FILE = ".ftpipe-space/request.json"
LOG_TAIL = 40
_TEXT_SUFFIXES = (".json", ".log", ".yaml", ".yml", ".txt", ".md")


def result_file(request_id: str) -> str:
    """Where the results repo holds a request's outcome (written last, in the run's commit)."""
    return f"requests/{request_id}.json"


def artifact_rels(record: dict) -> list[str]:
    """The store folders (``cache/<key>``) a run record refers to."""
    rels = {s.get("artifact") for s in record.get("steps", {}).values()}
    return sorted(r for r in rels if isinstance(r, str) and r.startswith("cache/"))


def redact_all(text: str, secrets: list[str]) -> str:
    from ftpipe.spec.interpolate import redact

    return redact(text, secrets)


class _Entry:
    def __init__(self, env: os._Environ | dict[str, str]) -> None:
        missing = [v for v in (ENV_INPUTS, ENV_REVISION, ENV_RESULTS, TOKEN_VAR) if not env.get(v)]
        if missing:
            raise SystemExit(
                f"ftpipe space entry: {', '.join(missing)} not set (the Dockerfile sets the repos, "
                "the Space's secrets the token)"
            )
        from huggingface_hub import HfApi

        self.env = env
        self.token = env[TOKEN_VAR]
        self.api = HfApi(token=self.token)
        self.inputs, self.revision, self.results = env[ENV_INPUTS], env[ENV_REVISION], env[ENV_RESULTS]
        self.space_id = env.get(ENV_SPACE) or env.get("SPACE_ID")  # the Hub sets SPACE_ID in every Space
        self.work = Path(env.get(ENV_WORKDIR) or tempfile.mkdtemp(prefix="ftpipe-space-"))
        self.secrets = [self.token]
        self.phase = "starting"
        self.tail: deque[str] = deque(maxlen=LOG_TAIL)
        self.child: subprocess.Popen | None = None
        self.terminated = False

    # ------------------------------------------------------------------ steps
    def run(self) -> int:
        request: dict[str, Any] = {}
        try:
            self.phase = "downloading inputs"
            inputs_dir = Path(
                self._retry(
                    "downloading the inputs",
                    lambda: self.api.snapshot_download(
                        self.inputs, repo_type="dataset", revision=self.revision, local_dir=self.work / "inputs"
                    ),
                )
            )
            request = json.loads((inputs_dir / REQUEST_FILE).read_text())
            if request.get("scheduled"):  # one request file, read by every run of a scheduled Job
                from ftpipe.store import RunStore

                request["request_id"] += "-" + RunStore(self.work).new_run_id()
            self.secrets += [self.env[n] for n in request.get("secret_env", []) if self.env.get(n)]
            pipeline = inputs_dir / request["pipeline"]
            store = self.work / "store"
            self.phase = "seeding the cache"
            seeded = self._seed(store, request)
            self.phase = "running"
            code, summary = self._ftpipe_run(pipeline, store, request)
            self.phase = "pushing results"
            self._push(request, store, code, summary, seeded)
            return 0
        except BaseException as exc:  # noqa: BLE001 - whatever happened, the client must hear of it
            msg = redact_all(f"{type(exc).__name__}: {exc}", self.secrets)
            self._say(f"ftpipe space entry failed while {self.phase}: {msg}")
            if request.get("request_id"):
                try:
                    self._push_outcome(
                        request,
                        {"exit_code": 130 if self.terminated else 1, "run_id": None, "error": f"{self.phase}: {msg}"},
                        None,
                    )
                except Exception as push_exc:  # noqa: BLE001
                    self._say(f"could not push the failure either: {redact_all(str(push_exc), self.secrets)}")
                    return 1
                return 0
            return 1

    def _seed(self, store: Path, request: dict) -> set[str]:
        """Bring this plan's finished steps from the results repo into the store: a Space
        starts empty, and an unchanged step should be a cache hit there as it is here."""
        if request.get("force"):
            return set()
        keys = set(request.get("plan", {}).values())  # planned by the same (pinned) ftpipe on the client
        files = self._retry("listing the results", lambda: self.api.list_repo_files(self.results, repo_type="dataset"))
        present = {
            f.split("/")[1]
            for f in files
            if f.startswith("cache/") and f.endswith("/_result.json") and f.count("/") == 2
        }
        wanted = sorted(keys & present)
        if not wanted:
            return set()
        self._say(f"reusing {len(wanted)} finished step{'s' if len(wanted) != 1 else ''} from {self.results}")
        tmp = self.work / "seed"
        self._retry(
            "downloading finished steps",
            lambda: self.api.snapshot_download(
                self.results, repo_type="dataset", local_dir=tmp, allow_patterns=[f"cache/{k}/**" for k in wanted]
            ),
        )
        for key in wanted:
            dest = store / "cache" / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            if (tmp / "cache" / key / "_result.json").exists() and not dest.exists():
                os.replace(tmp / "cache" / key, dest)
        shutil.rmtree(tmp, ignore_errors=True)
        return set(wanted)

    def _ftpipe_run(self, pipeline: Path, store: Path, request: dict) -> tuple[int, dict | None]:
        cmd = [
            sys.executable,
            "-m",
            "ftpipe",
            "run",
            pipeline.name,
            "--executor",
            "local",
            "--json",
            "--store",
            str(store),
        ]
        if request.get("force"):
            cmd.append("--force")
        if request.get("from_step"):
            cmd += ["--from", request["from_step"]]
        self._say("$ ftpipe " + " ".join(cmd[3:]))
        self.child = subprocess.Popen(
            cmd, cwd=pipeline.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace"
        )
        out_lines: list[str] = []
        readers = [
            threading.Thread(target=self._pump, args=(self.child.stdout, out_lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.child.stderr, None), daemon=True),
        ]
        for t in readers:
            t.start()
        code = self.child.wait()
        for t in readers:
            t.join()
        summary = None
        for line in reversed(out_lines):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and "run_id" in obj:
                summary = obj
                break
        return code, summary

    def _pump(self, stream: Any, keep: list[str] | None) -> None:
        for line in stream:
            line = line.rstrip("\n")
            if keep is not None:
                keep.append(line)
                if line.startswith("{"):
                    continue  # the JSON summary goes into the result, not the log
            self._say(line)

    def _push(self, request: dict, store: Path, code: int, summary: dict | None, seeded: set[str]) -> None:
        staging = self.work / "push"
        record: dict = {}
        run_id = (summary or {}).get("run_id")
        if run_id and (store / "runs" / run_id / "run.json").exists():
            shutil.copytree(store / "runs" / run_id, staging / "runs" / run_id)
            for path in (staging / "runs" / run_id).rglob("*"):
                if path.is_file() and path.suffix in _TEXT_SUFFIXES:
                    text = path.read_text(errors="replace")
                    clean = redact_all(text, self.secrets)
                    if clean != text:
                        path.write_text(clean)
            record = json.loads((staging / "runs" / run_id / "run.json").read_text())
            for rel in artifact_rels(record):
                if rel.split("/", 1)[1] not in seeded and (store / rel / "_result.json").exists():
                    shutil.copytree(store / rel, staging / rel)
        outcome = {
            "exit_code": code,
            "run_id": run_id if record else None,
            "status": record.get("status"),
            "summary": summary,
            "artifacts": artifact_rels(record),
        }
        if not record:
            outcome["error"] = f"ftpipe run ended without a run record (exit {code})"
        self._push_outcome(request, outcome, staging)

    def _push_outcome(self, request: dict, outcome: dict, staging: Path | None) -> None:
        from ftpipe import __version__
        from ftpipe.store import now_iso

        staging = staging or self.work / "push-failure"
        outcome.update(
            request_id=request["request_id"],
            space_id=self.space_id,
            inputs_revision=self.revision,
            ftpipe=__version__,
            finished_at=now_iso(),
            log_tail=list(self.tail),
        )
        path = staging / result_file(request["request_id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(redact_all(json.dumps(outcome, indent=2, default=str), self.secrets) + "\n")
        status = outcome.get("status") or "failed"
        # safe to repeat: identical content makes no second commit
        self._retry(
            "pushing the outcome",
            lambda: self.api.upload_folder(
                repo_id=self.results,
                repo_type="dataset",
                folder_path=staging,
                commit_message=f"ftpipe run {outcome.get('run_id') or request['request_id']}: {status}",
            ),
        )
        self._say(f"pushed the outcome to {self.results} ({result_file(request['request_id'])})")

    # ------------------------------------------------------------------ helpers
    def _retry(self, what: str, fn: Any) -> Any:
        """A Hub call through the shared retry helper (429/5xx/dropped connections)."""
        from ftpipe.remote.retry import call_with_retries

        return call_with_retries(fn, what=what, log=self._say, secrets=self.secrets)

    def _say(self, line: str) -> None:
        line = redact_all(line, self.secrets)
        self.tail.append(line)
        print(line, flush=True)

    def on_term(self, signum: int, frame: Any) -> None:
        """The Space is being stopped (paused, restarted): let the run record that it was interrupted."""
        self.terminated = True
        if self.phase == "done":
            raise SystemExit(0)  # pausing our own Space stops this container: the work is pushed
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
        else:
            raise KeyboardInterrupt

    def pause_self(self) -> None:
        if not self.space_id or self.env.get(ENV_SELF_PAUSE, "1") == "0":
            return
        try:
            self.api.pause_space(self.space_id)
        except Exception as exc:  # noqa: BLE001 - the client pauses it too
            self._say(f"could not pause {self.space_id}: {redact_all(str(exc), self.secrets)}")


def _status_server(entry: _Entry, port: str) -> None:
    """Answer the Hub's health checks (a Docker Space must serve its app_port) with the phase."""
    if port == "":
        return
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"ftpipe": "space run", "phase": entry.phase}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="status").start()


def main() -> int:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # progress bars garble the Space's log
    entry = _Entry(os.environ)
    signal.signal(signal.SIGTERM, entry.on_term)
    _status_server(entry, os.environ.get(ENV_PORT, ""))
    try:
        return entry.run()
    finally:
        entry.phase = "done"
        entry.pause_self()


if __name__ == "__main__":
    sys.exit(main())
