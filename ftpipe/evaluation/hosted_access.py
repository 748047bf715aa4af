"""How evaluation reaches a hosted fine-tune: through the trainer plugin that made it.

A trainer whose caps say ``eval_access="chat-api"`` provides ``chat_client(trainer)`` (an
OpenAI-compatible client with the trainer block's credentials) and may provide
``serve_for_evaluation(ctx, model_id)``, a context manager yielding the name to call the
model by (Azure OpenAI serves a fine-tune only through a deployment). The core never
spells a provider's name: it matches ``ModelRef.provider`` with ``TrainerCaps.provider``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ftpipe.contracts import StepContext

# ``openai:<model>`` baselines: any OpenAI-compatible API, credentials from the client's own
# environment variables (OPENAI_API_KEY, OPENAI_BASE_URL) unless the trainer block has them.
ENV_PROVIDER = "openai"


def trainer_plugin_for(trainer: Any, provider: str | None) -> Any | None:
    """The pipeline's trainer plugin if it serves models of ``provider`` through a chat API."""
    from ftpipe import registry

    backend = getattr(trainer, "backend", None)
    if backend is None or provider is None:
        return None
    plugin = registry.get("trainer", backend)
    if plugin.caps.eval_access == "chat-api" and plugin.caps.provider == provider:
        return plugin
    return None


def chat_client(provider: str, trainer: Any | None) -> Any:
    """An OpenAI-compatible client that reaches models of ``provider``."""
    from ftpipe import registry
    from ftpipe.evaluation.generate import GenerationError
    from ftpipe.remote.openai_client import openai_client

    plugin = trainer_plugin_for(trainer, provider)
    if plugin is not None:
        return plugin.load().chat_client(trainer)
    if provider != ENV_PROVIDER:
        makers = sorted(n for n, p in registry.plugins()["trainer"].items() if p.caps.provider == provider)
        raise GenerationError(
            f"a {provider} model is reached with the credentials of a "
            f"{' or '.join(makers) or provider} trainer block, and this pipeline has none"
        )
    import openai

    try:
        return openai_client(what="evaluating a hosted model")
    except openai.OpenAIError as exc:  # no OPENAI_API_KEY
        raise GenerationError(
            f"an openai:<model> baseline needs OpenAI credentials: {exc}",
            hint="export OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server)",
        ) from None


def chat_hints(provider: str, model: str) -> dict[int, str]:
    """Hints per HTTP status for chat completions with models of ``provider``, from the
    trainer plugin that makes them (an optional ``chat_hints(model) -> dict`` method)."""
    from ftpipe import registry

    for plugin in registry.plugins()["trainer"].values():
        if provider and plugin.caps.provider == provider:
            hints = getattr(plugin.load(), "chat_hints", None)
            if hints is not None:
                return dict(hints(model))
    return {}


@contextmanager
def routed(ctx: StepContext, variants: list[Any]) -> Iterator[list[Any]]:
    """``variants`` with the hosted fine-tune (the first variant) called by the name its
    trainer plugin serves it under for the evaluation (unchanged for most providers)."""
    first = variants[0] if variants else None
    src = getattr(first, "source", None)
    if first is None or src is None or src.kind != "hosted" or not src.model_id:
        yield variants
        return
    plugin = trainer_plugin_for(getattr(ctx.pipeline, "trainer", None), src.provider)
    serve = getattr(plugin.load(), "serve_for_evaluation", None) if plugin is not None else None
    if serve is None:
        yield variants
        return
    with serve(ctx, src.model_id) as name:
        if name == src.model_id:
            yield variants
        else:  # the report still shows the fine-tune's id (the label)
            yield [dataclasses.replace(first, source=dataclasses.replace(src, model_id=name)), *variants[1:]]
