"""``ftpipe serve``: an OpenAI-compatible server for a local model on a real engine
(:mod:`ftpipe.engines` chooses vLLM or transformers). Imports nothing heavy."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import warnings
from pathlib import Path

from ftpipe.errors import UsageError

DEFAULT_KEY_ENV = "FTPIPE_API_KEY"


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to a public address


def api_key_for(host: str, key_env: str) -> str | None:
    """The API key clients must send (from the environment variable ``key_env``), or None.
    Listening beyond this machine without a key is refused."""
    key = os.environ.get(key_env) or None
    if key is None and not is_loopback(host):
        raise UsageError(
            f"serving on {host} makes the model reachable from the network, so it needs an API key, "
            f"and ${key_env} is not set",
            hint=f"export {key_env}=<a long random secret> (clients send it as the OpenAI api_key), "
            "or listen on 127.0.0.1 only (--host 127.0.0.1)",
        )
    return key


def vllm_command(folder: Path, name: str, host: str, port: int) -> list[str]:
    """``vllm serve`` for ``folder`` as model ``name`` (the key goes in VLLM_API_KEY, never argv)."""
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(folder),
        "--served-model-name",
        name,
        "--host",
        host,
        "--port",
        str(port),
    ]


def quiet_libraries() -> None:
    """Library chatter (transformers' per-request warnings, generation-flag notices, uvicorn's
    access log) stays out of the console; FTPIPE_SERVE_LOG=1 brings the access log back."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        pass
    else:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", module=r"transformers(\..*)?")
    warnings.filterwarnings("ignore", category=UserWarning, message=r".*generation.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
