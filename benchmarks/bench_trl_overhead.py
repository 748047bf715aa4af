"""ftpipe's trl backend vs a hand-written TRL script: the same SFT job.

    python benchmarks/bench_trl_overhead.py [--steps 60] [--rounds 3] [--e2e-rounds 3]

In one process: both train the built-in tiny model on the shipped recipes (full
fine-tuning, same hyperparameters, no checkpoints), alternating plain/ftpipe each round.
Prints each run's training throughput (TRL's train_samples_per_second) and wall time (load
+ train + save), and the ftpipe/plain ratios of the medians. Target: throughput ratio >= 0.95.

End to end (process start to exit, ``--e2e-rounds``): ``ftpipe run`` of a prepare + train
pipeline (a fresh run store each time) vs ``python benchmarks/plain_trl_sft.py`` on the
same rows, both from the already-built tiny model. Target: wall ratio <= 1.3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
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


E2E_PIPELINE = """\
version: 1
name: bench-trl-overhead
dataset:
  source: {{type: local, path: {data}}}
  format: chat
  split: {{validation: 0.0, test: 0.0}}
model: {{base: builtin:tiny}}
trainer:
  backend: trl
  method: sft
  peft: {{type: none}}
  hyperparameters: {{epochs: 1, learning_rate: {lr}, batch_size: {batch}, max_seq_length: {seq},
                    logging_steps: {logging}, mixed_precision: "no"}}
"""


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system: less disturbed by other load) and stdout."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def end_to_end(root: Path, rows: int, rounds: int) -> dict[str, list[tuple[float, float, float]]]:
    """``ftpipe run`` vs the plain script, each a fresh process: (samples/s, wall s, CPU s) per round."""
    import shutil

    from ftpipe.models.tiny import ensure_tiny_model

    ftpipe = shutil.which("ftpipe") or sys.exit("ftpipe is not on PATH")
    cache = root / "e2e-cache"
    base = ensure_tiny_model(cache)
    data = root / "e2e.jsonl"
    data.write_text("\n".join((REPO / "pipelines" / "data" / "recipes.jsonl").read_text().splitlines()[:rows]) + "\n")
    pipeline = root / "e2e.yaml"
    pipeline.write_text(
        E2E_PIPELINE.format(
            data=data,
            lr=SETTINGS["learning_rate"],
            batch=SETTINGS["batch_size"],
            seq=SETTINGS["max_seq_length"],
            logging=SETTINGS["logging_steps"],
        )
    )
    env = {**os.environ, "FTPIPE_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    plain_cmd = [sys.executable, str(REPO / "benchmarks" / "plain_trl_sft.py"), str(data), str(base)]
    out: dict[str, list[tuple[float, float, float]]] = {"plain": [], "ftpipe": []}
    for i in range(rounds):
        wall, cpu, stdout = _timed([*plain_cmd, str(root / f"e2e-plain{i}")], env)
        out["plain"].append((json.loads(stdout.strip().splitlines()[-1])["train_samples_per_second"], wall, cpu))
        store = root / f"e2e-store{i}"
        wall, cpu, _ = _timed([ftpipe, "run", str(pipeline), "--store", str(store), "-q"], env)
        record = json.loads(next((store / "runs").glob("*/run.json")).read_text())
        out["ftpipe"].append((record["steps"]["train"]["metrics"]["train_samples_per_second"], wall, cpu))
        for name in ("plain", "ftpipe"):
            t, w, c = out[name][-1]
            print(
                f"e2e round {i + 1} {name:7s} {t:8.2f} samples/s  {w:6.2f} s wall  {c:6.2f} s CPU "
                f"(process start to exit; load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads for both (default: what ftpipe would pick)")
    parser.add_argument("--e2e-rounds", type=int, default=3, help="end-to-end rounds (0: skip)")
    parser.add_argument("--e2e-rows", type=int, default=200, help="recipe rows the end-to-end job trains on")
    args = parser.parse_args()
    import torch

    from ftpipe.trainers.cpu_threads import choose_cpu_threads

    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        choose_cpu_threads(print)
    # Both sides train with the same threads: the backend keeps an explicit OMP_NUM_THREADS.
    os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    print(f"torch threads: {torch.get_num_threads()}")
    results: dict[str, list[tuple[float, float]]] = {"plain": [], "ftpipe": []}
    e2e: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.e2e_rounds:
            e2e = end_to_end(root, args.e2e_rows, args.e2e_rounds)
        data, cache = prepared(root), root / "cache"
        from ftpipe.models.tiny import ensure_tiny_model

        ensure_tiny_model(cache)  # built once, outside the timings
        import trl  # noqa: F401  - import cost outside the timings too

        for i in range(args.rounds):
            for name, fn in (("plain", run_plain), ("ftpipe", run_ftpipe)):
                throughput, wall = fn(root / f"{name}{i}", data, cache, args.steps)
                results[name].append((throughput, wall))
                print(f"round {i + 1} {name:7s} {throughput:8.2f} samples/s  {wall:6.2f} s wall", flush=True)
    if args.rounds:
        med = _medians(results)
        print(f"\nin one process ({args.steps} steps, {args.rounds} rounds, medians):")
        print(f"  throughput ratio ftpipe/plain: {med['ftpipe'][0] / med['plain'][0]:.3f}  (target >= 0.95)")
        print(f"  wall-time ratio  ftpipe/plain: {med['ftpipe'][1] / med['plain'][1]:.3f}  (load + train + save)")
    if e2e:
        med = _medians(e2e)
        print(f"end to end ({args.e2e_rows} rows, {args.e2e_rounds} rounds, medians; ftpipe runs prepare + train):")
        print(f"  throughput ratio ftpipe/plain: {med['ftpipe'][0] / med['plain'][0]:.3f}  (target >= 0.95)")
        print(
            f"  wall-time ratio  ftpipe/plain: {med['ftpipe'][1] / med['plain'][1]:.3f}  (target <= 1.3; "
            f"{med['ftpipe'][1]:.2f} s vs {med['plain'][1]:.2f} s)"
        )
        print(
            f"  CPU-time ratio   ftpipe/plain: {med['ftpipe'][2] / med['plain'][2]:.3f}  "
            f"({med['ftpipe'][2]:.2f} s vs {med['plain'][2]:.2f} s; user + system, less disturbed by other load)"
        )
    return 0


def _medians(results: Mapping[str, Sequence[tuple[float, ...]]]) -> dict[str, tuple[float, ...]]:
    """The median of each column."""
    return {name: tuple(statistics.median(col) for col in zip(*r, strict=True)) for name, r in results.items()}


if __name__ == "__main__":
    sys.exit(main())
