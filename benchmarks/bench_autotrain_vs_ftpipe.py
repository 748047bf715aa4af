"""The same tiny SFT job through `ftpipe run` (trl backend) and through `autotrain --config`
directly, in the same run; prints the wall-time ratio (target ≤ 0.5).

    ftpipe backends install autotrain        # once
    python benchmarks/bench_autotrain_vs_ftpipe.py [--rows 200] [--repeat 1] [--json]

The job: the built-in tiny model, the shipped recipe data (first --rows rows, all of them
trained on), chat template from the tokenizer, full fine-tuning, 1 epoch, batch 8, learning
rate 3e-3, sequences up to 256 tokens. AutoTrain always packs sequences; ftpipe runs with its
default (no packing) unless --packing is given (TRL's default "bfd" packing is several times
slower per step on a CPU). Each side starts cold (a fresh run store; a fresh AutoTrain
project folder) and is timed from process start to exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import REPO, median

EPOCHS, BATCH, LR, SEQ = 1, 8, 3.0e-3, 256


def ftpipe_pipeline(folder: Path, data: Path, *, packing: bool) -> Path:
    path = folder / "bench.yaml"
    path.write_text(f"""\
version: 1
name: bench-ftpipe
dataset:
  source: {{type: local, path: {data}}}
  format: chat
  split: {{validation: 0.0, test: 0.0}}
model: {{base: builtin:tiny}}
trainer:
  backend: trl
  method: sft
  peft: {{type: none}}
  hyperparameters: {{epochs: {EPOCHS}, learning_rate: {LR}, batch_size: {BATCH}, gradient_accumulation_steps: 1,
                    max_seq_length: {SEQ}, packing: {str(packing).lower()}, warmup_ratio: 0.0}}
""")
    return path


def autotrain_config(folder: Path, data: Path, base: Path, params: dict | None = None) -> Path:
    """AutoTrain's config for the job; ``params`` override its ``params`` block."""
    data_dir = folder / "at-data"
    data_dir.mkdir()
    shutil.copy(data, data_dir / "train.jsonl")  # rows are {"messages": [...]}: AutoTrain reads them as they are
    config = {
        "task": "llm-sft",
        "base_model": str(base),
        "project_name": "bench-autotrain",
        "log": "none",
        "backend": "local",
        "data": {
            "path": str(data_dir),
            "train_split": "train",
            "valid_split": None,
            "chat_template": "tokenizer",
            "column_mapping": {"text_column": "messages"},
        },
        "params": {
            "epochs": EPOCHS,
            "batch_size": BATCH,
            "lr": LR,
            "block_size": SEQ,
            "model_max_length": SEQ,
            "gradient_accumulation": 1,
            "warmup_ratio": 0.0,
            "peft": False,
            "mixed_precision": None,
            "optimizer": "adamw_torch",
            "scheduler": "linear",
            "padding": "right",
            "seed": 42,
            **(params or {}),
        },
        "hub": {"username": "bench", "token": None, "push_to_hub": False},
    }
    path = folder / "autotrain.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def timed(cmd: list[str], *, cwd: Path, env: dict[str, str], label: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "has failed due to an exception" in out:
        raise SystemExit(f"{label} failed (exit {proc.returncode}):\n{out[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--packing", action="store_true", help="pack sequences on the ftpipe side too")
    ap.add_argument(
        "--threads",
        type=int,
        help="OMP_NUM_THREADS for both sides (AutoTrain's CPU launcher "
        "already runs 1 thread per process unless it is set)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    from ftpipe.models.tiny import ensure_tiny_model
    from ftpipe.trainers import autotrain_env
    from ftpipe.trainers.autotrain_backend import _compatible_base

    env_info = autotrain_env.find()
    if env_info is None:
        sys.exit("the AutoTrain environment is not installed: run `ftpipe backends install autotrain`")
    ftpipe = shutil.which("ftpipe") or sys.exit("ftpipe is not on PATH: pip install -e .")

    with tempfile.TemporaryDirectory(prefix="ftpipe-bench-at-") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        base_env = {
            **os.environ,
            "FTPIPE_CACHE": str(cache),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        if args.threads:
            base_env["OMP_NUM_THREADS"] = str(args.threads)
        rows = (REPO / "pipelines" / "data" / "recipes.jsonl").read_text().splitlines()[: args.rows]
        data = work / "train.jsonl"
        data.write_text("\n".join(rows) + "\n")
        # both sides start from an already-built tiny model: its build is not what is compared
        tiny = ensure_tiny_model(cache)
        base = _compatible_base(tiny, work / "tiny-for-autotrain")
        pipeline = ftpipe_pipeline(work, data, packing=args.packing)
        at_env = env_info.subprocess_env(base_env)
        at_env["PAUSE_ON_FAILURE"] = "0"

        ft_times, at_times = [], []
        for i in range(args.repeat):
            store = work / f"store-{i}"
            ft_times.append(
                timed(
                    [ftpipe, "run", str(pipeline), "--store", str(store), "-q"],
                    cwd=work,
                    env=base_env,
                    label="ftpipe run",
                )
            )
            at_dir = work / f"at-{i}"
            at_dir.mkdir()
            config = autotrain_config(at_dir, data, base)
            at_times.append(
                timed(
                    [str(env_info.autotrain), "--config", str(config)],
                    cwd=at_dir,
                    env=at_env,
                    label="autotrain --config",
                )
            )
            if not (at_dir / "bench-autotrain" / "model.safetensors").exists():
                raise SystemExit("autotrain --config finished without a model")

    ft, at = median(ft_times), median(at_times)
    ratio = ft / at
    # on a shared machine the fastest run is the one least disturbed by others (as timeit does)
    best = min(ft_times) / min(at_times)
    result = {
        "rows": args.rows,
        "repeat": args.repeat,
        "ftpipe_packing": args.packing,
        "threads": args.threads,
        "ftpipe_run_s": round(ft, 2),
        "autotrain_s": round(at, 2),
        "ratio": round(ratio, 3),
        "best_ratio": round(best, 3),
        "target": 0.5,
        "ftpipe_runs": [round(x, 2) for x in ft_times],
        "autotrain_runs": [round(x, 2) for x in at_times],
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"same job: tiny model, {args.rows} recipe rows, sft, 1 epoch, batch {BATCH}, up to {SEQ} tokens "
            f"(ftpipe packing {'on' if args.packing else 'off'}; AutoTrain always packs)"
        )
        print(f"ftpipe run (trl)      : {ft:7.2f} s (median of {args.repeat})")
        print(f"autotrain --config    : {at:7.2f} s")
        print(f"ratio ftpipe/autotrain: {ratio:7.2f}x (target <= 0.5x); fastest runs: {best:.2f}x")


if __name__ == "__main__":
    main()
