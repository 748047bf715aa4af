"""ftpipe: declarative pipelines for fine-tuning LLMs.

The Python API the CLI is built on::

    import ftpipe
    loaded = ftpipe.load("pipelines/quickstart.yaml")      # parse + validate, never raises for file problems
    plan = ftpipe.plan("pipelines/quickstart.yaml")        # the step graph with cache keys
    outcome = ftpipe.run("pipelines/quickstart.yaml")      # run it here; outcome.exit_code
"""

from __future__ import annotations

__version__ = "0.1.0"

from ftpipe.api import load, plan, run, validate  # noqa: E402

__all__ = ["__version__", "load", "plan", "run", "validate"]
