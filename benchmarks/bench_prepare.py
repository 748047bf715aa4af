"""Prepare time and peak memory for 100k and 1M generated chat rows, to show how cost
grows with the data (memory should stay nearly flat: rows stream through a file).

    python benchmarks/bench_prepare.py [--sizes 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    from ftpipe.contracts import StepResult
    from ftpipe.engine import execute
    from ftpipe.progress import Reporter

    def only_prepare(step, ctx):
        if step.kind == "prepare":
            from ftpipe.data.prepare import run_prepare
            return run_prepare(ctx)
        raise KeyboardInterrupt  # stop after prepare
    t0 = time.perf_counter()
    out = execute(Path(sys.argv[1]), step_runner=only_prepare, reporter=Reporter(quiet=True))
    took = time.perf_counter() - t0
    m = out.record["steps"]["prepare"].get("metrics", {})
    print(json.dumps({"seconds": took, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rows": m.get("train_rows", 0) + m.get("validation_rows", 0) + m.get("test_rows", 0)}))
""")

WORDS = "flour sugar butter salt eggs milk water oil garlic onion pepper tomato basil cheese rice lemon".split()


def generate(path: Path, n: int) -> None:
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(n):
            ingredients = rng.sample(WORDS, 4)
            f.write(
                json.dumps(
                    {
                        "messages": [
                            {
                                "role": "user",
                                "content": f"Recipe {i}: mix "
                                + ", ".join(f"{rng.randint(1, 9)} cups {w}" for w in ingredients),
                            },
                            {"role": "assistant", "content": ", ".join(ingredients)},
                        ]
                    }
                )
                + "\n"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument(
        "--backend", default="trl", help="trl counts tokens with the tiny model's tokenizer; openai approximates"
    )
    args = ap.parse_args()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            folder = Path(tmp) / str(n)
            folder.mkdir()
            generate(folder / "data.jsonl", n)
            model = "builtin:tiny" if args.backend == "trl" else "gpt-4o-mini"
            (folder / "p.yaml").write_text(
                textwrap.dedent(f"""\
                version: 1
                name: bench-prepare
                dataset: {{source: {{type: local, path: data.jsonl}}, format: chat}}
                model: {{base: {model}}}
                trainer: {{backend: {args.backend}}}
            """)
            )
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", CHILD, str(folder / "p.yaml")], capture_output=True, text=True)
            if proc.returncode not in (0, 130):
                sys.exit(proc.stderr[-3000:])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["n"] = n
            r["mb"] = (folder / "data.jsonl").stat().st_size / 1e6
            results.append(r)
            print(
                f"{n:>9,} rows ({r['mb']:6.1f} MB): {r['seconds']:7.1f} s, {n / r['seconds']:9,.0f} rows/s, "
                f"peak RSS {r['peak_rss_mb']:6.0f} MB"
            )
    if len(results) >= 2:
        a, b = results[0], results[-1]
        print(
            f"{b['n'] // a['n']}x the rows: {b['seconds'] / a['seconds']:.1f}x the time, "
            f"{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x the peak memory"
        )
    _ = base_rss


if __name__ == "__main__":
    main()
