"""The ``local`` deploy target: the model as a self-contained folder with a model card.

:func:`export_model` is shared with the Hub target: it lays out what gets published —
merged full weights (``merge: true`` on an adapter), or the adapter with a pointer to its
base (``adapter_config.json`` ``base_model_name_or_path`` and ``ftpipe.json``); the
tokenizer; ``README.md``. Nothing from training (checkpoints, optimizer state, pickled
arguments) is copied.
"""

from __future__ import annotations

import fnmatch
import json
import os
import secrets as _secrets
import shutil
from pathlib import Path
from typing import Any

from ftpipe.contracts import ModelRef, StepContext, StepResult
from ftpipe.deploy.modelcard import build_model_card, write_model_card
from ftpipe.errors import StepError
from ftpipe.spec.models import LocalTarget
from ftpipe.store import write_json

MARKER = "ftpipe.json"
_SKIP = (
    "checkpoint-*",
    "runs",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state*.pth",
    "training_args.bin",
    "trainer_state.json",
    "README.md",
    MARKER,
    ".*",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_TOKENIZER_PATTERNS = (
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab*",
    "merges.txt",
    "chat_template*",
)


def local_model(ctx: StepContext, what: str) -> tuple[ModelRef, Path]:
    """The train step's model reference and its folder; a hosted model is an error."""
    train = ctx.inputs.get("train")
    if train is None:
        raise StepError(f"{what}: no train artifact (the deploy step needs the train step)")
    ref = ModelRef.read(Path(train))
    if ref.kind != "local":
        raise StepError(
            f"{what} publishes a local model folder, but the trainer produced a hosted model "
            f"({ref.provider}:{ref.model_id})",
            hint="deploy hosted fine-tunes with their provider's target (e.g. azure-openai)",
        )
    folder = Path(train) / (ref.path or "model")
    if not folder.is_dir():
        raise StepError(f"{what}: the train artifact has no model folder {folder}")
    return ref, folder


def _copy_tree(src: Path, dest: Path) -> None:
    for item in sorted(src.iterdir()):
        if any(fnmatch.fnmatch(item.name, pat) for pat in _SKIP):
            continue
        if item.is_dir():
            shutil.copytree(item, dest / item.name, ignore=shutil.ignore_patterns(*_SKIP))
        else:
            shutil.copy2(item, dest / item.name)


def _model_opts(ctx: StepContext) -> dict[str, Any]:
    model = ctx.pipeline.model
    return {"revision": model.revision, "token": model.token}


def _merge(ctx: StepContext, ref: ModelRef, train_dir: Path, dest: Path) -> None:
    """Merged full weights and the tokenizer into ``dest``."""
    from ftpipe.models import loading

    loading.merge_adapter(ref, train_dir, dest, cache_dir=ctx.cache_dir, base_dir=ctx.base_dir, **_model_opts(ctx))


def _ensure_tokenizer(ctx: StepContext, ref: ModelRef, dest: Path) -> None:
    if any((dest / name).exists() for name in _TOKENIZER_FILES):
        return
    # An adapter saved without its tokenizer: take the base model's.
    from transformers import AutoTokenizer

    from ftpipe.models import loading

    base = loading.resolve_base(ref.base, cache_dir=ctx.cache_dir, base_dir=ctx.base_dir, **_model_opts(ctx))
    AutoTokenizer.from_pretrained(
        str(base), **({"token": ctx.pipeline.model.token} if ctx.pipeline.model.token else {})
    ).save_pretrained(dest)


def export_model(
    ctx: StepContext, dest: Path, *, merge: bool, what: str, repo_id: str | None = None, location: str | None = None
) -> dict[str, Any]:
    """Write the publishable model folder into the empty folder ``dest``. Returns the
    contents of ``ftpipe.json`` (base, adapter, merged)."""
    ref, folder = local_model(ctx, what)
    train_dir = Path(ctx.inputs["train"])
    merged = bool(merge and ref.adapter)
    if merged:
        ctx.log(f"{what}: merging the adapter into {ref.base}")
        _merge(ctx, ref, train_dir, dest)
        if not any((dest / name).exists() for name in _TOKENIZER_FILES):
            for item in folder.iterdir():  # the tokenizer saved beside the adapter
                if item.is_file() and any(fnmatch.fnmatch(item.name, p) for p in _TOKENIZER_PATTERNS):
                    shutil.copy2(item, dest / item.name)
    else:
        _copy_tree(folder, dest)
    _ensure_tokenizer(ctx, ref, dest)
    adapter = ref.adapter and not merged
    if adapter:
        cfg_path = dest / "adapter_config.json"
        if not cfg_path.is_file():
            raise StepError(f"{what}: the model is marked as an adapter but {folder} has no adapter_config.json")
        cfg = json.loads(cfg_path.read_text())
        # Point at the base by the name the pipeline uses, not a path on the training machine.
        cfg["base_model_name_or_path"] = ref.base
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    marker = {
        "base": ref.base,
        "revision": ctx.pipeline.model.revision,
        "adapter": adapter,
        "merged": merged,
        "pipeline": ctx.pipeline.name,
        # the train step's cache key (its artifact folder's name): `must_beat: [deployed]`
        # knows a re-deploy of the same fine-tune from another model
        "train_key": train_dir.name,
        # and the model this one replaced, which the evaluation that approved it compared with
        "replaced_train_key": _replaced_key(location, train_dir.name),
    }
    (dest / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    card = build_model_card(
        ctx, ref, adapter=adapter, repo_id=repo_id, location=location, artifacts=weight_artifacts(dest, adapter=adapter)
    )
    write_model_card(dest, card)
    return marker


def weight_artifacts(folder: Path, *, adapter: bool) -> list[tuple[str, str, str]]:
    """(file, engines, quantisation) for each weights file in ``folder``, for the model card."""
    try:
        config = json.loads((folder / "config.json").read_text())
        dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    except (OSError, ValueError):
        dtype = "base model's dtype"
    engines = "transformers + PEFT (merged by `ftpipe serve`)" if adapter else "transformers, vLLM (`ftpipe serve`)"
    return [(p.name, engines, f"none ({dtype})") for p in sorted(folder.glob("*.safetensors"))]


def _replaced_key(location: str | None, train_key: str) -> str | None:
    """The train key of the model at ``location`` now (what this deploy replaces); for a
    re-deploy of the same model, the one that model replaced."""
    try:
        old = json.loads((Path(location) / MARKER).read_text()) if location else {}
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict):
        return None
    if old.get("train_key") == train_key:
        return old.get("replaced_train_key")
    return old.get("train_key")


def list_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def replace_dir(new: Path, dest: Path) -> None:
    """Put ``new`` at ``dest`` (a sibling): readers see the old folder or the new one,
    never a half-written one."""
    if not dest.exists():
        os.replace(new, dest)
        return
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{_secrets.token_hex(3)}")
    os.replace(dest, old)
    try:
        os.replace(new, dest)
    except OSError:
        os.replace(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def resolve_path(ctx: StepContext, target: LocalTarget) -> Path:
    raw = target.path.replace("{pipeline}", ctx.pipeline.name)
    path = Path(raw).expanduser()
    return (path if path.is_absolute() else ctx.base_dir / path).resolve()


class LocalDeploy:
    """Copy the model into a folder (``path``, relative to the pipeline file)."""

    name = "local"
    config_model = LocalTarget

    def preflight(self, ctx: Any, target: Any) -> list[Any]:
        """Read-only checks before the run starts (ftpipe.preflight)."""
        from ftpipe.deploy import preflight_checks as pc

        return list(pc.local_folder_checks(ctx, target))

    def is_current(self, artifact: Path) -> bool:
        """Whether the folder this cached deploy wrote is still there."""
        try:
            doc = json.loads((artifact / "deploy.json").read_text())
        except (OSError, ValueError):
            return True  # nothing recorded to check against: trust the cache
        return not doc.get("path") or Path(doc["path"]).is_dir()

    def deploy(self, ctx: StepContext) -> StepResult:
        target: LocalTarget = ctx.options["target"]
        dest = resolve_path(ctx, target)
        if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not (dest / MARKER).exists())):
            raise StepError(
                f"local deploy: refusing to replace {dest}: it exists and was not written by ftpipe",
                hint="choose another deploy path, or move that folder away",
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{_secrets.token_hex(3)}")
        tmp.mkdir()
        try:
            marker = export_model(ctx, tmp, merge=target.merge, what="local deploy", location=str(dest))
            files = list_files(tmp)
            replace_dir(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        shutil.copy2(dest / "README.md", ctx.out_dir / "README.md")
        write_json(
            ctx.out_dir / "deploy.json",
            {
                "target": "local",
                "path": str(dest),
                "url": dest.as_uri(),
                "adapter": marker["adapter"],
                "merged": marker["merged"],
                "files": files,
            },
        )
        kind = "merged model" if marker["merged"] else ("adapter" if marker["adapter"] else "model")
        return StepResult(metrics={"files": len(files)}, summary=f"{kind} in {dest}")
