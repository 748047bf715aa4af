"""``ftpipe serve``: a small OpenAI-compatible HTTP server for a local model.

Serves a deployed folder (``deploy: local``), a run's train artifact, or any transformers
model folder (full weights or a PEFT adapter). Routes: ``GET /v1/models``,
``GET /v1/models/{id}``, ``POST /v1/chat/completions`` (chat template, greedy decoding at
temperature 0 else sampling with temperature/top_p/seed, ``max_tokens``, ``stop``, usage
counts, ``stream: true`` as server-sent events ending with ``data: [DONE]``), ``GET /health``.
Errors have OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
One request generates at a time; it is a local test server, not a production one.
"""
from __future__ import annotations

import json
import os
import secrets as _secrets
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ftpipe.contracts import ModelRef
from ftpipe.errors import MissingDependency, NotFound, UsageError

DEFAULT_MAX_TOKENS = 256
ROLES = ("system", "developer", "user", "assistant", "tool")


# --------------------------------------------------------------------------- finding and loading

def find_model_folder(ref: str, *, store: Path | None = None, pipeline: Path | None = None) -> tuple[Path, str]:
    """A folder and a model name for ``ref``: a folder path, or a run id (or 'latest') in
    the run store, whose train artifact is served."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve(), path.resolve().name
    from ftpipe.store import RunStore, default_store

    if store is not None:
        rs = RunStore(Path(store))
    elif pipeline is not None:
        rs = RunStore(default_store(Path(pipeline)))
    else:
        from ftpipe.store_location import locate_store

        rs = RunStore(locate_store().path)
    from ftpipe.store_location import store_arg

    if not (rs.root / "runs").is_dir():
        from ftpipe.store_location import no_runs_hint

        raise NotFound(f"{ref!r} is neither a model folder nor a run in {rs.root}",
                       hint="give a folder, or a run id; " + no_runs_hint(rs.root))
    run_id = rs.resolve_run(ref)
    record = rs.read_run(run_id)
    art = record.get("steps", {}).get("train", {}).get("artifact")
    if not art or not (rs.root / art / "model.json").is_file():
        raise NotFound(f"run {run_id} has no finished train step to serve", hint="ftpipe runs show " + run_id + store_arg(rs.root))
    return rs.root / art, f"{record.get('pipeline', 'model')}-{run_id}"


def _cache_dir() -> Path:
    from ftpipe.store import RunStore

    return RunStore(Path(".")).cache_dir()


def model_ref_for(folder: Path) -> tuple[ModelRef, str | None]:
    """What ``folder`` holds, as a model reference relative to it, and the base's revision:
    a train artifact (model.json), a deployed folder (ftpipe.json), a PEFT adapter or a
    plain transformers model."""
    if (folder / "model.json").is_file():
        ref = ModelRef.read(folder)
        if ref.kind != "local":
            raise UsageError(f"{folder} holds a hosted model ({ref.provider}:{ref.model_id}): serve it from its provider")
        return ref, None
    if (folder / "ftpipe.json").is_file():
        marker = json.loads((folder / "ftpipe.json").read_text())
        return ModelRef(kind="local", base=marker.get("base") or str(folder), path=".",
                        adapter=bool(marker.get("adapter"))), marker.get("revision")
    if (folder / "adapter_config.json").is_file():
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise UsageError(f"{folder}: an adapter whose adapter_config.json names no base model")
        return ModelRef(kind="local", base=base, path=".", adapter=True), None
    if (folder / "config.json").is_file():
        return ModelRef(kind="local", base=str(folder), path=".", adapter=False), None
    raise UsageError(f"{folder} is not a model folder (no config.json, adapter_config.json or model.json)")


@dataclass
class LoadedModel:
    name: str
    model: Any
    tokenizer: Any
    context_length: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    created: int = field(default_factory=lambda: int(time.time()))


def load_model(folder: Path, name: str, *, base_dir: Path | None = None) -> LoadedModel:
    """Load the model of ``folder`` (an adapter merged into its base) for generation.
    A private Hub base is read with HF_TOKEN."""
    try:
        from ftpipe.models import loading
    except ImportError:
        raise MissingDependency("transformers", "train", "ftpipe serve") from None
    ref, revision = model_ref_for(Path(folder))
    try:
        model, tokenizer = loading.load_for_inference(ref, Path(folder), cache_dir=_cache_dir(),
                                                      base_dir=base_dir or Path(folder), revision=revision)
    except ImportError as exc:
        raise MissingDependency(exc.name or "transformers", "train", "ftpipe serve") from None
    ctx_len = getattr(model.config, "max_position_embeddings", None)
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, context_length=ctx_len)


# --------------------------------------------------------------------------- generation

class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Request:
    messages: list[dict[str, str]]
    max_tokens: int | None
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None
    stream: bool
    include_usage: bool


def _text(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise ApiError(400, "only text content parts are supported", param=f"messages.[{i}].content")
        return "".join(parts)
    if content is None:
        return ""
    raise ApiError(400, "content must be a string or a list of text parts", param=f"messages.[{i}].content")


def parse_request(body: dict, model_name: str) -> Request:
    """Validate a chat completion request body (the subset this server supports)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    if model != model_name:
        raise ApiError(404, f"The model `{model}` does not exist (this server serves `{model_name}`)",
                       param="model", code="model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}]: each message needs a role ({', '.join(ROLES)})",
                           param=f"messages.[{i}].role")
        role = "system" if m["role"] == "developer" else m["role"]
        clean.append({"role": role, "content": _text(m.get("content"), i)})
    n = body.get("n", 1)
    if n not in (1, None):
        raise ApiError(400, "only n=1 is supported", param="n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise ApiError(400, "max_tokens must be a positive integer", param="max_tokens")
    temperature = body.get("temperature", 1.0)
    temperature = 1.0 if temperature is None else temperature
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise ApiError(400, "temperature must be between 0 and 2", param="temperature")
    top_p = body.get("top_p", 1.0)
    top_p = 1.0 if top_p is None else top_p
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ApiError(400, "top_p must be in (0, 1]", param="top_p")
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, "stop must be a string or a list of up to 4 strings", param="stop")
    seed = body.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise ApiError(400, "seed must be an integer", param="seed")
    options = body.get("stream_options") or {}
    return Request(clean, max_tokens, float(temperature), float(top_p), stop, seed, bool(body.get("stream")),
                   bool(options.get("include_usage")))


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
        raise ApiError(400, f"the prompt has {len(prompt)} tokens; this model's context is {lm.context_length}",
                       param="messages", code="context_length_exceeded")
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
            wanted = path[len("/v1/models/"):]
            if wanted == self.lm.name:
                self._json(200, self._model_obj())
            else:
                self._error(ApiError(404, f"The model `{wanted}` does not exist", param="model",
                                     code="model_not_found"))
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
        self._json(200, {
            "id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": self.lm.name,
            "system_fingerprint": "ftpipe",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": outcome.finish_reason}],
            "usage": _usage(outcome),
        })

    def _stream(self, req: Request) -> None:
        outcome = Outcome()
        pieces = generate(self.lm, req, outcome)
        first = next(pieces, None)  # errors (context too long) still answer with a status
        cid, created = _completion_id(), int(time.time())

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": self.lm.name,
                    "system_fingerprint": "ftpipe",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

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
                self._event({"id": cid, "object": "chat.completion.chunk", "created": created,
                             "model": self.lm.name, "choices": [], "usage": _usage(outcome)})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pieces.close()  # the client went away: stop generating
        self.close_connection = True

    def _event(self, obj: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        self.wfile.flush()


def _usage(outcome: Outcome) -> dict:
    return {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
            "total_tokens": outcome.prompt_tokens + outcome.completion_tokens}


def make_server(lm: LoadedModel, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server bound to (host, port) serving ``lm``; call ``serve_forever()`` on it."""
    handler = type("Handler", (_Handler,), {"lm": lm})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
