"""HTTP plumbing of the loopback OpenAI/Azure double: requests, responses, errors in each
surface's shape, injected faults, cursor pages and the threaded server."""

from __future__ import annotations

import email.parser
import email.policy
import json
import random
import socket
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from tests.fakes._http import read_body

if TYPE_CHECKING:  # pragma: no cover - typing only
    import re

    from tests.fakes.openai_server import OpenAIServer


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    fault: int | str
    times: int
    after_handling: bool


@dataclass
class Response:
    status: int
    body: Any = None  # dict/list -> JSON; bytes -> as is; None -> empty
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type


@dataclass
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    surface: str  # openai | azure | arm

    def arg(self, name: str, default: str | None = None) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return default

    @property
    def api_version(self) -> str:
        return self.arg("api-version") or ""

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "We could not parse the JSON body of your request.", code="invalid_json") from None


def fault_response(fault: Fault, surface: str) -> Response | None:
    if fault.fault == "drop":
        return None
    status = int(fault.fault)
    messages = {
        429: "Rate limit reached. Please try again later.",
        500: "The server had an error while processing your request. Sorry about that!",
    }
    exc = ApiError(
        status,
        messages.get(status, f"Injected fault {status}."),
        code="rate_limit_exceeded" if status == 429 else None,
        type="requests" if status == 429 else "server_error" if status >= 500 else "invalid_request_error",
    )
    resp = error_response(surface, exc)
    if status == 429:
        resp.headers.update({"retry-after": "0", "retry-after-ms": "10"})
    return resp


def error_response(surface: str, exc: ApiError) -> Response:
    body: dict[str, Any]
    if surface == "openai":
        body = {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}
    elif surface == "azure":
        code = exc.code or {400: "invalidPayload", 401: "401", 404: "notFound", 429: "tooManyRequests"}.get(
            exc.status, "internalServerError" if exc.status >= 500 else str(exc.status)
        )
        body = {"error": {"code": code, "message": exc.message, "target": exc.param, "details": [], "innererror": None}}
    else:
        body = {
            "error": {
                "code": exc.code or ("InternalServerError" if exc.status >= 500 else "BadRequest"),
                "message": exc.message,
            }
        }
    return Response(exc.status, body)


def page(items: list[dict[str, Any]], req: Request, *, default_limit: int, max_limit: int) -> dict[str, Any]:
    """A cursor page: items after the one whose id is ``after``, ``limit`` of them."""
    raw = req.arg("limit")
    try:
        limit = default_limit if raw is None else int(raw)
    except ValueError:
        raise ApiError(400, f"Invalid limit: {raw!r}.", param="limit", code="invalid_value") from None
    if limit < 1:
        raise ApiError(400, f"Invalid limit: {limit}. Must be at least 1.", param="limit", code="invalid_value")
    limit = min(limit, max_limit)
    after = req.arg("after")
    start = 0
    if after:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    data = items[start : start + limit]
    return {"object": "list", "data": data, "has_more": start + limit < len(items)}


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(400, "Expected a multipart/form-data body.", param="file", code="invalid_request")
    raw = b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    if not message.is_multipart():
        raise ApiError(400, "Could not parse the multipart body.", param="file", code="invalid_request")
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True)
            parts[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return parts


# ---------------------------------------------------------------- HTTP plumbing


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: OpenAIServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        # Without this, a response written in two parts waits ~40 ms on delayed ACKs.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.owner.lock:
            self.server.owner.conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.owner.lock:
                self.server.owner.conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _serve(self) -> None:
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        resp = self.server.owner.handle(self.command, self.path, headers, body)
        if resp is None:  # "drop": close without a status line
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if isinstance(resp.body, (dict, list)):
            payload = json.dumps(resp.body).encode()
            resp.headers.setdefault("content-type", "application/json")
        else:
            payload = resp.body or b""
        self.send_response(resp.status)
        request_id = f"req_{random.getrandbits(128):032x}"
        self.send_header("x-request-id", request_id)
        if self.path.startswith("/openai/"):
            self.send_header("apim-request-id", request_id)
        for key, value in resp.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self._headers_buffer.append(b"\r\n" + payload)  # type: ignore[attr-defined]  # one write
        self.flush_headers()

    def _read_body(self) -> bytes:
        return read_body(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve
