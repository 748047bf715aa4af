"""pipelines/recipes-smollm2.yaml, cold, through `ftpipe run`: wall time per step, and
token_f1 / exact_match / rouge_l for the fine-tune, the base model (zero-shot) and few-shot
prompting, with the fine-tune's margins. Target (issue 13): the whole run in at most 15
minutes on a 2-core CPU, and the fine-tune ahead of both baselines.

    python benchmarks/bench_real_model.py            # cold: a fresh cache, so the GGUF conversion counts
    python benchmarks/bench_real_model.py --warm     # reuse the converted model in ftpipe's cache
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _real_model import (
    PIPELINE,
    copy_pipeline,
    evaluation_table,
    machine_line,
    run_pipeline,
    step_table,
)

BUDGET_S = 15 * 60


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", type=Path, default=PIPELINE)
    ap.add_argument("--warm", action="store_true", help="keep ftpipe's cache (skips the GGUF conversion)")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = ap.parse_args()
    before = machine_line()
    with tempfile.TemporaryDirectory(prefix="ftpipe-bench-real-") as tmp:
        path = copy_pipeline(args.pipeline, Path(tmp) / "pipelines")
        out = run_pipeline(path, cache=None if args.warm else Path(tmp) / "cache")
    after = machine_line()
    if out.report is None:
        print(out.stderr[-4000:], file=sys.stderr)
        print(f"no evaluation report (exit {out.exit_code})", file=sys.stderr)
        return 1
    variants = out.report["variants"]
    if args.json:
        print(
            json.dumps(
                {
                    "wall_s": out.wall_s,
                    "exit_code": out.exit_code,
                    "cold": not args.warm,
                    "steps": {k: v.get("duration_s") for k, v in out.record.get("steps", {}).items()},
                    "metrics": {k: v["metrics"] for k, v in variants.items()},
                    "machine": [before, after],
                },
                indent=2,
            )
        )
        return 0
    print(f"{args.pipeline.name}, {'warm' if args.warm else 'cold'} — machine at start: {before}; at end: {after}\n")
    print(step_table(out) + "\n")
    print(evaluation_table(out.report) + "\n")
    f1 = {k: v["metrics"].get("token_f1") or 0.0 for k, v in variants.items()}
    wins = all(f1["finetuned"] > v for k, v in f1.items() if k != "finetuned")
    print(
        f"total {out.wall_s / 60:.1f} min (target ≤ {BUDGET_S // 60} min: {'met' if out.wall_s <= BUDGET_S else 'MISSED'}); "
        f"fine-tune {'ahead of' if wins else 'NOT ahead of'} every baseline on token_f1"
    )
    return 0 if out.exit_code in (0, 3) else out.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
