"""OpenAI / Azure OpenAI client errors → ftpipe errors (the one place that knows the
``openai`` client's exception types).

Every call a hosted backend makes goes through :func:`openai_errors` (or :func:`translate`),
so a failure always reads the same way: the service, what ftpipe was doing, the provider's
message, HTTP status, provider error code, request id, job id, and a hint saying what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Mapping

from ftpipe.errors import RemoteError

# hints that hold for any OpenAI-compatible service; a backend passes its own (``hints=``)
GENERIC_HINTS: dict[int, str] = {
    401: "the API key or token was refused: check the trainer block's credentials",
    403: "the credentials may not do this: check the account's permissions for fine-tuning",
    404: "not found: check model.base and the service address",
    429: "rate limited or out of quota: wait and run again (a submitted job is re-attached, not re-submitted)",
}
_SERVER_HINT = (
    "the service had an error: run again later (`ftpipe run` re-attaches to a job that was "
    "submitted, it does not submit a second one)"
)
RETRIABLE_STATUS = frozenset({408, 409, 429})


def service_label(provider: str) -> str:
    """The provider's name for people, as the trainer plugin that makes its models declares
    it (``TrainerCaps.service``); the provider id itself when no plugin does."""
    from ftpipe import registry

    for plugin in registry.plugins()["trainer"].values():
        if plugin.caps.provider == provider and plugin.caps.service:
            return str(plugin.caps.service)
    return provider or "OpenAI-compatible API"


def translate(
    exc: BaseException,
    what: str,
    *,
    provider: str = "",
    job_id: str | None = None,
    where: str | None = None,
    hints: Mapping[int, str] | None = None,
) -> RemoteError:
    """The RemoteError for one exception raised by the ``openai`` client. ``hints`` are the
    backend's own per-status hints (else generic ones)."""
    import openai

    service = service_label(provider)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") or _first_line(exc.message)
        code = exc.code or (str(body["code"]) if body.get("code") is not None else None)
        param = body.get("param") or body.get("target")
        if param:
            message += f" (parameter {param})"
        hint = (hints if hints is not None else GENERIC_HINTS).get(status) or (_SERVER_HINT if status >= 500 else None)
        return RemoteError(
            service,
            f"{what}: {message}",
            status=status,
            code=code,
            request_id=request_id(exc),
            job_id=job_id,
            hint=hint,
        )
    if isinstance(exc, openai.APITimeoutError):
        return RemoteError(
            service,
            f"{what}: the request timed out",
            job_id=job_id,
            hint=f"the service did not answer in time{_at(where)}: run again; a submitted job is re-attached",
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f" ({type(cause).__name__}: {cause})" if cause else ""
        return RemoteError(
            service,
            f"{what}: cannot reach the service{detail}",
            job_id=job_id,
            hint=f"check the network and the address{_at(where)} (trainer.base_url / "
            "OPENAI_BASE_URL, or trainer.endpoint for Azure)",
        )
    if isinstance(exc, openai.OpenAIError):
        return RemoteError(service, f"{what}: {_first_line(str(exc))}", job_id=job_id)
    return RemoteError(service, f"{what}: {type(exc).__name__}: {exc}", job_id=job_id)


@contextmanager
def openai_errors(
    what: str,
    *,
    provider: str = "",
    job_id: str | None = None,
    where: str | None = None,
    hints: Mapping[int, str] | None = None,
) -> Iterator[None]:
    """Turn the ``openai`` client's exceptions raised inside the block into RemoteError."""
    import openai

    try:
        yield
    except openai.OpenAIError as exc:
        raise translate(exc, what, provider=provider, job_id=job_id, where=where, hints=hints) from None


def is_retriable(exc: BaseException) -> bool:
    """Whether trying again later may succeed (the client's own rule: connection errors,
    timeouts, 408, 409, 429, 5xx)."""
    import openai

    if isinstance(exc, openai.APIConnectionError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRIABLE_STATUS or exc.status_code >= 500
    return False


def is_not_found(exc: BaseException) -> bool:
    import openai

    return isinstance(exc, openai.NotFoundError)


def retry_after(exc: BaseException) -> float | None:
    """Seconds the service asked us to wait (``retry-after-ms`` / ``retry-after``), if any."""
    from ftpipe.remote.retry import retry_after as asked

    return asked(exc)


def request_id(exc: BaseException) -> str | None:
    rid = getattr(exc, "request_id", None)
    if rid:
        return rid
    headers: Any = getattr(getattr(exc, "response", None), "headers", None)
    return headers.get("apim-request-id") if headers is not None else None


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else "no message"


def _at(where: str | None) -> str:
    return f" ({where})" if where else ""
