"""Finding and preparing the model ``ftpipe serve`` serves.

A deployed folder (``deploy: local``), a run's train artifact (a run id or ``latest``), or
any transformers model folder (full weights or a PEFT adapter). The model id clients send is
the pipeline's name (stable across reruns), else the folder's name. An adapter is merged
into its base once (cached by content) so every engine loads plain full weights. The HTTP
side lives in :mod:`ftpipe.serving`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftpipe.contracts import ModelRef
from ftpipe.errors import MissingDependency, NotFound, UsageError

# --------------------------------------------------------------------------- finding and loading


def find_model_folder(ref: str, *, store: Path | None = None, pipeline: Path | None = None) -> tuple[Path, str]:
    """A folder and a model name for ``ref``: a folder path, or a run id (or 'latest') in
    the run store, whose train artifact is served."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve(), _folder_model_name(path.resolve())
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

        raise NotFound(
            f"{ref!r} is neither a model folder nor a run in {rs.root}",
            hint="give a folder, or a run id; " + no_runs_hint(rs.root),
        )
    run_id = rs.resolve_run(ref)
    record = rs.read_run(run_id)
    art = record.get("steps", {}).get("train", {}).get("artifact")
    if not art or not (rs.root / art / "model.json").is_file():
        raise NotFound(
            f"run {run_id} has no finished train step to serve", hint="ftpipe runs show " + run_id + store_arg(rs.root)
        )
    # Named after the pipeline, not the run: a cached rerun must not rename the model.
    return rs.root / art, str(record.get("pipeline") or "model")


def _folder_model_name(folder: Path) -> str:
    """The pipeline that deployed ``folder`` (its ftpipe.json), else the folder's name."""
    try:
        pipeline = json.loads((folder / "ftpipe.json").read_text()).get("pipeline")
    except (OSError, ValueError):
        pipeline = None
    return str(pipeline) if pipeline else folder.name


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
            raise UsageError(
                f"{folder} holds a hosted model ({ref.provider}:{ref.model_id}): serve it from its provider"
            )
        return ref, None
    if (folder / "ftpipe.json").is_file():
        marker = json.loads((folder / "ftpipe.json").read_text())
        return ModelRef(
            kind="local", base=marker.get("base") or str(folder), path=".", adapter=bool(marker.get("adapter"))
        ), marker.get("revision")
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
        model, tokenizer = loading.load_for_inference(
            ref, Path(folder), cache_dir=_cache_dir(), base_dir=base_dir or Path(folder), revision=revision
        )
    except ImportError as exc:
        raise MissingDependency(exc.name or "transformers", "train", "ftpipe serve") from None
    ctx_len = getattr(model.config, "max_position_embeddings", None)
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, context_length=ctx_len)


def _digest(folder: Path, extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "checkpoint-" not in p.as_posix()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        h.update(str(path.stat().st_size).encode() + b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def servable_folder(folder: Path, *, base_dir: Path | None = None, log: Any = None) -> Path:
    """A folder of full weights and tokenizer that any engine loads with ``from_pretrained``:
    the model itself, or (an adapter) the adapter merged into its base, written once under
    ftpipe's cache and reused while the adapter's bytes are unchanged."""
    folder = Path(folder)
    ref, revision = model_ref_for(folder)
    model_dir = (folder / (ref.path or ".")).resolve()
    if not ref.adapter:
        return model_dir
    try:
        from ftpipe.models import loading
    except ImportError:
        raise MissingDependency("transformers", "train", "ftpipe serve") from None
    cache = _cache_dir()
    dest = cache / "served" / _digest(model_dir, f"{ref.base}@{revision}")
    if (dest / "config.json").is_file():
        return dest
    if log:
        log(f"merging the adapter into {ref.base} (once; cached in {dest})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        loading.merge_adapter(
            model_dir,
            ref.base,
            tmp,
            cache_dir=cache,
            base_dir=base_dir or folder,
            revision=revision,
            token=os.environ.get("HF_TOKEN"),
        )
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
