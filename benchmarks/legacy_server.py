"""The one-request-at-a-time OpenAI-compatible server that ``ftpipe serve`` used to be.

Kept only as the comparison in ``bench_serve.py`` (the issue asks for the new engines to be
measured against it in the same run); ``ftpipe serve`` no longer uses it. A hand-written
``http.server`` that decodes token by token under one lock.
"""

from __future__ import annotations

import json
import os
import secrets as _secrets
import time
from collections.abc import Generator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ftpipe.serve import LoadedModel
from ftpipe.serving.protocol import DEFAULT_MAX_TOKENS, ApiError, Request, parse_request


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:  # a base model without a template: a plain transcript
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass
class Outcome:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "length"


def _eos_ids(lm: LoadedModel) -> set[int]:
    ids: set[int] = set()
    for value in (getattr(lm.model.generation_config, "eos_token_id", None), lm.tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def generate(lm: LoadedModel, req: Request, outcome: Outcome) -> Generator[str, None, None]:
    """Yield the completion's text in pieces; fills ``outcome`` as it goes. Stop strings are
    never yielded: text that could begin one is held back until it cannot."""
    import torch

    prompt = render_prompt(lm.tokenizer, req.messages)
    outcome.prompt_tokens = len(prompt)
    room = (lm.context_length - len(prompt)) if lm.context_length else None
    if room is not None and room < 1:
        raise ApiError(
            400,
            f"the prompt has {len(prompt)} tokens; this model's context is {lm.context_length}",
            param="messages",
            code="context_length_exceeded",
        )
    limit = req.max_tokens or DEFAULT_MAX_TOKENS
    limit = min(limit, room) if room is not None else limit
    eos = _eos_ids(lm)
    holdback = max((len(s) for s in req.stop), default=1) - 1
    rng = torch.Generator(device="cpu")
    rng.manual_seed(req.seed if req.seed is not None else _secrets.randbits(63))
    device = next(lm.model.parameters()).device
    generated: list[int] = []
    sent = 0
    with lm.lock, torch.inference_mode():
        ids = torch.tensor([prompt], device=device)
        past = None
        while len(generated) < limit:
            out = lm.model(input_ids=ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1].float().cpu()
            token = int(torch.argmax(logits)) if req.temperature == 0 else _sample(logits, req, rng)
            if token in eos:
                outcome.finish_reason = "stop"
                break
            generated.append(token)
            outcome.completion_tokens = len(generated)
            ids = torch.tensor([[token]], device=device)
            text = lm.tokenizer.decode(generated, skip_special_tokens=True)
            cut = min((i for i in (text.find(s) for s in req.stop) if i >= 0), default=-1)
            if cut >= 0:
                outcome.finish_reason = "stop"
                if cut > sent:
                    yield text[sent:cut]
                return
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            safe = len(text) - holdback if req.stop else len(text)
            if safe > sent:
                yield text[sent:safe]
                sent = safe
        text = lm.tokenizer.decode(generated, skip_special_tokens=True).rstrip("\ufffd")
        if len(text) > sent:
            yield text[sent:]


def _sample(logits: Any, req: Request, rng: Any) -> int:
    import torch

    probs = torch.softmax(logits / req.temperature, dim=-1)
    if req.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < req.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=rng))


# --------------------------------------------------------------------------- HTTP


def _completion_id() -> str:
    return "chatcmpl-" + _secrets.token_hex(12)


class _Handler(BaseHTTPRequestHandler):
    server_version = "ftpipe-serve"
    lm: LoadedModel  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("FTPIPE_SERVE_LOG"):
            super().log_message(format, *args)

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, err: ApiError) -> None:
        self._json(err.status, err.body())

    def _model_obj(self) -> dict:
        return {"id": self.lm.name, "object": "model", "created": self.lm.created, "owned_by": "ftpipe"}

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            self._json(200, {"object": "list", "data": [self._model_obj()]})
        elif path.startswith("/v1/models/"):
            wanted = path[len("/v1/models/") :]
            if wanted == self.lm.name:
                self._json(200, self._model_obj())
            else:
                self._error(
                    ApiError(404, f"The model `{wanted}` does not exist", param="model", code="model_not_found")
                )
        elif path == "/health":
            self._json(200, {"status": "ok", "model": self.lm.name})
        else:
            self._error(ApiError(404, f"Unknown request URL: GET {path}", code="unknown_url"))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path != "/v1/chat/completions":
                raise ApiError(404, f"Unknown request URL: POST {path}", code="unknown_url")
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except (ValueError, UnicodeDecodeError):
                raise ApiError(400, "the request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise ApiError(400, "the request body must be a JSON object")
            req = parse_request(body, self.lm.name)
            if req.stream:
                self._stream(req)
            else:
                self._complete(req)
        except ApiError as err:
            self._error(err)
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 in OpenAI's shape, the server lives on
            self._error(ApiError(500, f"{type(exc).__name__}: {exc}", type_="server_error"))

    def _complete(self, req: Request) -> None:
        outcome = Outcome()
        text = "".join(generate(self.lm, req, outcome))
        self._json(
            200,
            {
                "id": _completion_id(),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.lm.name,
                "system_fingerprint": "ftpipe",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": outcome.finish_reason,
                    }
                ],
                "usage": _usage(outcome),
            },
        )

    def _stream(self, req: Request) -> None:
        outcome = Outcome()
        pieces = generate(self.lm, req, outcome)
        first = next(pieces, None)  # errors (context too long) still answer with a status
        cid, created = _completion_id(), int(time.time())

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.lm.name,
                "system_fingerprint": "ftpipe",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self._event(chunk({"role": "assistant", "content": ""}))
            if first:
                self._event(chunk({"content": first}))
            for piece in pieces:
                self._event(chunk({"content": piece}))
            self._event(chunk({}, outcome.finish_reason))
            if req.include_usage:
                self._event(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": self.lm.name,
                        "choices": [],
                        "usage": _usage(outcome),
                    }
                )
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pieces.close()  # the client went away: stop generating
        self.close_connection = True

    def _event(self, obj: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        self.wfile.flush()


def _usage(outcome: Outcome) -> dict:
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
    }


def make_server(lm: LoadedModel, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server bound to (host, port) serving ``lm``; call ``serve_forever()`` on it."""
    handler = type("Handler", (_Handler,), {"lm": lm})
    # The listen backlog of 5 resets connections when 32 clients connect at once; the
    # benchmark measures generation, not that.
    server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 128})
    server = server_class((host, port), handler)
    server.daemon_threads = True
    return server


def main() -> None:
    """``python benchmarks/legacy_server.py FOLDER NAME``: serve on a free loopback port."""
    import sys
    from pathlib import Path

    from ftpipe.serve import load_model

    folder, name = sys.argv[1], sys.argv[2]
    lm = load_model(Path(folder), name)
    server = make_server(lm, "127.0.0.1", 0)
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host
    print(f"serving model '{name}' at http://{host}:{port}/v1 (legacy)", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
