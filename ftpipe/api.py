"""The Python API: load, validate, plan, run. The CLI is a thin layer over these."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ftpipe.spec.validate import Loaded, Problem


def load(path: str | Path) -> Loaded:
    """Parse and validate a pipeline file; ``.problems`` lists what is wrong."""
    from ftpipe.spec.validate import load as _load

    return _load(Path(path))


def validate(path: str | Path) -> list[Problem]:
    """Every problem in the file (empty when it is valid)."""
    return load(path).problems


def plan(path: str | Path):
    """The step graph with cache keys. Raises ``PipelineInvalid`` for an invalid file."""
    from ftpipe.planner import build_plan
    from ftpipe.spec.validate import load_checked

    p = Path(path)
    return build_plan(load_checked(p).pipeline, p)


def run(
    path: str | Path,
    *,
    store: str | Path | None = None,
    force: bool = False,
    from_step: str | None = None,
    wait: bool = False,
    quiet: bool = True,
    **kwargs: Any,
):
    """Run the pipeline on this machine (the local executor). Returns a ``RunOutcome``."""
    from ftpipe.engine import execute
    from ftpipe.progress import Reporter

    return execute(
        Path(path),
        store=Path(store) if store else None,
        force=force,
        from_step=from_step,
        wait=wait,
        reporter=Reporter(quiet=quiet),
        **kwargs,
    )
