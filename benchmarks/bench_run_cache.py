"""First `ftpipe run` of a pipeline vs an unchanged rerun (all cache hits; target ≈ 1 s).

python benchmarks/bench_run_cache.py [pipelines/quickstart.yaml]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO


def _run(ftpipe: str, pipeline: str, store: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [ftpipe, "run", pipeline, "--store", str(store), "--json", "--quiet"], cwd=REPO, capture_output=True, text=True
    )
    took = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        sys.exit(f"ftpipe run exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return took, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pipeline", nargs="?", default="pipelines/quickstart.yaml")
    ap.add_argument("--reruns", type=int, default=5)
    args = ap.parse_args()
    ftpipe = shutil.which("ftpipe") or sys.exit("ftpipe is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        first, _ = _run(ftpipe, args.pipeline, store)
        reruns = []
        for _ in range(args.reruns):
            took, summary = _run(ftpipe, args.pipeline, store)
            assert summary["up_to_date"], summary
            reruns.append(took)
    reruns.sort()
    med = reruns[len(reruns) // 2]
    print(f"first run        : {first:8.2f} s")
    print(f"cached rerun     : {med:8.2f} s (median of {len(reruns)}, all steps cache hits)")
    print(f"ratio            : {med / first:8.3f}x of the first run (target: rerun about 1 s)")


if __name__ == "__main__":
    main()
