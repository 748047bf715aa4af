"""Real processes: kill -9 at several points, concurrent runs, stale locks, and a killed
run that still lists and shows."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine.helpers import runner_cmd, write_pipeline

pytestmark = pytest.mark.integration


def _wait_for(path: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def _wait_for_text(proc: subprocess.Popen, text: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    seen = ""
    while text not in seen:
        if time.monotonic() > end or proc.poll() is not None:
            raise AssertionError(f"never saw {text!r}; got {seen!r}")
        seen += proc.stderr.readline()


def _ftpipe(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ftpipe", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


@pytest.mark.parametrize("kill_in", ["prepare", "train", "gate", "deploy.out0"])
def test_kill_9_anywhere_then_resume(tmp_path: Path, kill_in: str) -> None:
    p = write_pipeline(tmp_path)
    calls, marker = tmp_path / "calls.txt", tmp_path / "marker"
    proc = subprocess.Popen(runner_cmd(p, calls, kill_in, marker), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(marker)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # the killed run is still readable, and says it was interrupted
    listed = _ftpipe("runs", "list", "--json", "--store", str(tmp_path / ".ftpipe"))
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert len(runs) == 1 and runs[0]["status"] == "interrupted"
    assert runs[0]["steps"][kill_in] == "interrupted"
    shown = _ftpipe("runs", "show", runs[0]["run_id"], "--store", str(tmp_path / ".ftpipe"))
    assert shown.returncode == 0 and "interrupted" in shown.stdout

    # the next run redoes only what did not finish
    before = calls.read_text().split()
    done_before = before[:-1]
    calls.unlink()
    proc2 = subprocess.run(runner_cmd(p, calls), capture_output=True, text=True, timeout=120)
    assert proc2.returncode == 0, proc2.stderr
    rerun = calls.read_text().split()
    assert rerun[0] == kill_in and not set(done_before) & set(rerun)


def test_second_run_exits_4_then_waits_with_wait(tmp_path: Path) -> None:
    p = write_pipeline(tmp_path)
    calls, marker = tmp_path / "calls.txt", tmp_path / "marker"
    holder = subprocess.Popen(
        runner_cmd(p, calls, "train", marker), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(marker)
        second = _ftpipe("run", str(p))
        assert second.returncode == 4
        assert "another run of 'enginetest' is in progress" in second.stderr and "--wait" in second.stderr
        assert "Traceback" not in second.stderr
        # the refused run leaves the holder's note alone (issue 12, 3.2): a third one still names it
        note = json.loads((tmp_path / ".ftpipe" / "locks" / "enginetest.lock").read_text())
        assert note["pid"] == holder.pid and note.get("run_id")
        third = _ftpipe("run", str(p))
        assert third.returncode == 4 and f"pid {holder.pid}, run {note['run_id']}" in third.stderr, third.stderr
        # --wait queues behind the holder: when the holder goes, the waiter runs
        waiter = subprocess.Popen(
            runner_cmd(p, tmp_path / "calls2.txt", wait=True), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        _wait_for_text(waiter, "waiting for the lock")
        assert waiter.poll() is None
        holder.kill()
        _, err = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, err
        assert (tmp_path / "calls2.txt").read_text().split()[0] == "train"
    finally:
        holder.kill()
        holder.wait()


def test_wait_flag_and_stale_lock(tmp_path: Path) -> None:
    p = write_pipeline(tmp_path)
    calls, marker = tmp_path / "calls.txt", tmp_path / "marker"
    holder = subprocess.Popen(
        runner_cmd(p, calls, "train", marker), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_for(marker)
    waiter = subprocess.Popen([sys.executable, "-m", "ftpipe", "plan", str(p)], stdout=subprocess.PIPE, text=True)
    waiter.wait(timeout=60)  # planning never needs the lock
    assert waiter.returncode == 0
    holder.send_signal(signal.SIGKILL)  # leaves its lock file behind
    holder.wait()
    lock = tmp_path / ".ftpipe" / "locks" / "enginetest.lock"
    assert json.loads(lock.read_text())["pid"] == holder.pid
    proc = subprocess.run(runner_cmd(p, tmp_path / "calls2.txt"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"cleared a stale lock left by pid {holder.pid}" in proc.stderr
