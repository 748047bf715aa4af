"""Shared timing helpers for the benchmarks."""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def time_command(cmd: list[str], *, repeat: int = 7, cwd: Path = REPO, env: dict | None = None) -> list[float]:
    """Wall seconds of each of ``repeat`` runs of ``cmd`` (after one warm-up run)."""
    subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=False)
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=False)
        out.append(time.perf_counter() - t0)
        if proc.returncode not in (0,):
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)
