"""``ftpipe serve`` on transformers' serving stack (the code behind ``transformers serve``).

The engine is transformers' own: its ``ModelManager`` loads the folder once, its
``ChatCompletionHandler`` generates, greedy requests through continuous batching (paged
attention, requests join and leave the running batch every step), sampled requests one at a
time (continuous batching in this transformers version shares one sampling configuration
across the batch, so a request's own temperature/top_p/seed would be ignored there).

(This module imports fastapi: the ``serve`` command imports it, nothing else does.)

In front of it, in the same process (no second HTTP hop), a thin layer keeps the contract
ftpipe's clients rely on and ``transformers serve`` does not give: the model id is the
pipeline's name, an optional API key (``Authorization: Bearer``), request validation with
OpenAI-shaped errors (404 ``model_not_found``, 400 with ``param``), stop strings cut on the
text, ``stream_options.include_usage`` and the closing ``data: [DONE]``, no library
warnings in the console.
"""

from __future__ import annotations

import hmac
import json
import secrets as _secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ftpipe.serving.protocol import (
    DEFAULT_MAX_TOKENS,
    ApiError,
    Request,
    StopCutter,
    cut_at_stop,
    parse_request,
)


@dataclass(frozen=True)
class ServeOptions:
    continuous_batching: bool = True
    device: str = "auto"
    cb_num_blocks: int | None = None
    cb_max_batch_tokens: int | None = None


class Engine:
    """The loaded model and transformers' chat handlers for it."""

    def __init__(self, folder: Path, options: ServeOptions) -> None:
        import torch
        from transformers import ContinuousBatchingConfig
        from transformers.cli.serving.chat_completion import ChatCompletionHandler
        from transformers.cli.serving.model_manager import ModelManager
        from transformers.cli.serving.utils import GenerationState

        on_gpu = options.device != "cpu" and torch.cuda.is_available()
        # float32 on a CPU: bf16/fp16 matmuls there are slow or unsupported.
        self.model_id = str(folder)
        self.manager = ModelManager(
            device="auto" if on_gpu else "cpu",
            dtype="auto" if on_gpu else "float32",
            continuous_batching=options.continuous_batching,
            force_model=self.model_id,
            model_timeout=-1,
        )
        self.model, self.processor = self.manager.load_model_and_processor(
            self.manager.process_model_name(self.model_id)
        )
        cb_kwargs: dict[str, Any] = {
            k: v
            for k, v in {"num_blocks": options.cb_num_blocks, "max_batch_tokens": options.cb_max_batch_tokens}.items()
            if v is not None
        }
        if not on_gpu:
            # Sized for a CPU: the defaults reserve a cache so large that each step pays for it.
            cb_kwargs.setdefault("num_blocks", 256)
            cb_kwargs.setdefault("max_batch_tokens", 1024)
        cb_state = GenerationState(
            continuous_batching=options.continuous_batching,
            cb_config=ContinuousBatchingConfig(**cb_kwargs) if cb_kwargs else None,
        )
        self.batched = ChatCompletionHandler(model_manager=self.manager, generation_state=cb_state)
        self.sequential = ChatCompletionHandler(
            model_manager=self.manager, generation_state=GenerationState(continuous_batching=False)
        )
        self.context_length = getattr(self.model.config, "max_position_embeddings", None)
        self.generation_defaults = self.model.generation_config.to_diff_dict()
        self.states = (cb_state,)

    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        ids = self.tokenizer().apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        return len(ids)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer()(text, add_special_tokens=False)["input_ids"])

    def shutdown(self) -> None:
        for state in self.states:
            state.shutdown()
        self.manager.shutdown()


def _completion_id() -> str:
    return "chatcmpl-" + _secrets.token_hex(12)


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(obj: Any) -> str:
    return "data: " + (obj if isinstance(obj, str) else json.dumps(obj)) + "\n\n"


def _events(raw: str) -> list[Any]:
    """The JSON payloads of the ``data:`` events in ``raw`` (one chunk of an SSE body)."""
    out = []
    for block in raw.split("\n\n"):
        block = block.strip()
        if block.startswith("data: ") and block[6:].strip() != "[DONE]":
            out.append(json.loads(block[6:]))
    return out


