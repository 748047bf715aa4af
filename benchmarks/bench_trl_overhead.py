"""ftpipe's trl backend vs a hand-written TRL script: the same SFT job, in one process.

    python benchmarks/bench_trl_overhead.py [--steps 60] [--rounds 3]

Both train the built-in tiny model on the shipped recipes (full fine-tuning, same
hyperparameters, no checkpoints), alternating plain/ftpipe each round. Prints each run's
training throughput (TRL's train_samples_per_second) and wall time (load + train + save),
and the ftpipe/plain ratios of the medians. Target: throughput ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SETTINGS = {
    "epochs": 1,
    "learning_rate": 3.0e-3,
    "batch_size": 8,
    "max_seq_length": 256,
    "logging_steps": 10,
    "mixed_precision": "no",
}


def prepared(root: Path) -> Path:
    rows = [json.loads(line) for line in (REPO / "pipelines" / "data" / "recipes.jsonl").read_text().splitlines()]
    folder = root / "prepare"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:320]))
    return folder


def run_ftpipe(root: Path, data: Path, cache: Path, steps: int) -> tuple[float, float]:
    from ftpipe.contracts import StepContext
    from ftpipe.spec.models import Model, TrlTrainer
    from ftpipe.trainers.trl_backend import TrlBackend

    trainer = TrlTrainer(
        backend="trl",
        peft={"type": "none"},
        checkpoint={"every_steps": None},
        hyperparameters={**SETTINGS, "max_steps": steps},
        seed=42,
    )
    out = root / "out"
    out.mkdir(parents=True)
    ctx = StepContext(
        run_id="bench",
        step_id="train",
        pipeline=SimpleNamespace(trainer=trainer, model=Model(base="builtin:tiny")),
        pipeline_path=REPO / "pipelines" / "quickstart.yaml",
        out_dir=out,
        inputs={"prepare": data},
        state_dir=root / "state",
        cache_dir=cache,
        log=lambda line: None,
        progress=lambda *a: None,
    )
    t0 = time.perf_counter()
    result = TrlBackend().train(ctx)
    return result.metrics["train_samples_per_second"], time.perf_counter() - t0


def run_plain(root: Path, data: Path, cache: Path, steps: int) -> tuple[float, float]:
    """What a user would write by hand with TRL for the same job."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    from ftpipe.models.tiny import ensure_tiny_model

    t0 = time.perf_counter()
    set_seed(42)
    path = ensure_tiny_model(cache)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    train = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    args = SFTConfig(
        output_dir=str(root / "plain"),
        num_train_epochs=1,
        max_steps=steps,
        learning_rate=SETTINGS["learning_rate"],
        per_device_train_batch_size=SETTINGS["batch_size"],
        max_length=SETTINGS["max_seq_length"],
        logging_steps=SETTINGS["logging_steps"],
        bf16=False,
        fp16=False,
        activation_checkpointing=False,
        save_strategy="no",
        report_to="none",
        seed=42,
        data_seed=42,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    metrics = trainer.train().metrics
    trainer.save_model(str(root / "plain" / "model"))
    return metrics["train_samples_per_second"], time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads for both (default: what ftpipe would pick)")
    args = parser.parse_args()
    import torch

    from ftpipe.trainers.trl_job import _choose_cpu_threads

    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        _choose_cpu_threads(print)
    # Both sides train with the same threads: the backend keeps an explicit OMP_NUM_THREADS.
    os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    print(f"torch threads: {torch.get_num_threads()}")
    results: dict[str, list[tuple[float, float]]] = {"plain": [], "ftpipe": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, cache = prepared(root), root / "cache"
        from ftpipe.models.tiny import ensure_tiny_model

        ensure_tiny_model(cache)  # built once, outside the timings
        import trl  # noqa: F401  - import cost outside the timings too

        for i in range(args.rounds):
            for name, fn in (("plain", run_plain), ("ftpipe", run_ftpipe)):
                throughput, wall = fn(root / f"{name}{i}", data, cache, args.steps)
                results[name].append((throughput, wall))
                print(f"round {i + 1} {name:7s} {throughput:8.2f} samples/s  {wall:6.2f} s wall", flush=True)
    med = {
        name: (statistics.median(t for t, _ in r), statistics.median(w for _, w in r)) for name, r in results.items()
    }
    print(f"\nthroughput ratio ftpipe/plain: {med['ftpipe'][0] / med['plain'][0]:.3f}  (target >= 0.95)")
    print(f"wall-time ratio  ftpipe/plain: {med['ftpipe'][1] / med['plain'][1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
