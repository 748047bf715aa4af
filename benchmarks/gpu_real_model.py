"""SmolLM2-135M-Instruct on one GPU: pipelines/recipes-smollm2.yaml, unedited, through
`ftpipe run` (training mixed precision bf16 where the GPU supports it, else fp16; inference in
the same half precision; SDPA attention), then training and generation tokens/s and the
evaluation table. Runs in a few minutes on one GPU (target: under 10).

    python benchmarks/gpu_real_model.py               # needs a CUDA GPU
    python benchmarks/gpu_real_model.py --cpu-smoke   # the same code on CPU, a few steps (no GPU here)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _real_model import (
    PIPELINE,
    copy_pipeline,
    evaluation_table,
    machine_line,
    run_pipeline,
    step_table,
)

# --cpu-smoke: just enough to run every line of this script on a CPU
SMOKE = {
    "trainer.hyperparameters.max_steps": 2,
    "trainer.hyperparameters.batch_size": 2,
    "evaluate.limit": 2,
    "evaluate.generation": {"max_new_tokens": 8, "batch_size": 2},
    "evaluate.baselines": ["base"],
    "evaluate.gate": None,
    "deploy": [],
}


def default_cache() -> Path:
    from ftpipe.store import RunStore

    return RunStore(Path(".")).cache_dir()


def device_line(torch: Any) -> str:
    if not torch.cuda.is_available():
        return f"CPU ({torch.get_num_threads()} threads), float32"
    name = torch.cuda.get_device_name(0)
    dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return f"{name} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB), {dtype}"


def train_tokens_per_s(out: Any) -> tuple[float | None, float | None]:
    """(tokens/s, samples/s) of the train step: TRL's samples/s × the mean tokens of a
    training row as prepare counted them (through the model's chat template)."""
    train, prepare = out.artifact("train"), out.artifact("prepare")
    if train is None or prepare is None or not (train / "loss.json").is_file():
        return None, None
    history = json.loads((train / "loss.json").read_text())
    samples = next((e["train_samples_per_second"] for e in reversed(history) if "train_samples_per_second" in e), None)
    stats = json.loads((prepare / "stats.json").read_text())["splits"]["train"]
    if not samples or not stats["rows"]:
        return None, samples
    return samples * stats["tokens"] / stats["rows"], samples


def generation_tokens_per_s(out: Any, *, cache: Path, batch: int, new_tokens: int) -> dict[str, Any]:
    """Greedy generation throughput of the fine-tuned model (adapter merged) on the test
    prompts, loaded the way `ftpipe serve` and the evaluate step load it."""
    import torch

    from ftpipe.contracts import ModelRef
    from ftpipe.evaluation.fewshot import load_examples
    from ftpipe.evaluation.generate import generate_local
    from ftpipe.models import loading

    train, prepare = out.artifact("train"), out.artifact("prepare")
    assert train is not None and prepare is not None
    examples = load_examples(prepare / "test.jsonl")
    # four full batches, cycling through the test prompts
    prompts = [list(examples[i % len(examples)].prompt) for i in range(4 * batch)]
    model, tokenizer = loading.load_for_inference(ModelRef.read(train), train, cache_dir=cache, base_dir=train)
    attn = getattr(model.config, "_attn_implementation", "?")
    generate_local(model, tokenizer, prompts[:batch], max_new_tokens=new_tokens, batch_size=batch)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    gens = generate_local(model, tokenizer, prompts, max_new_tokens=new_tokens, batch_size=batch)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    produced = sum(g.completion_tokens for g in gens)
    return {
        "tokens_per_s": produced / seconds,
        "requests": len(gens),
        "seconds": seconds,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "attention": attn,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", type=Path, default=PIPELINE)
    ap.add_argument("--cpu-smoke", action="store_true", help="run on CPU with a few steps (checks the script)")
    ap.add_argument("--batch", type=int, default=32, help="generation batch size for the tokens/s measurement")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("no CUDA GPU: install a CUDA torch build, or run with --cpu-smoke to check the script", file=sys.stderr)
        return 2
    print(f"device: {device_line(torch)}; host: {machine_line()}")
    with tempfile.TemporaryDirectory(prefix="ftpipe-gpu-real-") as tmp:
        path = copy_pipeline(args.pipeline, Path(tmp) / "pipelines", SMOKE if args.cpu_smoke else None)
        # cold on a GPU machine (the GGUF conversion counts); the CPU smoke reuses ftpipe's cache
        cache = Path(tmp) / "cache" if not args.cpu_smoke else default_cache()
        out = run_pipeline(path, cache=cache)
        if out.report is None:
            print(out.stderr[-4000:], file=sys.stderr)
            return 1
        train_tps, samples = train_tokens_per_s(out)
        gen = generation_tokens_per_s(
            out, cache=cache, batch=2 if args.cpu_smoke else args.batch, new_tokens=8 if args.cpu_smoke else 32
        )
    print("\n" + step_table(out) + "\n")
    print(f"training: {train_tps or 0:,.1f} tokens/s ({samples or 0:.2f} samples/s, TRL's count)")
    print(
        f"generation (fine-tuned, {gen['dtype']}, attention {gen['attention']}): {gen['tokens_per_s']:,.1f} "
        f"new tokens/s ({gen['requests']} requests in {gen['seconds']:.1f}s)\n"
    )
    print(evaluation_table(out.report))
    return 0 if out.exit_code in (0, 3) else out.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
