"""Hugging Face Hub errors → ftpipe errors (the one place that knows the client's types)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ftpipe.errors import RemoteError

_HINTS = {
    401: "the token is missing or invalid: set HF_TOKEN (a token with write access for uploads)",
    403: "the token may not do this (a gated repo needs access granted on the Hub; uploads need a write token)",
    404: "check the repo id and its type; a private repo also answers 404 without a valid token",
    409: "the repo or resource exists already (or a concurrent commit changed the branch): run again",
    429: "the Hub is rate limiting: wait and run again",
}


@contextmanager
def hub_errors(what: str) -> Iterator[None]:
    try:
        from huggingface_hub import errors as hf_errors
    except ImportError:  # pragma: no cover
        yield
        return
    try:
        yield
    except hf_errors.GatedRepoError as exc:
        raise RemoteError(
            "Hugging Face Hub",
            f"{what}: the repo is gated",
            status=403,
            code="GatedRepo",
            request_id=_rid(exc),
            hint=_HINTS[403],
        ) from None
    except hf_errors.RepositoryNotFoundError as exc:
        raise RemoteError(
            "Hugging Face Hub",
            f"{what}: repository not found",
            status=_status(exc) or 404,
            code="RepoNotFound",
            request_id=_rid(exc),
            hint=_HINTS[404],
        ) from None
    except hf_errors.RevisionNotFoundError as exc:
        raise RemoteError(
            "Hugging Face Hub",
            f"{what}: revision not found",
            status=404,
            code="RevisionNotFound",
            request_id=_rid(exc),
            hint="check the revision (branch, tag or commit)",
        ) from None
    except hf_errors.EntryNotFoundError as exc:
        raise RemoteError(
            "Hugging Face Hub", f"{what}: file not found", status=404, code="EntryNotFound", request_id=_rid(exc)
        ) from None
    except hf_errors.HfHubHTTPError as exc:
        status = _status(exc)
        msg = getattr(exc, "server_message", None) or _first_line(exc)
        hint = _HINTS.get(status or 0) or (
            "the Hub had a server error: run again later" if (status or 0) >= 500 else None
        )
        raise RemoteError(
            "Hugging Face Hub", f"{what}: {msg}", status=status, request_id=_rid(exc), hint=hint
        ) from None
    except hf_errors.InferenceEndpointTimeoutError as exc:
        raise RemoteError(
            "Hugging Face Inference Endpoints",
            f"{what}: {_first_line(exc)}",
            hint="the endpoint is still starting: raise timeout_s or run again later",
        ) from None
    except hf_errors.InferenceEndpointError as exc:
        raise RemoteError(
            "Hugging Face Inference Endpoints", f"{what}: {_first_line(exc)}", hint="see the endpoint's logs on the Hub"
        ) from None
    except hf_errors.OfflineModeIsEnabled:
        raise RemoteError(
            "Hugging Face Hub",
            f"{what}: offline mode is on (HF_HUB_OFFLINE=1)",
            hint="unset HF_HUB_OFFLINE to reach the Hub",
        ) from None
    except Exception as exc:
        if not is_transport_error(exc):
            raise
        raise RemoteError(
            "Hugging Face Hub",
            f"{what}: could not reach the Hub ({type(exc).__name__}: {_first_line(exc)})",
            hint="check the network and HF_ENDPOINT, then run again",
        ) from None


RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def is_transport_error(exc: BaseException) -> bool:
    """A connection that failed or dropped (the HTTP library's transport errors)."""
    from ftpipe.remote.retry import is_transport_error as transport

    return transport(exc)


def is_retryable(exc: BaseException) -> bool:
    """Worth trying again: rate limiting, a server error, or a dropped connection."""
    from huggingface_hub import errors as hf_errors

    if isinstance(exc, hf_errors.HfHubHTTPError):
        return _status(exc) in RETRYABLE_STATUS
    return is_transport_error(exc)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _status(exc: Exception) -> int | None:
    resp = getattr(exc, "response", None)
    return getattr(resp, "status_code", None)


def _rid(exc: Exception) -> str | None:
    return getattr(exc, "request_id", None)
