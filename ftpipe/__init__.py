"""ftpipe: declarative pipelines for fine-tuning LLMs.

The Python API the CLI is built on::

    import ftpipe
    loaded = ftpipe.load("pipelines/quickstart.yaml")      # parse + validate, never raises for file problems
    plan = ftpipe.plan("pipelines/quickstart.yaml")        # the step graph with cache keys
    outcome = ftpipe.run("pipelines/quickstart.yaml")      # run it here; outcome.exit_code
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "load", "plan", "run", "validate"]

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ftpipe.api import load, plan, run, validate


def __getattr__(name: str) -> Any:
    # The API is imported on first use: `import ftpipe` (which every `ftpipe.*` import runs)
    # then costs nothing, and `ftpipe --help` does not build the pipeline models.
    if name in ("load", "plan", "run", "validate"):
        from ftpipe import api

        return getattr(api, name)
    raise AttributeError(f"module 'ftpipe' has no attribute {name!r}")
