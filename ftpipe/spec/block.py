"""The base of every pipeline block, and the field types blocks share (:data:`Secret` above all)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
)

from ftpipe.spec.interpolate import ENV_REF_FULL


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _secret_ref(value: str, info: ValidationInfo) -> str:
    # In the file a secret must be a reference; once resolved for a run it is a value.
    if (info.context or {}).get("resolved"):
        return value
    if not ENV_REF_FULL.fullmatch(value):
        raise ValueError(
            "secrets are given by reference, not by value: write ${env:NAME} and set NAME "
            "in the environment (the value must never be committed)"
        )
    return value


# A secret: written as ${env:NAME} in the file; never printed, stored or uploaded.
Secret = Annotated[str, AfterValidator(_secret_ref), Field(json_schema_extra={"x-secret": True})]


def _nested(**default: Any) -> Any:
    """The default of a nested block: a mapping validated through the parent's schema.
    (An instance as default would build that block's own validator at import time, which
    is most of `ftpipe validate`'s start-up cost.)"""
    return Field(default_factory=lambda: dict(default), validate_default=True)


PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
