"""Time of the evaluate step per variant: each alternative's generation time, seconds per
request and p50/p95 request latency, as a ratio to the fine-tuned variant measured in the
same run (few-shot and rag prompts are longer, so they cost more per request).

    python benchmarks/bench_evaluate.py [--pipeline pipelines/quickstart.yaml] [--json]

The pipeline runs once in a temporary copy (training included) and its evaluate step is
timed; ``--rerun`` times a second evaluate run on its own (``--from evaluate``) as well.
Pass the SmolLM2 pipeline to measure the real model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _copy(pipeline: Path, dest: Path) -> Path:
    """The pipeline beside a copy of its data folder, so its deploy/store stay out of the repo."""
    shutil.copytree(pipeline.parent / "data", dest / "data")
    target = dest / pipeline.name
    shutil.copy(pipeline, target)
    return target


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pipeline", type=Path, default=REPO / "pipelines" / "quickstart.yaml")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rerun", action="store_true", help="time a second evaluate run (--from evaluate) too")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from ftpipe.engine import execute
    from ftpipe.progress import Reporter

    with tempfile.TemporaryDirectory(prefix="ftpipe-bench-eval-") as tmp:
        path = _copy(args.pipeline.resolve(), Path(tmp))
        first = execute(path, reporter=Reporter(quiet=True))
        if first.record["steps"].get("evaluate", {}).get("status") not in ("done", "cached"):
            sys.exit(f"the pipeline did not evaluate: {first.record['steps']}")
        step = first.record["steps"]["evaluate"]
        step_seconds = step.get("duration_s") or 0.0
        if args.rerun or step["status"] != "done":
            t0 = time.perf_counter()
            again = execute(path, from_step="evaluate", reporter=Reporter(quiet=True))
            step_seconds = time.perf_counter() - t0
            step = again.record["steps"]["evaluate"]
        report = json.loads((path.parent / ".ftpipe" / step["artifact"] / "report.json").read_text())
    variants = report["variants"]
    ft = variants["finetuned"]
    rows = []
    for name, v in variants.items():
        lat = v.get("latency") or {}
        rows.append(
            {
                "variant": name,
                "seconds": v["seconds"],
                "seconds_per_request": v.get("seconds_per_request"),
                "p50_s": lat.get("p50_s"),
                "p95_s": lat.get("p95_s"),
                "vs_finetuned": v["seconds"] / ft["seconds"] if ft["seconds"] else None,
            }
        )
    out = {
        "pipeline": str(args.pipeline),
        "n": report["n"],
        "evaluate_step_seconds": round(step_seconds, 2),
        "variants": rows,
        "recommendation": (report.get("recommendation") or {}).get("line"),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"evaluate step on {report['n']} examples: {step_seconds:.1f} s in all ({args.pipeline.name})")
    print(f"{'variant':<12} {'seconds':>8} {'s/request':>10} {'p50 s':>8} {'p95 s':>8} {'vs finetuned':>13}")
    for r in rows:

        def f(x: float | None, spec: str) -> str:
            return "n/a" if x is None else format(x, spec)

        print(
            f"{r['variant']:<12} {r['seconds']:>8.2f} {f(r['seconds_per_request'], '.4f'):>10} "
            f"{f(r['p50_s'], '.3f'):>8} {f(r['p95_s'], '.3f'):>8} {f(r['vs_finetuned'], '.2f') + 'x':>13}"
        )
    if out["recommendation"]:
        print(f"recommendation: {out['recommendation']}")


if __name__ == "__main__":
    main()
