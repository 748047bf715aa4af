"""How the prepare step counts an example's tokens: with the base model's tokenizer, chat
examples rendered by its chat template (ftpipe.data.template_tokens), or approximately (4
characters a token) for hosted models.

Counting is split in two so that the prepare step can overlap them: ``TokenCounter.plan``
(Python: render the chunk's conversations) and ``TokenCounter.finish`` (the Rust tokenizer,
which releases the GIL, so a worker thread runs it while the next chunk is read). The
tokenizer is loaded once per process for each model. A prefix every rendered conversation
shares (a default or dataset-wide system prompt) is tokenized once (``SharedPrefix``)."""

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


def rust_backend(tokenizer: Any) -> Any | None:
    """The Rust tokenizer behind ``tokenizer`` when calling it directly counts what the
    transformers wrapper would (no truncation, no padding, special tokens treated alike);
    None otherwise."""
    backend: Any = getattr(tokenizer, "backend_tokenizer", None)
    if (
        getattr(backend, "encode_batch_fast", None) is not None
        and backend.truncation is None
        and backend.padding is None
        and backend.encode_special_tokens == bool(getattr(tokenizer, "split_special_tokens", False))
    ):
        return backend
    return None


def encoded_lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    """``len(tokenizer(text, add_special_tokens=False)["input_ids"])`` for each text. Straight
    through the Rust tokenizer where ``rust_backend`` allows: it skips building offsets and
    Python encodings, a third of the time."""
    if not texts:
        return []
    backend = rust_backend(tokenizer)
    if backend is not None:
        return [len(e) for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
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
        self.prefix: SharedPrefix | None = None
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
            self.prefix = SharedPrefix(self.tok)

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
            if self.prefix is not None:
                texts = self.prefix.cut(texts, owners, base)
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


class SharedPrefix:
    """Counts once the tokens of a prefix that every rendered conversation starts with: a
    template's default system prompt (SmolLM2, Qwen2.5, Llama 3.1 add one to every
    conversation) or ``dataset.system_prompt``, often half of a short example's tokens.

    A Hugging Face tokenizer splits its input at added tokens (``<|im_start|>``, ...) before
    anything else and tokenizes the pieces between them on their own, so a text that starts
    with ``P``, where ``P`` ends with an added token, has ``tokens(P) + tokens(rest)`` tokens.
    ``P`` is learned from the first chunk's texts (``_learn``). It is used only with
    tokenizers whose pieces do not depend on where they stand (no Metaspace or Prepend, which
    treat the first piece of a text differently), and only once whole-text counts of the
    first chunk agree with it; a text without the prefix is counted whole."""

    MIN_TOKENS = 4  # a shorter prefix saves less than looking for it costs

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.text: str | None = None  # the prefix, once learned and checked
        self.tokens = 0
        self.learned = False
        self.boundaries = _piece_boundaries(tok)  # added tokens a piece may end at; () = never
        if not self.boundaries:
            self.learned = True  # nothing to learn: this tokenizer is counted whole

    def cut(self, texts: list[str], owners: list[int], base: list[int]) -> list[str]:
        """``texts`` with the prefix cut off where they have it, its tokens added to the
        owner's ``base`` instead."""
        if not self.learned and len(texts) >= 2:
            self._learn(texts)
        prefix, n = self.text, self.tokens
        if prefix is None:
            return texts
        k = len(prefix)
        out = []
        for text, owner in zip(texts, owners, strict=True):
            if text.startswith(prefix):
                out.append(text[k:])
                base[owner] += n
            else:
                out.append(text)
        return out

    def _learn(self, texts: list[str]) -> None:
        """The prefix that saves the most characters among those neighbouring texts of the
        first chunk share (so rows with their own system message do not hide the default
        one), checked against whole-text counts of that chunk."""
        import os.path
        from collections import Counter
        from itertools import pairwise

        self.learned = True
        shared: Counter[str] = Counter()
        for a, b in pairwise(texts):
            common = os.path.commonprefix([a, b])
            end = max((common.rfind(t) + len(t) for t in self.boundaries if t in common), default=0)
            if end:
                shared[common[:end]] += 1
        if not shared:
            return
        prefix = max(shared, key=lambda p: shared[p] * len(p))
        n = encoded_lengths(self.tok, [prefix])[0]
        if n < self.MIN_TOKENS:
            return
        k = len(prefix)
        having = [t for t in texts if t.startswith(prefix)]
        whole = encoded_lengths(self.tok, having)
        rests = encoded_lengths(self.tok, [t[k:] for t in having])
        if all(w == n + r for w, r in zip(whole, rests, strict=True)):
            self.text, self.tokens = prefix, n


def _piece_boundaries(tok: Any) -> tuple[str, ...]:
    """The added tokens after which this tokenizer starts an independent piece; () when its
    pieces depend on their position or the fast path of ``encoded_lengths`` is not taken."""
    backend = rust_backend(tok)
    if backend is None or backend.encode_special_tokens:
        return ()  # the wrapper's counts, or special tokens tokenized as text: they split nothing
    try:
        spec = json.loads(backend.to_str())
        added = backend.get_added_tokens_decoder().values()
    except Exception:  # noqa: BLE001 - an unusual tokenizer: count whole texts
        return ()
    steps = json.dumps([spec.get("normalizer"), spec.get("pre_tokenizer")])
    if "Metaspace" in steps or "Prepend" in steps:
        return ()  # the first piece of a text gets a prefix the others do not
    return tuple(t.content for t in added if t.content and not t.rstrip and not t.single_word)


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
