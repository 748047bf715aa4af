"""Evaluation generation on the engine :mod:`ftpipe.engines` chooses.

- ``vllm`` (installed, CUDA GPU): vLLM's offline batch generation (``LLM.generate``) on the
  same token ids and stop tokens, greedy; the in-memory model (an adapter already merged) is
  written to a temporary folder first, because vLLM loads from disk.
- ``transformers``: transformers' continuous batching (``model.generate_batch``: paged
  attention, no padding) for real models, and left-padded greedy ``generate`` batches for very
  small ones. Measured on this project's 2-core CPU (docs/serving.md): on SmolLM2-135M
  continuous batching took 22-29 s where padded batches took 160-231 s for the same 12 prompts,
  with identical answers; on the 0.3M-parameter built-in tiny model its per-step scheduling
  costs more than the model itself (4.2 s against 1.0 s), so below
  :data:`CONTINUOUS_BATCHING_MIN_PARAMS` the padded batches stay.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from ftpipe.engines import EngineChoice, choose_engine

# Below this many parameters the scheduler's per-step cost outweighs the model's (see above).
CONTINUOUS_BATCHING_MIN_PARAMS = 10_000_000


def offline_engine(engine: str = "auto") -> EngineChoice:
    return choose_engine(engine)


def prefers_continuous_batching(model: Any, *, min_params: int = CONTINUOUS_BATCHING_MIN_PARAMS) -> bool:
    """Whether transformers' continuous batching is the faster way to answer a batch of
    prompts with ``model`` (it must support it, and be big enough to pay for the scheduler)."""
    if not hasattr(model, "generate_batch"):
        return False
    return sum(p.numel() for p in model.parameters()) >= min_params


def continuous_batching_generate(
    model: Any,
    tokenizer: Any,
    encoded: Sequence[list[int]],
    stop_ids: Sequence[int],
    *,
    max_new_tokens: int,
    pad_id: int,
    on_batch: Callable[[int], None] | None = None,
) -> list[Any]:
    """Greedy answers through ``model.generate_batch`` (continuous batching), in order, with
    the same text and token counts :func:`~ftpipe.evaluation.generate.generate_local` reports."""
    from transformers import ContinuousBatchingConfig, GenerationConfig

    from ftpipe.evaluation.generate import Generation

    config = GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=list(stop_ids) or None, pad_token_id=pad_id
    )
    longest = max((len(ids) for ids in encoded), default=1)
    # A cache sized for a CPU: the defaults reserve so much that every step pays for it.
    cb_config = ContinuousBatchingConfig(num_blocks=256, max_batch_tokens=max(1024, longest + 1))
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        outputs = model.generate_batch(
            inputs=[list(ids) for ids in encoded],
            generation_config=config,
            continuous_batching_config=cb_config,
            progress_bar=False,
            warmup=False,
        )
    finally:
        model.train(was_training)
    wall = time.perf_counter() - started
    ordered = [outputs[k] for k in sorted(outputs, key=lambda rid: int(str(rid).rsplit("_", 1)[-1]))]
    results = []
    for ids, out in zip(encoded, ordered, strict=True):
        if getattr(out, "error", None):
            raise RuntimeError(f"continuous batching failed: {out.error}")
        new = list(out.generated_tokens)
        n = next((k + 1 for k, t in enumerate(new) if t in stop_ids), len(new))
        text_ids = new[: n - 1] if n and new[n - 1] in stop_ids else new[:n]
        text = tokenizer.decode(text_ids, skip_special_tokens=True).strip()
        results.append(Generation(text, len(ids), n, _request_seconds(out, wall)))
    if on_batch:
        on_batch(len(results))
    return results


def _request_seconds(out: Any, wall: float) -> float:
    """A request's latency from submission to its last token (the engine's own timestamps),
    else the whole batch's time: an upper bound."""
    created, lifespan = getattr(out, "created_time", None), getattr(out, "lifespan", None)
    try:
        seconds = float(lifespan[1]) - float(created)  # type: ignore[index, arg-type]
    except (TypeError, ValueError, IndexError):
        return wall
    return seconds if 0 < seconds <= wall * 1.05 + 0.01 else wall


def vllm_generate(
    model: Any,
    tokenizer: Any,
    encoded: Sequence[list[int]],
    stop_ids: Sequence[int],
    *,
    max_new_tokens: int,
    seed: int,
    on_batch: Callable[[int], None] | None = None,
) -> list[Any]:
    """Greedy answers from vLLM for prompts given as token ids, in order."""
    from vllm import LLM, SamplingParams  # GPU machines only

    from ftpipe.evaluation.generate import Generation

    folder = tempfile.mkdtemp(prefix="ftpipe-vllm-")
    try:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        llm = LLM(model=folder, seed=seed, gpu_memory_utilization=0.5)
        params = SamplingParams(
            temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=list(stop_ids), skip_special_tokens=True
        )
        outputs = llm.generate([{"prompt_token_ids": list(ids)} for ids in encoded], params, use_tqdm=False)
        results = []
        for ids, out in zip(encoded, outputs, strict=True):
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
