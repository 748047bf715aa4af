"""Text metrics: a function of (prediction, reference) -> float in [0, 1].

Normalisation follows the SQuAD evaluation script (lowercase, drop punctuation and the
articles a/an/the, collapse whitespace) after Unicode NFKC, so "The Café!" and "cafe"
differ only by the accent. ``loss`` and ``perplexity`` are computed from the model's
log-likelihood of the reference, not from text; they are named here so configuration can
be checked in one place.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable
from typing import Any

from ftpipe.contracts import MetricCaps
from ftpipe.errors import UsageError

MetricFn = Callable[[str, str], float]

TEXT_METRICS = ("exact_match", "token_f1", "rouge_l", "json_valid")
MODEL_METRICS = ("loss", "perplexity")
BUILTIN_METRICS = TEXT_METRICS + MODEL_METRICS
# Metrics where a smaller value is better (declared as MetricCaps in the registry).
LOWER_IS_BETTER = frozenset(MODEL_METRICS)
ENTRY_POINT_GROUP = "ftpipe.metrics"

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_ASCII_PUNCT = frozenset(string.punctuation)


class MetricError(UsageError):
    """A metric name that cannot be resolved, or a metric that misbehaves."""


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def normalize_text(text: str) -> str:
    """NFKC, lowercase, strip punctuation and articles, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    # Punctuation is deleted, not replaced by a space, as SQuAD does ("don't" -> "dont").
    text = "".join(ch for ch in text if not _is_punct(ch))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _tokens(text: str) -> list[str]:
    return normalize_text(text).split()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when prediction and reference are equal after normalisation."""
    return float(normalize_text(prediction) == normalize_text(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token-overlap F1 (bag of normalised tokens). Two empty texts score 1.0."""
    pred, ref = _tokens(prediction), _tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (beta=1) over normalised tokens, from the longest common subsequence."""
    pred, ref = _tokens(prediction), _tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)


def json_valid(prediction: str, reference: str = "") -> float:
    """1.0 when the prediction parses as JSON (a single ```json fenced block is accepted)."""
    text = (prediction or "").strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if not text:
        return 0.0
    try:
        json.loads(text)
    except ValueError:
        return 0.0
    return 1.0


def _model_metric(name: str) -> MetricFn:
    def fn(prediction: str, reference: str) -> float:
        raise MetricError(f"metric {name!r} is computed from the model's likelihood, not from text")

    fn.__name__ = name
    fn.model_metric = True  # type: ignore[attr-defined]
    return fn


# Named here so the registry's "ftpipe.evaluation.metrics:<name>" resolves every built-in;
# the evaluate step computes them from the model instead of calling these.
loss = _model_metric("loss")
perplexity = _model_metric("perplexity")

_BUILTIN_FNS: dict[str, MetricFn] = {
    "exact_match": exact_match,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
    "json_valid": json_valid,
}


def metric_caps(name: str) -> MetricCaps:
    """A metric's declaration, from the one metric registry (``ftpipe.registry``): built-ins,
    entry-point plugins, and ``module:function`` metrics (a ``caps`` attribute, if any)."""
    from ftpipe import registry

    if ":" in name and name not in registry.plugins()["metric"]:
        caps = getattr(_import_function(name), "caps", None)
        return caps if isinstance(caps, MetricCaps) else MetricCaps()
    return registry.metric_caps(name)


def is_model_metric(name: str) -> bool:
    """True for metrics computed from the model's likelihood (need a local model)."""
    return metric_caps(name).needs_weights


def higher_is_better(name: str) -> bool:
    try:
        return metric_caps(name).higher_is_better
    except MetricError:  # a report naming a metric that no longer resolves
        return True


def _registered(name: str) -> MetricFn | None:
    from ftpipe import registry

    plugin = registry.plugins()["metric"].get(name)
    return plugin.load() if plugin is not None else None


def _import_function(name: str) -> MetricFn:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise MetricError(f"metric {name!r}: write a custom metric as 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MetricError(f"metric {name!r}: cannot import module {module_name!r} ({exc})") from exc
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise MetricError(f"metric {name!r}: module {module_name!r} has no attribute {attr!r}")
    return fn


def resolve_metric(name: str) -> MetricFn:
    """The (prediction, reference) -> float function for a text metric name (also what
    online-RL methods use as a reward function).

    The metric registry (built-ins, then entry points in group ``ftpipe.metrics``), then
    ``package.module:function``. Metrics that need the model's weights (loss/perplexity)
    are not text metrics and raise.
    """
    if name in _BUILTIN_FNS:
        return _BUILTIN_FNS[name]
    if ":" not in name and is_model_metric(name):
        raise MetricError(f"metric {name!r} is computed from the model's likelihood, not from text")
    fn = _registered(name)
    if fn is None:
        if ":" not in name:
            from ftpipe import registry

            known = ", ".join(sorted(registry.plugins()["metric"]))
            raise MetricError(
                f"unknown metric {name!r} (available: {known}; or 'package.module:function', "
                f"or a plugin registered in entry point group {ENTRY_POINT_GROUP!r})"
            )
        fn = _import_function(name)
    if not callable(fn):
        raise MetricError(f"metric {name!r} resolved to {type(fn).__name__}, which is not callable")
    return fn


def score(fn: MetricFn, name: str, prediction: str, reference: str) -> float:
    """Call a metric and check it returned a finite number."""
    value = fn(prediction, reference)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy scalars, torch 0-d tensors
        except (TypeError, ValueError):
            raise MetricError(f"metric {name!r} returned {type(value).__name__}, expected a number") from None
    value = float(value)
    if math.isnan(value):
        raise MetricError(f"metric {name!r} returned NaN for prediction {prediction[:60]!r}")
    return value
