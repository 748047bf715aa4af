"""Which ftpipe extras a pipeline needs, from its plugins' declarations (``caps.extras``):
the one answer that ``schedule`` (the CI runner's install line), the Spaces executor (the
Space's image) and ``backends list`` share. Pure: imports no plugin implementation."""

from __future__ import annotations

from typing import Any

from ftpipe.contracts import ExecutorCaps, TargetCaps, TrainerCaps

# what evaluating a model from its weights, or reading a Hub dataset, needs
WEIGHTS_EXTRA = "train"
HUB_EXTRA = "hub"
TRACKING_EXTRA = "tracking"


# the modules each extra of ftpipe's pyproject.toml brings (to tell whether it is installed)
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "train": ("torch", "transformers", "trl", "peft", "datasets", "accelerate"),
    "hub": ("huggingface_hub", "datasets"),
    "openai": ("openai",),
    "azure": ("openai", "azure.identity"),
    "ray": ("ray",),
    "tracking": ("tensorboard",),
}


def missing_modules(extras: tuple[str, ...] | list[str]) -> list[str]:
    """The modules of ``extras`` that cannot be imported here."""
    import importlib.util

    def present(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False

    wanted = dict.fromkeys(mod for extra in extras for mod in EXTRA_MODULES.get(extra, ()))
    return [mod for mod in wanted if not present(mod)]


def install_hint(extras: tuple[str, ...] | list[str]) -> str:
    return f'pip install "ftpipe[{",".join(sorted(extras))}]"' if extras else "nothing (ftpipe itself)"


def trainer_caps(pipeline: Any) -> TrainerCaps:
    return type(pipeline.trainer).caps


def executor_caps(pipeline: Any) -> ExecutorCaps:
    return type(pipeline.executor).caps


def target_caps(target: Any) -> TargetCaps:
    return type(target).caps


def step_extras(pipeline: Any) -> set[str]:
    """The extras the machine that runs the pipeline's steps needs."""
    tcaps = trainer_caps(pipeline)
    extras = set(tcaps.extras)
    if any(s.type == "hub" for s in pipeline.dataset.all_sources()):
        extras.add(HUB_EXTRA)
    for target in pipeline.deploy:
        extras |= set(target_caps(target).extras)
    ev = pipeline.evaluate
    if ev is not None:
        from ftpipe.evaluation.hosted_access import ENV_PROVIDER

        if tcaps.eval_access == "weights":
            extras.add(WEIGHTS_EXTRA)  # scoring a local model loads it
        if any(not isinstance(b, str) and not b.model.startswith(f"{ENV_PROVIDER}:") for b in ev.baselines):
            extras.add(WEIGHTS_EXTRA)  # a baseline model by id or path is loaded here
    if ev is not None and getattr(ev, "benchmarks", None):
        extras.add("benchmarks")  # lm-eval for the forgetting checks
    if ev is not None and getattr(ev, "judge", None) is not None:
        extras.add("openai")  # the judge is called through the openai client
    if "tensorboard" in (getattr(pipeline.trainer, "report_to", None) or []):
        extras.add(TRACKING_EXTRA)
    return extras


def runner_extras(pipeline: Any) -> list[str]:
    """The extras the machine that runs ``ftpipe run`` needs: all the steps' when it trains
    here, else only what its executor needs to submit and follow."""
    ecaps = executor_caps(pipeline)
    if not ecaps.runs_training_here:
        return sorted(ecaps.extras)
    return sorted(step_extras(pipeline) | set(ecaps.extras))


def needs_torch(pipeline: Any) -> bool:
    """Whether the machine running ``ftpipe run`` trains with torch."""
    return trainer_caps(pipeline).torch and executor_caps(pipeline).runs_training_here


def managed_env(pipeline: Any) -> str | None:
    """The backend whose managed environment must be installed (``ftpipe backends install``)."""
    return pipeline.trainer.backend if trainer_caps(pipeline).managed_env else None
