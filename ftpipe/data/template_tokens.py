"""Token counts through the model's own chat template (local models).

A chat example costs what the trainer feeds the model: the conversation rendered by the
template (role markers, turn ends, a default system prompt some templates add), not the
sum of the messages plus a guessed per-message overhead.

Rendering is the prepare step's hottest Python: ``apply_chat_template`` costs ~25 µs of
CPU a conversation, most of it copying the input and setting up a fresh Jinja context per
call. ``BatchRenderer`` compiles the template's source once as a macro in transformers' own
sandboxed environment and calls it per conversation (~4 µs), and checks itself against
``apply_chat_template`` on the first conversations it renders.
"""

from __future__ import annotations

import re
from typing import Any

# What a normalised message may carry (ftpipe.data.formats); a message with anything else
# is rendered by apply_chat_template itself, which may rewrite unknown fields.
MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "tool_call_id", "name", "weight"})
TEMPLATE_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, KeyError)
CHECKED = 64  # the first conversations rendered are also rendered by apply_chat_template, to compare
# Constructs that do not survive being wrapped in a macro (or change meaning inside one).
_UNWRAPPABLE = re.compile(r"\{%-?\s*(extends|block|include|import|from|macro)\b|\b(varargs|kwargs|caller)\b")


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


def conversations(rec: dict) -> list[list[dict]] | None:
    """The conversations the trainer renders for ``rec``; None for plain text."""
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


class BatchRenderer:
    """``tokenizer.apply_chat_template(conv, tokenize=False)`` for many conversations, the same
    text for each; None for a conversation the template rejects."""

    def __init__(self, tokenizer: Any) -> None:
        from jinja2 import TemplateError

        self.tok = tokenizer
        self.errors: tuple[type[Exception], ...] = (TemplateError, *TEMPLATE_ERRORS)
        self.macro: Any = None  # the template as a macro, while it renders what apply_chat_template does
        self.checked = False
        try:
            self.macro = self._compile()
        except Exception:  # noqa: BLE001 - any surprise: render one by one, as before
            self.macro = None

    def _compile(self) -> Any:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        source = self.tok.get_chat_template()
        context = self.tok.special_tokens_map  # apply_chat_template's template variables
        if not isinstance(source, str) or _UNWRAPPABLE.search(source):
            return None
        if not all(isinstance(v, str) for v in context.values()):
            return None  # non-text template variables: leave them to apply_chat_template
        env = _compile_jinja_template(source).environment  # transformers' sandbox, filters and globals
        if env.lstrip_blocks and not env.trim_blocks:
            return None  # the macro tag would keep the template's first line from being a line start
        if not env.keep_trailing_newline:  # Jinja drops one final newline of a template's source
            source = re.sub(r"(\r\n|\r|\n)\Z", "", source)
        # Whitespace control must see the template as if it stood alone: the newline after the
        # macro tag (eaten by trim_blocks) makes its first line a line start for lstrip_blocks,
        # and {{ '' }} keeps lstrip_blocks from eating its last line's indentation.
        module = env.from_string(
            "{% macro ftpipe_one(messages, tools, documents, add_generation_prompt) %}"
            + ("\n" if env.trim_blocks else "")
            + source
            + "{{ '' }}{% endmacro %}"
        ).make_module(vars=dict(context))
        return module.ftpipe_one

    def render(self, convs: list[list[dict]]) -> list[str | None]:
        if self.macro is None:
            return self._one_by_one(convs)
        out: list[str | None] = []
        for conv in convs:
            plain = _plain(conv)
            if plain is None:
                out += self._one_by_one([conv])
                continue
            try:
                out.append(self.macro(plain, None, None, False))
            except self.errors:  # e.g. a template that insists on alternating roles
                out.append(None)
        if not self.checked:  # a transformers release that renders differently? then one by one
            self.checked = True
            if out[:CHECKED] != self._one_by_one(convs[:CHECKED]):
                self.macro = None
                return self._one_by_one(convs)
        return out

    def _one_by_one(self, convs: list[list[dict]]) -> list[str | None]:
        out: list[str | None] = []
        for conv in convs:
            try:
                out.append(self.tok.apply_chat_template(conv, tokenize=False))
            except self.errors:
                out.append(None)
        return out


def _plain(conv: list[dict]) -> list[dict] | None:
    """The conversation as apply_chat_template hands it to the template (None-valued keys
    dropped; the sandbox keeps the template from changing it); None when a message has
    fields beyond a normalised one's."""
    msgs = []
    for m in conv:
        if not MESSAGE_KEYS.issuperset(m):
            return None
        msgs.append({k: v for k, v in m.items() if v is not None} if None in m.values() else m)
    return msgs


def template_counts(tokenizer: Any, records: list[dict]) -> list[int | None]:
    """Tokens of each record as its chat template renders it (a preference pair counts both
    conversations); None for a record without messages (plain text) or one the template
    rejects, so the caller counts it another way."""
    from ftpipe.data.tokens import encoded_lengths

    texts, owners, out = render_records(BatchRenderer(tokenizer), records)
    for i, n in zip(owners, encoded_lengths(tokenizer, texts), strict=True):
        out[i] = (out[i] or 0) + n
    return out


def render_records(renderer: BatchRenderer, records: list[dict]) -> tuple[list[str], list[int], list[int | None]]:
    """The rendered texts of ``records``, the record each belongs to, and per record 0 (to be
    added to) or None (not rendered: plain text, or every conversation not just one rejected)."""
    convs: list[list[dict]] = []
    conv_owner: list[int] = []
    for i, rec in enumerate(records):
        for conv in conversations(rec) or ():
            convs.append(conv)
            conv_owner.append(i)
    rendered = renderer.render(convs) if convs else []
    rejected = {i for i, text in zip(conv_owner, rendered, strict=True) if text is None}
    out: list[int | None] = [None] * len(records)
    texts: list[str] = []
    owners: list[int] = []
    for i, text in zip(conv_owner, rendered, strict=True):
        if i in rejected:
            continue
        texts.append(text)  # type: ignore[arg-type]  # None only for rejected owners
        owners.append(i)
        out[i] = 0
    return texts, owners, out