def build_app(engine: Engine, name: str, *, api_key: str | None = None) -> Any:
    """The ASGI app serving ``engine`` as the model ``name``."""
    created = int(time.time())
    app = FastAPI(title="ftpipe serve", docs_url=None, redoc_url=None, openapi_url=None)

    def error(err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: HttpRequest, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error(ApiError(404, f"Unknown request URL: {request.method} {request.url.path}", code="unknown_url"))
        if exc.status_code == 405:
            return error(ApiError(405, f"{request.method} is not allowed on {request.url.path}"))
        return error(ApiError(exc.status_code, str(exc.detail)))

    @app.middleware("http")
    async def _auth(request: HttpRequest, call_next: Any) -> Any:
        if api_key and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), api_key.encode()):
                return error(
                    ApiError(
                        401,
                        "Incorrect API key provided: send it as the OpenAI client's api_key "
                        "(Authorization: Bearer ...)",
                        code="invalid_api_key",
                    )
                )
        return await call_next(request)

    def model_obj() -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "ftpipe"}

    @app.get("/v1/models")
    async def _models() -> dict:
        return {"object": "list", "data": [model_obj()]}

    @app.get("/v1/models/{wanted:path}")
    async def _model(wanted: str) -> Any:
        if wanted != name:
            return error(ApiError(404, f"The model `{wanted}` does not exist", param="model", code="model_not_found"))
        return model_obj()

    @app.get("/health")
    async def _health() -> Any:
        if not all(state.is_cb_alive() for state in engine.states):
            return JSONResponse({"status": "unhealthy", "model": name}, status_code=503)
        return {"status": "ok", "model": name}

    @app.post("/v1/chat/completions")
    async def _chat(request: HttpRequest) -> Any:
        try:
            try:
                body = json.loads(await request.body() or b"null")
            except (ValueError, UnicodeDecodeError):
                raise ApiError(400, "the request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise ApiError(400, "the request body must be a JSON object")
            req = parse_request(body, name)
            prompt_tokens = engine.prompt_tokens(req.messages)
            room = engine.context_length - prompt_tokens if engine.context_length else None
            if room is not None and room < 1:
                raise ApiError(
                    400,
                    f"the prompt has {prompt_tokens} tokens; this model's context is {engine.context_length}",
                    param="messages",
                    code="context_length_exceeded",
                )
            limit = req.max_tokens or DEFAULT_MAX_TOKENS
            limit = min(limit, room) if room is not None else limit
            forward: dict[str, Any] = {
                "model": engine.model_id,
                "messages": req.messages,
                "max_tokens": limit,
                "temperature": req.temperature,
                "top_p": req.top_p,
                "stream": req.stream,
            }
            greedy = req.temperature == 0
            if not greedy:
                # transformers serve never turns sampling on by itself (a model whose generation
                # config says do_sample=False would answer greedily at any temperature).
                forward["generation_config"] = json.dumps({**engine.generation_defaults, "do_sample": True})
                if req.seed is not None:
                    forward["seed"] = req.seed
            handler = engine.batched if greedy else engine.sequential
            upstream = await handler.handle_request(forward, _completion_id())
        except ApiError as err:
            return error(err)
        except HTTPException as exc:
            return error(ApiError(exc.status_code if exc.status_code != 422 else 400, str(exc.detail)))
        except Exception as exc:  # noqa: BLE001 - a failure answers in OpenAI's shape; the server lives on
            return error(ApiError(500, f"generation failed: {type(exc).__name__}: {exc}", type_="server_error"))
        if req.stream:
            return StreamingResponse(
                _stream(req, upstream, prompt_tokens),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return _complete(req, upstream, prompt_tokens)

    def _complete(req: Request, upstream: Any, prompt_tokens: int) -> Any:
        doc = json.loads(bytes(upstream.body))
        if upstream.status_code != 200 or "choices" not in doc:
            message = doc.get("error") or doc.get("detail") or doc
            return error(ApiError(500, f"generation failed: {message}", type_="server_error"))
        choice = doc["choices"][0]
        text, stopped = cut_at_stop(choice["message"].get("content") or "", req.stop)
        usage = doc.get("usage") or {}
        return {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "system_fingerprint": "ftpipe",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "stop" if stopped else choice.get("finish_reason", "stop"),
                }
            ],
            "usage": _usage(int(usage.get("prompt_tokens", prompt_tokens)), int(usage.get("completion_tokens", 0))),
        }

    async def _stream(req: Request, upstream: Any, prompt_tokens: int) -> AsyncIterator[str]:
        cid, made = _completion_id(), int(time.time())

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": made,
                "model": name,
                "system_fingerprint": "ftpipe",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }

        cutter = StopCutter(req.stop)
        raw_text = ""
        finish, usage = "stop", None
        body = upstream.body_iterator
        yield _sse(chunk({"role": "assistant", "content": ""}))
        try:
            async for raw in body:
                for event in _events(raw if isinstance(raw, str) else raw.decode()):
                    if "error" in event and "choices" not in event:
                        yield _sse(
                            {
                                "error": {
                                    "message": str(event["error"]),
                                    "type": "server_error",
                                    "param": None,
                                    "code": None,
                                }
                            }
                        )
                        return
                    for choice in event.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content") or ""
                        raw_text += piece
                        shown = cutter.feed(piece)
                        if shown:
                            yield _sse(chunk({"content": shown}))
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                    if event.get("usage"):
                        usage = event["usage"]
                if cutter.stopped:
                    break
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:  # a stop string ended it early: stop generating
                await aclose()
        if cutter.stopped:
            finish = "stop"
            usage = _usage(prompt_tokens, engine.count_tokens(raw_text))
        else:
            rest = cutter.flush()
            if rest:
                yield _sse(chunk({"content": rest}))
        yield _sse(chunk({}, finish))
        if req.include_usage:
            counts = usage or _usage(prompt_tokens, engine.count_tokens(raw_text))
            yield _sse(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": made,
                    "model": name,
                    "system_fingerprint": "ftpipe",
                    "choices": [],
                    "usage": _usage(int(counts["prompt_tokens"]), int(counts["completion_tokens"])),
                }
            )
        yield _sse("[DONE]")

    return app


def bind(host: str, port: int) -> Any:
    """A listening socket on (host, port); port 0 picks a free one."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def run(app: Any, sock: Any) -> None:
    """Serve ``app`` on ``sock`` until interrupted."""
    import os

    import uvicorn

    config = uvicorn.Config(
        app, log_level="warning", access_log=bool(os.environ.get("FTPIPE_SERVE_LOG")), timeout_graceful_shutdown=2
    )
    uvicorn.Server(config).run(sockets=[sock])
