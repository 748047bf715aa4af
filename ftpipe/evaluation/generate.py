"""Producing answers (and reference likelihoods) for evaluation.

Local models generate greedily in left-padded batches through the tokenizer's chat
template; hosted models answer through the chat completions API with the official
``openai`` client (temperature 0, a seed). Both count prompt and completion tokens per
request, which is what the cost comparison in the report is built on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ftpipe.errors import MissingDependency, RemoteError, StepError

Messages = Sequence[dict]
BatchCallback = Callable[[int], None]  # called with the number of requests done so far


class GenerationError(StepError):
    """Answers cannot be produced (a misconfigured provider); the message says why."""


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    # the request's latency (local: the time of the batch it was answered in); a measurement,
    # not part of what was generated, so equal answers compare equal
    seconds: float = field(default=0.0, compare=False)


def _require(module: str, extra: str, what: str) -> Any:
    """Import an optional dependency, or say which extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(module.split(".")[0], extra, what) from None


# --------------------------------------------------------------------------- local


def render_prompt(tokenizer: Any, messages: Messages, *, add_generation_prompt: bool = True) -> str:
    """The prompt text a chat model sees; a plain role-prefixed layout without a template."""
    if not messages:
        return ""
    if getattr(tokenizer, "chat_template", None):
        try:
            return tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except Exception:
            # Some templates (Mistral, Gemma) reject a system turn: fold it into the first user turn.
            if messages[0]["role"] != "system" or len(messages) < 2 or messages[1]["role"] != "user":
                raise
            merged = {"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}
            return tokenizer.apply_chat_template(
                [merged, *messages[2:]], tokenize=False, add_generation_prompt=add_generation_prompt
            )
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant: " if add_generation_prompt else "")


def _encode_prompt(tokenizer: Any, messages: Messages) -> list[int]:
    if not messages:
        return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    text = render_prompt(tokenizer, messages)
    # A chat template writes its own BOS; the plain layout needs the tokenizer's.
    templated = bool(getattr(tokenizer, "chat_template", None))
    return tokenizer(text, add_special_tokens=not templated)["input_ids"]


def count_prompt_tokens(tokenizer: Any, prompts: Sequence[Messages]) -> list[int]:
    return [len(_encode_prompt(tokenizer, p)) for p in prompts]


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    for source in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if i is not None and i not in ids:
                ids.append(int(i))
    return ids


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def generate_local(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages],
    *,
    max_new_tokens: int,
    batch_size: int,
    seed: int = 0,
    on_batch: BatchCallback | None = None,
    engine: str = "auto",
) -> list[Generation]:
    """Greedy answers for each prompt, in order: on vLLM where :mod:`ftpipe.engines` picks
    it (``engine``), else with transformers: continuous batching for real models, left-padded
    batches for tiny ones (:mod:`ftpipe.evaluation.engines`)."""
    torch = _require("torch", "train", "evaluating a local model")
    GenerationConfig = _require("transformers", "train", "evaluating a local model").GenerationConfig

    torch.manual_seed(seed)
    encoded = [_encode_prompt(tokenizer, p) for p in prompts]
    stop = _stop_ids(model, tokenizer)
    from ftpipe.evaluation import engines

    if engines.offline_engine(engine).name == "vllm":
        return engines.vllm_generate(
            model, tokenizer, encoded, stop, max_new_tokens=max_new_tokens, seed=seed, on_batch=on_batch
        )
    if engines.prefers_continuous_batching(model):
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop[0] if stop else 0)
        return engines.continuous_batching_generate(
            model, tokenizer, encoded, stop, max_new_tokens=max_new_tokens, pad_id=pad, on_batch=on_batch
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop[0] if stop else 0)
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=stop or None,
        pad_token_id=pad_id,
    )
    # Similar lengths share a batch, so little compute goes to padding.
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    results: list[Generation | None] = [None] * len(encoded)
    device = model.device
    done = 0
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(order, batch_size):
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                seq = encoded[i]
                if seq:
                    ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
                    mask[row, width - len(seq) :] = 1
            started = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
            batch_seconds = time.perf_counter() - started
            for row, i in enumerate(batch):
                new = out[row, width:].tolist()
                n = next((k + 1 for k, t in enumerate(new) if t in stop), len(new))
                text_ids = new[: n - 1] if n and new[n - 1] in stop else new[:n]
                text = tokenizer.decode(text_ids, skip_special_tokens=True).strip()
                results[i] = Generation(text, len(encoded[i]), n, batch_seconds)
            done += len(batch)
            if on_batch:
                on_batch(done)
    finally:
        model.train(was_training)
    return [r for r in results if r is not None]


