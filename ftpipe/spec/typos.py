"""Problems hidden behind a mistyped ``backend:`` / ``type:``.

A discriminated union stops at an unknown tag, so ``backend: trll`` would hide every other
mistake in the trainer block until the tag is fixed. When the tag has one close match,
the block is checked again as that variant and its problems are reported too, marked as
such: every problem at once.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from ftpipe.spec.validate import _raw_path, did_you_mean, translate_errors
from ftpipe.spec.yamlpos import Document


def closest(word: object, options: list[str]) -> str | None:
    """The option ``did_you_mean`` would suggest for ``word``, if any."""
    m = re.search(r"Did you mean '(.*)'\?", did_you_mean(word, options))
    return m.group(1) if m else None


def behind_tag_typos(
    exc: ValidationError, data: Any, doc: Document, model: type[BaseModel]
) -> list[tuple[tuple, int, int, str]]:
    """(path, line, col, message) for the problems inside each block whose tag has a close
    match, found by validating the data with the tag corrected."""
    fixed = copy.deepcopy(data)
    changed: list[tuple[tuple, str, str]] = []
    for err in exc.errors(include_url=False):
        if err["type"] != "union_tag_invalid":
            continue
        ctx = err.get("ctx") or {}
        disc = str(ctx.get("discriminator", "")).strip("'")
        guess = closest(ctx.get("tag"), re.findall(r"'([^']*)'", str(ctx.get("expected_tags", ""))))
        path, _ = _raw_path(data, tuple(err["loc"]))
        block = _at(fixed, path)
        if guess and isinstance(block, dict) and block.get(disc) == ctx.get("tag"):
            block[disc] = guess
            changed.append((path, disc, guess))
    if not changed:
        return []
    try:
        model.model_validate(fixed)
    except ValidationError as again:
        out = []
        for ppath, line, col, msg in translate_errors(again, doc, model):
            for path, disc, guess in changed:
                if ppath[: len(path)] == path and ppath != path + (disc,):
                    out.append((ppath, line, col, f"{msg} (checked as {disc} '{guess}')"))
        return out
    return []


def _at(data: Any, path: tuple) -> Any:
    cur = data
    for seg in path:
        cur = cur[seg]
    return cur
