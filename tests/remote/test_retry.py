"""The shared retry helper against a real loopback HTTP server (urllib) and real client errors."""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from ftpipe.remote.retry import RetryPolicy, call_with_retries, is_transient, retry_after, status_of


class _Flaky(http.server.BaseHTTPRequestHandler):
    script: list[tuple[int, dict[str, str]]] = []
    hits = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        cls = type(self)
        cls.hits += 1
        status, headers = cls.script.pop(0) if cls.script else (200, {})
        if status == 0:  # drop the connection without an answer
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        body = b'{"ok": true}' if status == 200 else b'{"error": "x"}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Flaky.script = []
    _Flaky.hits = 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()


def test_retries_429_5xx_and_dropped_connections_honouring_retry_after(server: str) -> None:
    _Flaky.script = [(429, {"Retry-After": "3"}), (503, {"retry-after-ms": "250"}), (0, {}), (200, {})]
    waits: list[float] = []
    lines: list[str] = []
    body = call_with_retries(lambda: _get(server), what="GET thing", log=lines.append, attempts=5, sleep=waits.append)
    assert body == b'{"ok": true}'
    assert _Flaky.hits == 4
    assert waits[:2] == [3.0, 0.25]  # what the server asked for
    assert waits[2] == RetryPolicy().delay(3, None)  # no header: backoff
    assert len(lines) == 3 and "GET thing: attempt 1/5 failed (HTTP 429" in lines[0] and "retrying in 3.00s" in lines[0]


def test_gives_up_after_attempts_and_raises_the_last_error(server: str) -> None:
    _Flaky.script = [(500, {})] * 3
    waits: list[float] = []
    with pytest.raises(urllib.error.HTTPError) as info:
        call_with_retries(lambda: _get(server), what="GET", attempts=3, sleep=waits.append)
    assert info.value.code == 500
    assert _Flaky.hits == 3 and len(waits) == 2


def test_client_errors_are_not_retried(server: str) -> None:
    _Flaky.script = [(404, {}), (200, {})]
    with pytest.raises(urllib.error.HTTPError):
        call_with_retries(lambda: _get(server), what="GET", sleep=lambda s: None)
    assert _Flaky.hits == 1


def test_retry_after_is_capped_and_secrets_are_redacted(server: str) -> None:
    _Flaky.script = [(429, {"Retry-After": "3600"}), (200, {})]
    waits: list[float] = []
    lines: list[str] = []
    call_with_retries(
        lambda: _get(server),
        what="GET with sk-secret-token",
        log=lines.append,
        policy=RetryPolicy(max_delay=2.0),
        secrets=("sk-secret-token",),
        sleep=waits.append,
    )
    assert waits == [2.0]
    assert "sk-secret-token" not in lines[0] and "***" in lines[0]


def test_classification_of_real_client_errors() -> None:
    import httpx2 as httpx
    import openai

    request = httpx.Request("GET", "http://127.0.0.1:1/")
    response = httpx.Response(429, headers={"retry-after": "7"}, request=request)
    rate = openai.RateLimitError("slow down", response=response, body=None)
    assert status_of(rate) == 429 and is_transient(rate) and retry_after(rate) == 7.0
    bad = openai.BadRequestError("no", response=httpx.Response(400, request=request), body=None)
    assert not is_transient(bad)
    assert is_transient(openai.APIConnectionError(request=request))
    assert is_transient(httpx.ConnectError("refused"))
    assert is_transient(ConnectionResetError())
    assert not is_transient(ValueError("a bug"))


def test_a_non_transient_predicate_overrides(server: str) -> None:
    _Flaky.script = [(503, {}), (200, {})]
    with pytest.raises(urllib.error.HTTPError):
        call_with_retries(lambda: _get(server), what="GET", is_transient=lambda e: False, sleep=lambda s: None)


def test_ray_errors_are_classified_from_their_text() -> None:
    from ftpipe.remote.ray import is_transient as ray_transient

    assert ray_transient(RuntimeError("Request failed with status code 503: the dashboard is restarting"))
    assert ray_transient(ConnectionRefusedError())
    assert not ray_transient(RuntimeError("Request failed with status code 404: Job x does not exist"))
    assert not ray_transient(ValueError("bad entrypoint"))
