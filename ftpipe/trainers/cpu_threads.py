"""How many threads CPU training uses.

PyTorch runs one thread per core, which assumes an idle machine: on a busy CPU its threads
wait on each other and training runs several times slower (3.7x measured with 2 threads on
2 cores at load 3). So a CPU job uses the cores that other processes leave free, unless the
user chose (``OMP_NUM_THREADS``) or a GPU trains.

What the others use is measured now (``/proc/stat``, on this process's cores, less this
process's own CPU time), not read from the 1-minute load average: that average still
counts work that has just ended, such as the prepare step that ran seconds before, and
halved the threads of a 2-core machine at a load of 0.6. The training job starts measuring
before it loads the model and data and decides just before it trains, so the measurement
costs no waiting unless loading took under ``MIN_WINDOW_S``. Where ``/proc/stat`` is
missing (macOS) the load average is all there is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

MIN_WINDOW_S = 0.25  # /proc/stat counts in ticks of 10 ms: a shorter window is too coarse
TAKEN = 0.75  # a core counts as taken by others when they keep it this busy


def allowed_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cpu_times(cores: list[int]) -> tuple[int, int] | None:
    """(all, idle) clock ticks of ``cores`` so far, from /proc/stat; None without it."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{c}" for c in cores}
    total = idle = 0
    seen = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        ticks = [int(v) for v in rest.split()[:8]]
        total += sum(ticks)
        idle += ticks[3] + ticks[4]
        seen += 1
    return (total, idle) if seen == len(wanted) else None


class BusyElsewhere:
    """Measures, from when it is made, how many cores of this process's CPU set other
    processes keep busy."""

    def __init__(self) -> None:
        self.cores = allowed_cores()
        self.since = time.monotonic()
        self.own = time.process_time()  # this process's CPU time, all its threads
        self.ticks = _cpu_times(self.cores)

    def now(self, min_window_s: float = MIN_WINDOW_S) -> float | None:
        """Cores busy elsewhere since this was made (0.0 to the number of cores), waiting
        until at least ``min_window_s`` has passed; None where it cannot be measured."""
        if self.ticks is None:
            return None
        left = min_window_s - (time.monotonic() - self.since)
        if left > 0:
            time.sleep(left)
        after, own, elapsed = _cpu_times(self.cores), time.process_time(), time.monotonic() - self.since
        if after is None or after[0] <= self.ticks[0]:
            return None
        ticks, idle = after[0] - self.ticks[0], after[1] - self.ticks[1]
        busy = (ticks - idle) / ticks * len(self.cores)
        return max(0.0, min(float(len(self.cores)), busy - (own - self.own) / elapsed))


def threads_for(cores: int, others: float) -> int:
    """Threads for a job on ``cores`` cores when others keep ``others`` of them busy."""
    return max(1, min(cores, cores - int(others + (1 - TAKEN))))


def choose_cpu_threads(log: Callable[[str], None], measuring: BusyElsewhere | None = None) -> None:
    """Lower torch's thread count to the cores left free (see the module docstring), as
    ``measuring`` has seen them since it was made (else over the next ``MIN_WINDOW_S``)."""
    import torch

    if torch.cuda.is_available() or os.environ.get("OMP_NUM_THREADS"):
        return
    cores = len(allowed_cores())
    others = (measuring or BusyElsewhere()).now()
    how = "busy now"
    if others is None:
        if not hasattr(os, "getloadavg"):
            return
        others, how = os.getloadavg()[0], "1-minute load"
    threads = threads_for(cores, others)
    if threads < torch.get_num_threads():
        torch.set_num_threads(threads)
        log(
            f"CPU busy ({how} {others:.1f} of {cores} cores): training with {threads} thread(s); "
            "set OMP_NUM_THREADS to choose"
        )
