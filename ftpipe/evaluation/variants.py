"""Which variants the evaluate step scores, and where each one's answers come from.

``finetuned`` (the train step's model), ``base`` (the base model, zero-shot), ``few_shot``
and ``rag`` (the base model with examples or retrieved passages in the prompt),
``deployed`` (what the pipeline last deployed) and named model baselines (``run:<id>``, a
local path, a Hub id, or ``openai:<model id>``). Variants that share a model share one
:class:`ModelSource` (same ``key``), so it is loaded once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftpipe.contracts import ModelRef, StepContext
from ftpipe.errors import StepError, UsageError
from ftpipe.evaluation.deployed import DEPLOYED, deployed_state, wants_deployed
from ftpipe.evaluation.hosted_access import ENV_PROVIDER

FINETUNED = "finetuned"


@dataclass(frozen=True)
class ModelSource:
    """Where a variant's answers come from. Variants with equal ``key`` share one loaded model."""

    key: str
    kind: str  # "local" | "hosted"
    label: str  # what the report shows as the model
    load: Callable[[], tuple[Any, Any]] | None = None  # local: () -> (model, tokenizer)
    provider: str | None = None  # hosted
    model_id: str | None = None  # hosted


@dataclass(frozen=True)
class Variant:
    name: str
    source: ModelSource
    few_shot: bool = False
    rag: bool = False


def _loading():
    try:
        from ftpipe.models import loading
    except ImportError as exc:  # pragma: no cover - part of ftpipe
        raise StepError(f"ftpipe.models.loading is unavailable: {exc}") from exc
    return loading


def _model_opts(ctx: StepContext) -> dict[str, Any]:
    model = ctx.pipeline.model
    return {"revision": getattr(model, "revision", None), "token": getattr(model, "token", None)}


def _local_trained(ctx: StepContext, ref: ModelRef, train_dir: Path, key: str, label: str) -> ModelSource:
    opts = _model_opts(ctx)

    def load() -> tuple[Any, Any]:
        return _loading().load_for_inference(ref, train_dir, cache_dir=ctx.cache_dir, base_dir=ctx.base_dir, **opts)

    return ModelSource(key=key, kind="local", label=label, load=load)


def _local_base(ctx: StepContext, base: str, *, revision: str | None, token: str | None) -> ModelSource:
    def load() -> tuple[Any, Any]:
        return _loading().load_base_for_inference(
            base, cache_dir=ctx.cache_dir, base_dir=ctx.base_dir, revision=revision, token=token
        )

    return ModelSource(key=f"local-base:{base}@{revision}", kind="local", label=base, load=load)


def _hosted(provider: str, model_id: str) -> ModelSource:
    return ModelSource(
        key=f"hosted:{provider}:{model_id}",
        kind="hosted",
        label=f"{provider}:{model_id}",
        provider=provider,
        model_id=model_id,
    )


def _source_for_ref(ctx: StepContext, ref: ModelRef, train_dir: Path, key: str) -> ModelSource:
    if ref.kind == "hosted":
        if not ref.provider or not ref.model_id:
            raise StepError(f"{train_dir / 'model.json'}: a hosted model needs provider and model_id")
        return _hosted(ref.provider, ref.model_id)
    if ref.kind != "local":
        raise StepError(f"{train_dir / 'model.json'}: unknown model kind {ref.kind!r} (local | hosted)")
    return _local_trained(ctx, ref, train_dir, key, label=f"{ref.base} + {ref.path or 'model'}")


def _run_train_artifact(ctx: StepContext, ref: str) -> Path:
    """The train artifact folder of a previous run (an id, a unique prefix, or 'latest')."""
    from ftpipe.store import RunStore, default_store

    # The engine keeps step state in <store>/state/<key>, so the store is two levels up.
    root = ctx.state_dir.parent.parent
    store = RunStore(root if (root / "runs").is_dir() else default_store(ctx.pipeline_path))
    run_id = store.resolve_run(ref)
    step = store.read_run(run_id).get("steps", {}).get("train", {})
    folder = store.root / step["artifact"] if step.get("artifact") else None
    if folder is None or not (folder / "model.json").is_file():
        raise StepError(
            f"baseline 'run:{ref}': run {run_id} has no finished train step",
            hint="`ftpipe runs list` shows the runs of this pipeline and their status",
        )
    return folder


def _baseline_source(ctx: StepContext, model: str) -> ModelSource:
    if model.startswith("run:"):
        run_id = model[4:]
        folder = _run_train_artifact(ctx, run_id)
        return _source_for_ref(ctx, ModelRef.read(folder), folder, key=f"run:{run_id}")
    if model.startswith(f"{ENV_PROVIDER}:"):
        return _hosted(ENV_PROVIDER, model[len(ENV_PROVIDER) + 1 :])
    token = getattr(ctx.pipeline.model, "token", None)
    return _local_base(ctx, model, revision=None, token=token)


def _deployed_source(ctx: StepContext, train_dir: Path) -> ModelSource | None:
    """The model at the deploy target now, unless there is none or it is this fine-tune."""
    state = deployed_state(ctx.pipeline, ctx.base_dir, train_dir.name)
    if state.status != "other" or state.path is None or state.marker is None:
        return None
    ref = ModelRef(
        kind="local",
        base=str(state.marker.get("base") or ctx.pipeline.model.base),
        path=".",
        adapter=bool(state.marker.get("adapter")),
    )
    return _local_trained(ctx, ref, state.path, key=f"deployed:{state.path}", label=f"deployed {state.path.name}")


def skipped_baselines(ctx: StepContext) -> dict[str, str]:
    """Baselines listed but not scored, with the reason (``deployed`` with nothing to compare)."""
    if not wants_deployed(ctx.pipeline):
        return {}
    state = deployed_state(ctx.pipeline, ctx.base_dir, Path(ctx.inputs["train"]).name)
    return {} if state.status == "other" else {DEPLOYED: state.reason}


def plan_variants(ctx: StepContext) -> list[Variant]:
    """The variants to score, fine-tuned first, then the baselines in configured order."""
    cfg = ctx.pipeline.evaluate
    train_dir = Path(ctx.inputs["train"])
    ref = ModelRef.read(train_dir)
    finetuned = _source_for_ref(ctx, ref, train_dir, key="finetuned")
    base_name = ctx.pipeline.model.base
    if finetuned.kind == "hosted":
        # a service may serve the base model under another name (an Azure deployment)
        served = getattr(ctx.pipeline.trainer, "base_deployment", None) or base_name
        base_source = _hosted(finetuned.provider or "", served)
    else:
        base_source = _local_base(ctx, ref.base or base_name, **_model_opts(ctx))
    variants = [Variant(FINETUNED, finetuned)]
    for item in cfg.baselines:
        if isinstance(item, str):
            name, model = item, None
        elif isinstance(item, dict):
            name, model = item["name"], item["model"]
        else:
            name, model = item.name, item.model
        if name == FINETUNED or name in (v.name for v in variants):
            raise UsageError(f"evaluate.baselines: the name {name!r} is used twice (or is reserved)")
        if model is None:
            if name == DEPLOYED:
                deployed = _deployed_source(ctx, train_dir)
                if deployed is not None:
                    variants.append(Variant(name, deployed))
                continue
            if name not in ("base", "few_shot", "rag"):
                raise UsageError(
                    f"evaluate.baselines: unknown baseline {name!r} (base, few_shot, rag, deployed, or {{name, model}})"
                )
            variants.append(Variant(name, base_source, few_shot=name == "few_shot", rag=name == "rag"))
        else:
            variants.append(Variant(name, _baseline_source(ctx, model)))
    return variants
