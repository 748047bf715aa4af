"""How the prepare step counts an example's tokens: with the base model's tokenizer, chat
examples rendered by its chat template (ftpipe.data.template_tokens), or approximately (4
characters a token) for hosted models.

Counting is split in two so that the prepare step can overlap them: ``TokenCounter.plan``
(Python: render the chunk's conversations) and ``TokenCounter.finish`` (the Rust tokenizer,
which releases the GIL, so a worker thread runs it while the next chunk is read). The
tokenizer is loaded once per process for each model."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ftpipe.contracts import StepContext

# (resolved model, revision, chat template name) -> (tokenizer, templated, per-message overhead)
_LOADED: dict[tuple[str, str | None, str | None], tuple[Any, bool, int]] = {}


def _message_text(m: dict) -> str:
    calls = "".join(c["function"]["name"] + c["function"]["arguments"] for c in m.get("tool_calls") or ())
    return (m.get("content") or "") + calls


def record_text(rec: dict) -> str:
    if "messages" in rec:
        text = "\n".join(_message_text(m) for m in rec["messages"])
        return text + ("\n" + json.dumps(rec["tools"]) if rec.get("tools") else "")
    if "prompt" in rec:
        turns = rec["prompt"] + rec.get("completion", []) + rec.get("chosen", []) + rec.get("rejected", [])
        return "\n".join(_message_text(m) for m in turns)
    return rec["text"]


def record_messages(rec: dict) -> int:
    if "messages" in rec:
        return len(rec["messages"])
    if "prompt" in rec:
        return len(rec["prompt"]) + (1 if "completion" in rec else 2)
    return 0


def encoded_lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    """``len(tokenizer(text, add_special_tokens=False)["input_ids"])`` for each text. Straight
    through the Rust tokenizer when the transformers wrapper would add nothing (no truncation,
    no padding): it skips building offsets and Python encodings, a third of the time."""
    if not texts:
        return []
    backend: Any = getattr(tokenizer, "backend_tokenizer", None)
    fast = getattr(backend, "encode_batch_fast", None)
    if (
        fast is not None
        and backend.truncation is None
        and backend.padding is None
        and backend.encode_special_tokens == bool(getattr(tokenizer, "split_special_tokens", False))
    ):
        return [len(e) for e in fast(texts, add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


@dataclass
class Plan:
    """A chunk's token counting, rendered and waiting for the tokenizer: each record's
    known tokens plus those of the texts it owns."""

    base: list[int]
    texts: list[str]
    owners: list[int]


class TokenCounter:
    """Counts tokens as the trainer will see them (see the module docstring)."""

    def __init__(self, ctx: StepContext) -> None:
        self.exact = False
        self.tok: Any = None  # a transformers tokenizer once loaded
        self.per_message = 4
        self.templated = False  # counts come from the model's chat template
        self.renderer: Any = None
        caps = getattr(type(ctx.pipeline.trainer), "caps", None)  # the trainer plugin's declaration
        if caps is not None and caps.prepare_tokenizer:
            self._load(ctx)

    def _load(self, ctx: StepContext) -> None:
        import importlib.util

        if importlib.util.find_spec("transformers") is None:
            return  # without transformers (a hosted-only install): approximate counts
        from ftpipe.models.loading import resolve_base

        model = ctx.pipeline.model
        base = resolve_base(
            model.base,
            cache_dir=ctx.cache_dir,
            base_dir=ctx.base_dir,
            revision=model.revision,
            token=model.token or None,
            log=ctx.log,
        )
        key = (base, model.revision, model.chat_template)
        if key not in _LOADED:
            _LOADED[key] = _load_tokenizer(base, model, builtin=model.base == _tiny_name())
        self.tok, self.templated, self.per_message = _LOADED[key]
        self.exact = True
        if self.templated:
            from ftpipe.data.template_tokens import BatchRenderer

            self.renderer = BatchRenderer(self.tok)

    def count(self, records: list[dict]) -> list[int]:
        return self.finish(self.plan(records))

    def plan(self, records: list[dict]) -> Plan:
        base = [self.per_message * record_messages(r) for r in records]
        texts: list[str] = []
        owners: list[int] = []
        rest: range | list[int] = range(len(records))  # records counted without the template
        if self.renderer is not None:
            from ftpipe.data.template_tokens import render_records

            texts, owners, templated = render_records(self.renderer, records)
            base = [b if n is None else 0 for b, n in zip(base, templated, strict=True)]
            rest = [i for i, n in enumerate(templated) if n is None]
        for i in rest:
            text = record_text(records[i])
            if self.tok is None:
                base[i] += math.ceil(len(text) / 4)
            else:
                texts.append(text)
                owners.append(i)
        return Plan(base, texts, owners)

    def finish(self, plan: Plan) -> list[int]:
        counts = list(plan.base)
        for i, n in zip(plan.owners, encoded_lengths(self.tok, plan.texts), strict=True):
            counts[i] += n
        return counts


def _tiny_name() -> str:
    from ftpipe.models.tiny import TINY_MODEL

    return TINY_MODEL


def _load_tokenizer(base: str, model: Any, *, builtin: bool) -> tuple[Any, bool, int]:
    from ftpipe.data.template_tokens import ensure_template
    from ftpipe.remote.hf import hub_errors

    with hub_errors(f"tokenizer of {model.base}"):
        if builtin:
            # The built-in model's tokenizer is a plain tokenizer.json (TokenizersBackend, as
            # AutoTokenizer picks it too): loading that class directly skips AutoTokenizer's
            # config lookup, which imports torch (~2.5 s of a small prepare).
            from transformers.tokenization_utils_tokenizers import TokenizersBackend

            tok = TokenizersBackend.from_pretrained(base)
        else:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(base, revision=model.revision, token=model.token or None)
    templated = ensure_template(tok, model.chat_template)
    per_message = 4
    if getattr(tok, "chat_template", None):
        sample = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
        try:
            templ = tok.apply_chat_template(sample, tokenize=True)
            templ = templ["input_ids"] if isinstance(templ, dict) or hasattr(templ, "keys") else templ
            plain = sum(len(tok(m["content"], add_special_tokens=False)["input_ids"]) for m in sample)
            per_message = max(0, math.ceil((len(templ) - plain) / len(sample)))
        except Exception:  # noqa: BLE001 - an odd template only makes the estimate coarser
            pass
    return tok, templated, per_message