def _completion_ids(tokenizer: Any, prompt: Messages, reference: str) -> tuple[list[int], list[int]]:
    prompt_ids = _encode_prompt(tokenizer, prompt)
    if not prompt:
        return prompt_ids, tokenizer(reference, add_special_tokens=False)["input_ids"]
    prompt_text = render_prompt(tokenizer, prompt)
    full = render_prompt(
        tokenizer, list(prompt) + [{"role": "assistant", "content": reference}], add_generation_prompt=False
    )
    if full.startswith(prompt_text):
        # The template's end-of-turn marker belongs to the answer, as in SFT training.
        completion = full[len(prompt_text) :]
    else:
        completion = reference + (tokenizer.eos_token or "")
    return prompt_ids, tokenizer(completion, add_special_tokens=False)["input_ids"]


def reference_nll(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages],
    references: Sequence[str],
    *,
    batch_size: int,
    on_batch: BatchCallback | None = None,
) -> list[tuple[float, int]]:
    """(summed negative log-likelihood, token count) of each reference given its prompt."""
    torch = _require("torch", "train", "computing loss/perplexity")

    pairs = [_completion_ids(tokenizer, p, r) for p, r in zip(prompts, references, strict=True)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(pairs)), key=lambda i: (-sum(map(len, pairs[i])), i))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
    device = model.device
    done = 0
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(order, batch_size):
            seqs = [pairs[i][0] + pairs[i][1] for i in batch]
            width = max(1, max(len(s) for s in seqs))
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, i in enumerate(batch):
                p, c = pairs[i]
                seq = p + c
                ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[row, : len(seq)] = 1
                labels[row, len(p) : len(seq)] = torch.tensor(c, dtype=torch.long)
            with torch.inference_mode():
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            # Position t predicts token t+1.
            target = labels[:, 1:].to(logits.device)
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="none"
            ).view(target.shape)
            counts = (target != -100).sum(dim=1)
            sums = nll.sum(dim=1)
            for row, i in enumerate(batch):
                results[i] = (float(sums[row]), int(counts[row]))
            done += len(batch)
            if on_batch:
                on_batch(done)
    finally:
        model.train(was_training)
    return results


def aggregate_nll(pairs: Sequence[tuple[float, int]]) -> tuple[float | None, float | None]:
    """Token-weighted mean loss over all references, and its perplexity."""
    tokens = sum(n for _, n in pairs)
    if not tokens:
        return None, None
    loss = sum(s for s, _ in pairs) / tokens
    return loss, math.exp(min(loss, 700.0))


# --------------------------------------------------------------------------- hosted


def make_openai_client(provider: str, trainer: Any | None = None) -> Any:
    """An OpenAI-compatible client that reaches models of ``provider``: the trainer plugin's
    ``chat_client`` when the pipeline trains there, else the client's environment variables
    (OPENAI_API_KEY, OPENAI_BASE_URL). See :mod:`ftpipe.evaluation.hosted_access`."""
    from ftpipe.evaluation.hosted_access import chat_client

    _require("openai", "openai", "evaluating a hosted model")
    return chat_client(provider, trainer)


def _translate(exc: Exception, model: str, service: str) -> RemoteError:
    """The openai client's error as ftpipe's, through the one translation point
    (remote/openai_errors), with the provider's own hints for chat completions."""
    from ftpipe.evaluation.hosted_access import chat_hints
    from ftpipe.remote.openai_errors import GENERIC_HINTS, translate

    hints = {**GENERIC_HINTS, **chat_hints(service, model)}
    return translate(exc, f"chat completion with model {model!r} failed", provider=service, hints=hints)


def generate_hosted(
    client: Any,
    model: str,
    prompts: Sequence[Messages],
    *,
    max_new_tokens: int,
    seed: int = 0,
    concurrency: int = 4,
    on_batch: BatchCallback | None = None,
    report_every: int = 16,
    service: str = "",
) -> list[Generation]:
    """Answers from a chat completions endpoint, in prompt order, with usage tokens."""
    import openai

    def one(messages: Messages) -> Generation:
        started = time.perf_counter()
        try:
            resp = client.chat.completions.create(
                model=model,
                messages=list(messages),
                temperature=0,
                seed=seed,
                max_tokens=max_new_tokens,
            )
        except openai.OpenAIError as exc:
            raise _translate(exc, model, service) from exc
        if not resp.choices:
            raise RemoteError(service, f"chat completion with model {model!r} returned no choices")
        text = (resp.choices[0].message.content or "").strip()
        usage = resp.usage
        return Generation(
            text,
            int(getattr(usage, "prompt_tokens", 0) or 0),
            int(getattr(usage, "completion_tokens", 0) or 0),
            time.perf_counter() - started,
        )

    results: list[Generation] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for n, gen in enumerate(pool.map(one, prompts), 1):
            results.append(gen)
            if on_batch and (n % report_every == 0 or n == len(prompts)):
                on_batch(n)
    return results
