"""Token counts through the model's own chat template (local models).

A chat example costs what the trainer feeds the model: the conversation rendered by the
template (role markers, turn ends, a default system prompt some templates add), not the
sum of the messages plus a guessed per-message overhead.
"""

from __future__ import annotations

from typing import Any


def ensure_template(tokenizer: Any, name: str | None) -> bool:
    """Give ``tokenizer`` the template training will use (``model.chat_template``, or ChatML
    when the tokenizer has none, as the trainer does). False when it cannot be set."""
    from ftpipe.models.chat_templates import CHAT_TEMPLATES

    if name is None and getattr(tokenizer, "chat_template", None):
        return True
    template = CHAT_TEMPLATES.get(name or "chatml")
    if template is None:
        return False
    tokenizer.chat_template = template
    return True


def _conversations(rec: dict) -> list[list[dict]] | None:
    if "messages" in rec:
        return [rec["messages"]]
    prompt = rec.get("prompt")
    if not isinstance(prompt, list):
        return None
    if "chosen" in rec and "rejected" in rec:  # preference pair: both conversations
        return [prompt + rec["chosen"], prompt + rec["rejected"]]
    if "completion" in rec:  # binary preference (KTO): the one conversation
        return [prompt + rec["completion"]]
    return [prompt]  # a prompt alone (GRPO generates the completion)


def template_counts(tokenizer: Any, records: list[dict]) -> list[int | None]:
    """Tokens of each record as its chat template renders it (a preference pair counts both
    conversations); None for a record without messages (plain text) or one the template
    rejects, so the caller counts it another way."""
    from jinja2 import TemplateError

    texts: list[str] = []
    owners: list[int] = []
    out: list[int | None] = [None] * len(records)
    for i, rec in enumerate(records):
        convs = _conversations(rec)
        if convs is None:
            continue
        try:
            rendered = [tokenizer.apply_chat_template(c, tokenize=False) for c in convs]
        except (TemplateError, ValueError, TypeError, KeyError):
            continue  # e.g. a template that insists on alternating roles: counted without it
        texts += rendered
        owners += [i] * len(rendered)
        out[i] = 0
    if texts:
        # the template writes its own BOS/markers: no special tokens added on top
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        for i, seq in zip(owners, ids, strict=True):
            out[i] = (out[i] or 0) + len(seq)
    return out
