"""The checks of a job-creation request (method and hyperparameters, suffix, metadata,
integrations) and how hyperparameters are reported."""

from __future__ import annotations

import re
from typing import Any

from tests.fakes.openai_http import ApiError


def check_method(body: dict[str, Any], provider: str) -> tuple[str, dict[str, Any]]:
    """(method type, its hyperparameters with "auto" for unset ones)."""
    code = "invalid_value" if provider == "openai" else None
    method = body.get("method")
    top = body.get("hyperparameters")
    if top is not None and not isinstance(top, dict):
        raise ApiError(400, "'hyperparameters' must be an object.", param="hyperparameters", code=code)
    if method is None:
        method_type, hp, where = "supervised", dict(top or {}), "hyperparameters"
    else:
        if not isinstance(method, dict) or method.get("type") not in ("supervised", "dpo", "reinforcement"):
            raise ApiError(
                400, "method.type must be one of 'supervised', 'dpo', 'reinforcement'.", param="method.type", code=code
            )
        method_type = method["type"]
        extra = set(method) - {"type", method_type}
        if extra:
            raise ApiError(
                400,
                f"method.{sorted(extra)[0]} does not match method.type '{method_type}'.",
                param=f"method.{sorted(extra)[0]}",
                code=code,
            )
        if method_type == "reinforcement":
            raise ApiError(
                400,
                f"Model {body.get('model')} does not support reinforcement fine-tuning.",
                param="method.type",
                code=code,
            )
        config = method.get(method_type) or {}
        if not isinstance(config, dict) or set(config) - {"hyperparameters"}:
            raise ApiError(
                400, f"method.{method_type} may only hold 'hyperparameters'.", param=f"method.{method_type}", code=code
            )
        hp = dict(config.get("hyperparameters") or {})
        where = f"method.{method_type}.hyperparameters"
        if top and hp:
            raise ApiError(
                400,
                "Specify hyperparameters either in method or at the top level, not both.",
                param="hyperparameters",
                code=code,
            )
        hp = hp or dict(top or {})
    allowed = {"n_epochs", "batch_size", "learning_rate_multiplier"} | ({"beta"} if method_type == "dpo" else set())
    for key in hp:
        if key not in allowed:
            raise ApiError(
                400, f"Unknown hyperparameter '{key}' for the {method_type} method.", param=f"{where}.{key}", code=code
            )
    ranges = {"n_epochs": (1, 50), "batch_size": (1, 256)}
    for key, value in hp.items():
        if value == "auto":
            continue
        bad = isinstance(value, bool) or not isinstance(value, (int, float))
        if key in ranges:
            lo, hi = ranges[key]
            bad = bad or not isinstance(value, int) or not lo <= value <= hi
            limits = f"an integer between {lo} and {hi}"
        elif key == "beta":
            bad = bad or not 0 < value <= 2
            limits = "a number in (0, 2]"
        else:
            bad = bad or not value > 0
            limits = "a number greater than 0"
        if bad:
            raise ApiError(
                400, f"Invalid {key}: {value!r}. Must be {limits} or 'auto'.", param=f"{where}.{key}", code=code
            )
    for key in allowed:
        hp.setdefault(key, "auto")
    return method_type, hp


def check_suffix(suffix: Any, provider: str) -> str | None:
    if suffix is None:
        return None
    if provider == "openai":
        if not isinstance(suffix, str) or not 1 <= len(suffix) <= 64:
            raise ApiError(400, "suffix must be a string of 1 to 64 characters.", param="suffix", code="invalid_value")
    elif not isinstance(suffix, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", suffix):
        raise ApiError(400, "The suffix may hold at most 40 characters from [A-Za-z0-9-_].", param="suffix")
    return suffix


def check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > 16:
        raise ApiError(400, "metadata must be an object with at most 16 pairs.", param="metadata", code="invalid_value")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise ApiError(
                400,
                f"Invalid metadata entry {key!r}: keys hold at most 64 characters and values "
                "are strings of at most 512 characters.",
                param=f"metadata.{key}",
                code="invalid_value",
            )
    return dict(metadata)


def check_integrations(integrations: Any) -> list[dict[str, Any]]:
    if integrations is None:
        return []
    if not isinstance(integrations, list) or not all(
        isinstance(i, dict)
        and i.get("type") == "wandb"
        and isinstance(i.get("wandb"), dict)
        and isinstance(i["wandb"].get("project"), str)
        for i in integrations
    ):
        raise ApiError(
            400,
            "integrations must be a list of {type: 'wandb', wandb: {project, ...}}.",
            param="integrations",
            code="invalid_value",
        )
    return integrations


def top_level_hp(hp: dict[str, Any]) -> dict[str, Any]:
    return {k: hp.get(k, "auto") for k in ("batch_size", "learning_rate_multiplier", "n_epochs")}


def azure_pending_hp(hp: dict[str, Any]) -> dict[str, Any]:
    # Azure reports hyperparameters it has not chosen yet as -1 (learning rate: 1).
    out = top_level_hp(hp)
    for key, unset in (("n_epochs", -1), ("batch_size", -1), ("learning_rate_multiplier", 1)):
        if out[key] == "auto":
            out[key] = unset
    return out
