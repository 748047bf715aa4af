"""CPU training uses the cores other processes leave free, measured now rather than read
from the 1-minute load average (ftpipe.trainers.cpu_threads)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ftpipe.trainers import cpu_threads
from ftpipe.trainers.cpu_threads import BusyElsewhere, allowed_cores, choose_cpu_threads, threads_for

needs_proc_stat = pytest.mark.skipif(
    cpu_threads._cpu_times(allowed_cores()) is None, reason="no /proc/stat (not Linux): the load average is used"
)


def test_a_core_counts_as_taken_when_others_keep_it_three_quarters_busy() -> None:
    assert [threads_for(2, o) for o in (0.0, 0.5, 0.74, 0.76, 1.7, 1.8, 5.0)] == [2, 2, 2, 1, 1, 1, 1]
    assert [threads_for(8, o) for o in (0.0, 0.6, 1.0, 3.3, 7.9)] == [8, 8, 7, 5, 1]


@pytest.fixture
def spinner() -> Iterator[subprocess.Popen]:
    """Another process keeping one core busy (for a minute at most, should the test's
    process die before it is killed)."""
    spin = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"
    proc = subprocess.Popen([sys.executable, "-c", spin])
    time.sleep(0.3)  # started and spinning
    yield proc
    proc.kill()
    proc.wait(timeout=30)


@needs_proc_stat
def test_another_process_keeping_a_core_busy_is_seen(spinner: subprocess.Popen) -> None:
    others = BusyElsewhere().now()
    # at least the spinner's core; more on a loaded machine, never more than there are cores
    assert others is not None and 0.75 <= others <= len(allowed_cores())


@needs_proc_stat
@pytest.mark.skipif(len(allowed_cores()) < 2, reason="one core: training already uses one thread")
def test_training_threads_leave_the_busy_core_alone(spinner: subprocess.Popen, monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(len(allowed_cores()))
    lines: list[str] = []
    try:
        choose_cpu_threads(lines.append)
        assert torch.get_num_threads() <= len(allowed_cores()) - 1
        assert len(lines) == 1 and "busy now" in lines[0] and "OMP_NUM_THREADS" in lines[0]
    finally:
        torch.set_num_threads(before)


def test_the_users_choice_wins(spinner: subprocess.Popen, monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = torch.get_num_threads()
    lines: list[str] = []
    try:
        torch.set_num_threads(2)
        choose_cpu_threads(lines.append)
        assert torch.get_num_threads() == 2 and lines == []
    finally:
        torch.set_num_threads(before)
