"""The one retry helper every remote call goes through (Hub, OpenAI, Azure, Ray, Spaces).

``call_with_retries(fn, what=..., log=...)`` calls ``fn`` again after a transient failure
(HTTP 408/429/5xx, a dropped or refused connection, a timeout), waiting what the service
asked for (``Retry-After`` / ``retry-after-ms``) or an exponential backoff, and logs each
retry through the step's log function. Anything else is raised at once. Only use it for
calls that are safe to repeat (reads, uploads of the same content, idempotent PUTs); a call
that creates something must look for it before trying again (see trainers/hosted.py).

The classification works on the exceptions of every client ftpipe uses without importing
any of them: it reads the status code and headers where the client puts them
(``exc.status_code``, ``exc.code`` for urllib, ``exc.response.status_code``/``.status``)
and recognises transport errors by the libraries already loaded.
"""

from __future__ import annotations

import email.utils
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from ftpipe.spec.interpolate import redact

T = TypeVar("T")

LogFn = Callable[[str], None]

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
DEFAULT_ATTEMPTS = 5
BASE_DELAY_S = 0.5
MAX_DELAY_S = 30.0  # a longer Retry-After is capped: the step's own timeout is the real bound
BACKOFF = 2.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait. ``sleep`` is injectable so tests can count waits."""

    attempts: int = DEFAULT_ATTEMPTS
    base_delay: float = BASE_DELAY_S
    max_delay: float = MAX_DELAY_S
    backoff: float = BACKOFF

    def delay(self, attempt: int, asked: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: what the service asked for, else
        exponential backoff; never more than ``max_delay``."""
        if asked is not None:
            return min(max(asked, 0.0), self.max_delay)
        return min(self.base_delay * self.backoff ** (attempt - 1), self.max_delay)


DEFAULT_POLICY = RetryPolicy()


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, whichever client raised it."""
    for holder in (exc, getattr(exc, "response", None)):
        if holder is None:
            continue
        for attr in ("status_code", "status"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    code = getattr(exc, "code", None)  # urllib.error.HTTPError
    if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
        return code
    return None


def headers_of(exc: BaseException) -> Any:
    """The response headers an exception carries (a mapping with ``.get``), or None."""
    for holder in (getattr(exc, "response", None), exc):
        headers = getattr(holder, "headers", None)
        if headers is not None and hasattr(headers, "get"):
            return headers
    return None


def retry_after(exc: BaseException) -> float | None:
    """Seconds the service asked us to wait (``retry-after-ms``, ``retry-after`` in seconds
    or as an HTTP date), if it said."""
    headers = headers_of(exc)
    return retry_after_from_headers(headers) if headers is not None else None


def retry_after_from_headers(headers: Any) -> float | None:
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except (TypeError, ValueError):
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


_TRANSPORT_ERRORS = (
    # (module, attribute): looked up only if the module is already imported
    ("httpx", "TransportError"),
    ("httpx2", "TransportError"),
    ("requests", "ConnectionError"),
    ("requests", "Timeout"),
    ("urllib3.exceptions", "ProtocolError"),
    ("urllib3.exceptions", "NewConnectionError"),
    ("openai", "APIConnectionError"),  # includes APITimeoutError
    ("aiohttp", "ClientConnectionError"),
)


def is_transport_error(exc: BaseException) -> bool:
    """A connection that failed, dropped or timed out (any client's transport errors)."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    for module, attr in _TRANSPORT_ERRORS:
        mod = sys.modules.get(module)  # not imported: none of its errors can be here
        cls = getattr(mod, attr, None) if mod is not None else None
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    urllib_error = sys.modules.get("urllib.error")
    if urllib_error is not None and isinstance(exc, urllib_error.URLError) and status_of(exc) is None:
        return True  # URLError without an HTTP status: refused/reset connection, DNS failure
    return False


def is_transient(exc: BaseException) -> bool:
    """Worth trying again: rate limiting, a server error, or a dropped connection."""
    status = status_of(exc)
    if status is not None:
        return status in TRANSIENT_STATUS or status >= 500
    return is_transport_error(exc)


def describe(exc: BaseException) -> str:
    """``Type: first line`` of an exception, for a log line."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    status = status_of(exc)
    head = f"HTTP {status}, " if status is not None else ""
    return f"{head}{type(exc).__name__}: {lines[0] if lines else 'no message'}"


def call_with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    log: LogFn | None = None,
    attempts: int | None = None,
    is_transient: Callable[[BaseException], bool] = is_transient,
    retry_after: Callable[[BaseException], float | None] = retry_after,
    policy: RetryPolicy | None = None,
    secrets: Iterable[str] = (),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``fn()``, tried again after each transient failure, at most ``attempts`` times in all.

    The last failure (or the first that is not transient) is raised unchanged, so the
    caller's error translation (``hub_errors``, ``openai_errors``, ...) still applies.
    Each retry is logged as ``<what>: attempt N failed (...); retrying in Xs``.
    """
    policy = policy or DEFAULT_POLICY
    total = attempts if attempts is not None else policy.attempts
    secret_values = tuple(secrets)
    for attempt in range(1, max(total, 1) + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt >= total or not is_transient(exc):
                raise
            wait = policy.delay(attempt, retry_after(exc))
            if log is not None:
                log(
                    redact(
                        f"{what}: attempt {attempt}/{total} failed ({describe(exc)}); retrying in {wait:.2f}s",
                        secret_values,
                    )
                )
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
