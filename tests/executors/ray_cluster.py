"""A real local Ray cluster for the executor tests (a module-scoped fixture; import it into
the test module), with token auth.

The cluster runs in its own temp dir, on free ports, in its own process session: teardown
ends exactly the processes it started (SIGTERM to ``ray start --block``, then the session's
process group), never other Ray clusters on the machine as ``ray stop`` would.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_RAY_VARS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_JOB_HEADERS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    address: str
    token: str
    log: Path

    def client_env(self, pythonpath: Path | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _RAY_VARS}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_ADDRESS=self.address)
        if pythonpath is not None:
            # the plugin's folder, then this checkout (not whatever ftpipe the venv installs)
            env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), str(Path(__file__).resolve().parents[2])])
        env.update(extra)
        return env

    def api(self, path: str) -> object:
        req = urllib.request.Request(self.address + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def jobs(self, pipeline: str | None = None) -> list[dict]:
        jobs = self.api("/api/jobs/")
        assert isinstance(jobs, list)
        return [j for j in jobs if pipeline is None or (j.get("metadata") or {}).get("ftpipe_pipeline") == pipeline]

    def job(self, submission_id: str) -> dict:
        out = self.api(f"/api/jobs/{submission_id}")
        assert isinstance(out, dict)
        return out


@pytest.fixture(scope="module", name="ray_cluster")
def ray_cluster_fixture() -> Cluster:
    if shutil.which("ray") is None:
        pytest.skip("ray is not installed (pip install 'ftpipe[ray]')")
    # sockets live under the temp dir: keep its path short
    tmp = Path(tempfile.mkdtemp(prefix="ftr-", dir="/tmp"))
    token = secrets.token_hex(24)
    dash = free_port()
    ports = {
        "--port": free_port(),
        "--dashboard-port": dash,
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
    }
    env = {k: v for k, v in os.environ.items() if k not in _RAY_VARS}
    cache = Path(os.environ.get("FTPIPE_TEST_CACHE", REPO / ".pytest_cache" / "ftpipe-cache"))
    cache.mkdir(parents=True, exist_ok=True)
    (tmp / "home").mkdir()
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        HOME=str(tmp / "home"),
        FTPIPE_CACHE=str(cache),
        HF_HUB_OFFLINE="1",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
    )
    log = tmp / "ray-start.log"
    cmd = [
        "ray",
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--temp-dir={tmp / 'r'}",
        "--disable-usage-stats",
    ]
    cmd += [f"{k}={v}" for k, v in ports.items()]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = Cluster(f"http://127.0.0.1:{dash}", token, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                cluster.api("/api/jobs/")
                break
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                if time.monotonic() > deadline:
                    pytest.fail(f"the Ray cluster did not come up in 120 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield cluster
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of this cluster outlived `ray start`
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
