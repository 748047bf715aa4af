"""Chat templates ftpipe ships by name (``model.chat_template: chatml``), and how one is put
on a tokenizer/model pair. ``None`` keeps the tokenizer's own template."""

from __future__ import annotations

from typing import Any

# Tool calls as Qwen2.5/Hermes write them: the tools' schemas in a system turn, each call
# a <tool_call> JSON line, tool results as "tool" turns. Without tools it renders exactly
# the plain ChatML layout.
CHATML = (
    "{% if tools %}"
    "{{ '<|im_start|>system\n' }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}{% endif %}"
    "{{ '# Tools\n<tools>' }}{% for tool in tools %}{{ '\n' + (tool | tojson) }}{% endfor %}"
    "{{ '\n</tools><|im_end|>\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (tools and loop.first and message['role'] == 'system') %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] %}{{ message['content'] }}{% endif %}"
    "{% if message['tool_calls'] is defined and message['tool_calls'] %}"
    "{% for call in message['tool_calls'] %}"
    "{% if message['content'] or not loop.first %}{{ '\n' }}{% endif %}"
    "{{ '<tool_call>\n{\"name\": \"' + call['function']['name'] + '\", \"arguments\": ' }}"
    "{% if call['function']['arguments'] is string %}{{ call['function']['arguments'] }}"
    "{% else %}{{ call['function']['arguments'] | tojson }}{% endif %}"
    "{{ '}\n</tool_call>' }}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Zephyr's markers are plain text in its tokenizer; each turn ends with the eos token.
ZEPHYR = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

CHAT_TEMPLATES: dict[str, str] = {"chatml": CHATML, "zephyr": ZEPHYR}
# Tokens a template needs as single special tokens, and the one that ends a turn.
_SPECIAL: dict[str, tuple[list[str], str | None]] = {
    "chatml": (["<|im_start|>", "<|im_end|>"], "<|im_end|>"),
    "zephyr": ([], None),
}


def apply_chat_template_choice(model: Any, tokenizer: Any, name: str | None) -> list[int]:
    """Put template ``name`` on ``tokenizer`` (and fix eos/pad on ``model``); returns the ids
    of tokens it had to add, whose embeddings are new and must be trained.

    With ``name=None`` the tokenizer keeps its own template; a tokenizer without one gets
    ChatML, since conversational training and evaluation need some template."""
    if name is None:
        if getattr(tokenizer, "chat_template", None):
            _ensure_pad(model, tokenizer)
            return []
        name = "chatml"
    if name not in CHAT_TEMPLATES:
        raise ValueError(f"unknown chat template {name!r} (available: {', '.join(sorted(CHAT_TEMPLATES))})")
    tokenizer.chat_template = CHAT_TEMPLATES[name]
    needed, eos = _SPECIAL[name]
    missing = [t for t in needed if t not in tokenizer.get_vocab()]
    added: list[int] = []
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
        added = tokenizer.convert_tokens_to_ids(missing)
        model.resize_token_embeddings(len(tokenizer))
    if eos is not None and tokenizer.eos_token != eos:
        tokenizer.eos_token = eos
        model.config.eos_token_id = tokenizer.eos_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.eos_token_id = tokenizer.eos_token_id
    _ensure_pad(model, tokenizer)
    return added


def _ensure_pad(model: Any, tokenizer: Any) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
