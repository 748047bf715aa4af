"""GRPO reward functions from metric names: the same names and ``package.module:function``
spellings as ``evaluate.metrics``, resolved through the one metric lookup
(:func:`ftpipe.evaluation.metrics.resolve_metric`).

Each reward scores a sampled completion against the example's reference answer (the
dataset's ``reference`` column, the last assistant turn of the prepared record), in TRL's
reward-function shape: ``f(prompts, completions, reference, **kwargs) -> list[float]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

RewardFn = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or (conversational) the assistant messages'."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    return str(completion)


def reward_function(name: str) -> RewardFn:
    from ftpipe.evaluation.metrics import resolve_metric, score

    metric = resolve_metric(name)  # the one place a reward name is looked up

    def reward(completions: list[Any], reference: list[str], **_: Any) -> list[float]:
        return [score(metric, name, completion_text(c), ref) for c, ref in zip(completions, reference, strict=True)]

    # TRL logs each reward as rewards/<__name__>/mean.
    reward.__name__ = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "reward"
    return reward


def reward_functions(names: list[str]) -> list[RewardFn]:
    return [reward_function(name) for name in names]
