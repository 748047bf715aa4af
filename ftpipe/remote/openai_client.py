"""The one factory for ``openai`` clients (OpenAI and Azure OpenAI, and any
OpenAI-compatible server): the same retry policy for training, evaluation, cancel and
deploy smoke tests. The client retries 408/409/429/5xx and dropped connections itself,
honouring ``Retry-After``; creating a fine-tuning job turns that off (``with_options``) and
looks for the job before it tries again."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ftpipe.errors import MissingDependency

MAX_RETRIES = 3  # the client's own retries (exponential backoff, Retry-After honoured)
TIMEOUT_S = 600.0


def _openai(extra: str, what: str) -> Any:
    try:
        import openai
    except ImportError:
        raise MissingDependency("openai", extra, what) from None
    return openai


def openai_client(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    organization: str | None = None,
    extra: str = "openai",
    what: str = "an OpenAI-compatible API",
    max_retries: int = MAX_RETRIES,
) -> Any:
    """``openai.OpenAI``; unset values come from the client's environment variables
    (OPENAI_API_KEY, OPENAI_BASE_URL)."""
    openai = _openai(extra, what)
    return openai.OpenAI(
        api_key=api_key,
        base_url=base_url or os.environ.get("OPENAI_BASE_URL") or None,
        organization=organization,
        max_retries=max_retries,
        timeout=TIMEOUT_S,
    )


def azure_openai_client(
    *,
    endpoint: str,
    api_version: str,
    api_key: str | None = None,
    token_provider: Callable[[], str] | None = None,
    extra: str = "azure",
    what: str = "Azure OpenAI",
    max_retries: int = MAX_RETRIES,
) -> Any:
    """``openai.AzureOpenAI`` with an API key or an Entra ID bearer-token provider."""
    openai = _openai(extra, what)
    kwargs: dict[str, Any] = {
        "azure_endpoint": endpoint,
        "api_version": api_version,
        "max_retries": max_retries,
        "timeout": TIMEOUT_S,
    }
    if token_provider is not None:
        kwargs["azure_ad_token_provider"] = token_provider
    else:
        kwargs["api_key"] = api_key
    return openai.AzureOpenAI(**kwargs)
