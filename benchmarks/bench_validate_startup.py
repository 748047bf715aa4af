"""`ftpipe validate` cold start vs importing pydantic, yaml and click (target ≤ 1.5×).

python benchmarks/bench_validate_startup.py [--repeat 9]

Every program runs with its bytecode cached, as an installed ftpipe does (pip compiles it):
the warm-up run writes ``__pycache__`` even where PYTHONDONTWRITEBYTECODE is set, so that
the ratio does not charge ftpipe for compiling its source on every run. ``ftpipe plan`` and
``ftpipe --help`` are timed too, for the report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from _common import median, time_command


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ftpipe = shutil.which("ftpipe") or sys.exit("ftpipe is not on PATH: pip install -e .")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    base = time_command([sys.executable, "-c", "import pydantic, yaml, click"], repeat=args.repeat, env=env)
    # `import pydantic` is lazy: a program that defines one model pays for pydantic's machinery
    one_model = time_command(
        [
            sys.executable,
            "-c",
            "import yaml, click\nfrom pydantic import BaseModel\nclass M(BaseModel):\n    x: int\nM(x=1)",
        ],
        repeat=args.repeat,
        env=env,
    )
    validate = time_command([ftpipe, "validate", "pipelines/quickstart.yaml"], repeat=args.repeat, env=env)
    plan = time_command([ftpipe, "plan", "pipelines/quickstart.yaml"], repeat=args.repeat, env=env)
    help_ = time_command([ftpipe, "--help"], repeat=args.repeat, env=env)
    ratio = median(validate) / median(base)
    result = {
        "baseline_s": round(median(base), 4),
        "one_model_s": round(median(one_model), 4),
        "validate_s": round(median(validate), 4),
        "ratio": round(ratio, 3),
        "ratio_vs_one_model": round(median(validate) / median(one_model), 3),
        "plan_s": round(median(plan), 4),
        "help_s": round(median(help_), 4),
        "target": 1.5,
        "repeat": args.repeat,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"import pydantic, yaml, click : {median(base) * 1000:7.1f} ms (median of {args.repeat})")
        print(f"... + one pydantic model     : {median(one_model) * 1000:7.1f} ms")
        print(f"ftpipe validate quickstart   : {median(validate) * 1000:7.1f} ms")
        print(f"ratio                        : {ratio:7.2f}x (target <= 1.5x)")
        print(f"ratio vs one pydantic model  : {median(validate) / median(one_model):7.2f}x")
        print(f"ftpipe plan quickstart       : {median(plan) * 1000:7.1f} ms ({median(plan) / median(base):.2f}x)")
        print(f"ftpipe --help                : {median(help_) * 1000:7.1f} ms ({median(help_) / median(base):.2f}x)")


if __name__ == "__main__":
    main()
