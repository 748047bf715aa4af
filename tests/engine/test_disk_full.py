"""The disk filling up in the middle of a run (issue 20): the step ends with a message that
says what to do (no traceback, no "internal error"), the store stays readable, and the
next run, once there is room, resumes: finished steps are cache hits and training
continues from its last checkpoint.

The store is a 5 MB tmpfs (a real full disk: `mount` works as root). Where mounting is
not allowed (CI without root), a per-file size limit (`ulimit -f`, RLIMIT_FSIZE) on the
run's process is the other real way to make its writes fail; the assertions that need a
full disk, not a size limit, are the tmpfs ones."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@dataclass
class SmallDisk:
    store: Path
    kind: str  # "tmpfs" or "ulimit"
    grow: Callable[[], None]
    limit: Callable[[], None] | None  # preexec_fn for the run's process


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    mnt = tmp_path / "store"
    mnt.mkdir()
    # FTPIPE_TEST_DISK=ulimit exercises the fallback where mounting would work
    mounted = (
        os.environ.get("FTPIPE_TEST_DISK") != "ulimit"
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mnt)], capture_output=True, check=False
        ).returncode
        == 0
    )
    if not mounted:
        yield SmallDisk(mnt, "ulimit", lambda: None, _limit_file_size)
        return
    try:
        yield SmallDisk(
            mnt, "tmpfs", lambda: subprocess.run(["mount", "-o", "remount,size=128m", str(mnt)], check=True), None
        )
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _pipeline(tmp_path: Path) -> Path:
    folder = tmp_path / "pipelines"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "recipes.jsonl").write_bytes((REPO / "pipelines" / "data" / "recipes.jsonl").read_bytes())
    # the quickstart, cut down: a few steps, a checkpoint after each, one baseline, no gate
    doc = yaml.safe_load((REPO / "pipelines" / "quickstart.yaml").read_text())
    doc["trainer"]["hyperparameters"].update(epochs=1, max_steps=4)
    doc["trainer"]["checkpoint"] = {"every_steps": 1, "keep": 2}
    ev = doc["evaluate"]
    for key in ("few_shot", "rag", "cost", "gate"):
        ev.pop(key, None)
    ev["baselines"] = ["base"]
    ev["generation"]["max_new_tokens"] = 6
    text = yaml.safe_dump(doc, sort_keys=False)
    path = folder / "quickstart.yaml"
    path.write_text(text)
    return path


def _ftpipe(*args: str, limit: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ftpipe", *args],
        capture_output=True,
        text=True,
        timeout=900,
        preexec_fn=limit,
        check=False,
        env=dict(os.environ, FTPIPE_DEBUG=""),
    )


def test_disk_full_mid_run_is_a_clear_failure_and_the_next_run_resumes(tmp_path: Path, small_disk: SmallDisk) -> None:
    path = _pipeline(tmp_path)
    store = str(small_disk.store)
    first = _ftpipe("run", str(path), "--store", store, limit=small_disk.limit)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "the disk is full" in first.stderr and "run again" in first.stderr, first.stderr[-3000:]
    assert "Traceback" not in first.stderr and "internal error" not in first.stderr

    # the store is readable: the run is listed, with the step that failed and why
    shown = _ftpipe("runs", "show", "latest", "--json", "--store", store)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    failed = [sid for sid, s in record["steps"].items() if s["status"] == "failed"]
    assert len(failed) == 1 and "the disk is full" in record["steps"][failed[0]]["error"]
    assert record["status"] == "failed"
    leftovers = [p for p in Path(store).rglob("*") if p.name.endswith(".tmp") or p.name.startswith("reserve-")]
    assert leftovers == []
    if small_disk.kind == "tmpfs":
        assert failed == ["train"] and record["steps"]["prepare"]["status"] == "done"

    small_disk.grow()
    second = _ftpipe("run", str(path), "--store", store, "--json")
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    done_before = [sid for sid, s in record["steps"].items() if s["status"] == "done"]
    assert done_before and all(summary["steps"][sid] == "cached" for sid in done_before), summary
    assert summary["steps"]["deploy.local"] == "done"
    if small_disk.kind == "tmpfs":
        train_log = Path(store) / "runs" / summary["run_id"] / "logs" / "train.log"
        assert "resuming from checkpoint-" in train_log.read_text()
