"""Evaluation generation on the engine :mod:`ftpipe.engines` chooses.

- ``vllm`` (installed, CUDA GPU): vLLM's offline batch generation (``LLM.generate``) on the
  same token ids and stop tokens, greedy; the in-memory model (an adapter already merged) is
  written to a temporary folder first, because vLLM loads from disk.
- ``transformers``: :func:`ftpipe.evaluation.generate.generate_local` keeps generating in
  left-padded greedy batches. Measured on this project's 2-core CPU, that beats transformers'
  continuous batching (``generate_batch``) for one offline batch of prompts, with identical
  answers (docs/serving.md has the numbers); continuous batching pays off in the server, where
  requests arrive at different times.
"""
from __future__ import annotations

import gc
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from ftpipe.engines import EngineChoice, choose_engine


def offline_engine(engine: str = "auto") -> EngineChoice:
    return choose_engine(engine)


def vllm_generate(model: Any, tokenizer: Any, encoded: Sequence[list[int]], stop_ids: Sequence[int], *,
                  max_new_tokens: int, seed: int, on_batch: Callable[[int], None] | None = None) -> list[Any]:
    """Greedy answers from vLLM for prompts given as token ids, in order."""
    from vllm import LLM, SamplingParams

    from ftpipe.evaluation.generate import Generation

    folder = tempfile.mkdtemp(prefix="ftpipe-vllm-")
    try:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        llm = LLM(model=folder, seed=seed, gpu_memory_utilization=0.5)
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=list(stop_ids),
                                skip_special_tokens=True)
        outputs = llm.generate([{"prompt_token_ids": list(ids)} for ids in encoded], params, use_tqdm=False)
        results = []
        for ids, out in zip(encoded, outputs):
            completion = out.outputs[0]
            n = len(completion.token_ids)
            results.append(Generation(completion.text.strip(), len(ids), n))
        if on_batch:
            on_batch(len(results))
        del llm
        return results
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
