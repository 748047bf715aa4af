"""Command modules other than the core ones. Each module attaches its commands to
``ftpipe.cli.main`` when imported; a module that is absent is simply not listed."""
from __future__ import annotations

import importlib

COMMAND_MODULES = (
    "ftpipe.cli.serve",      # ftpipe serve
    "ftpipe.cli.cancel",     # ftpipe cancel
    "ftpipe.cli.backends",   # ftpipe backends list / install
    "ftpipe.cli.convert",    # ftpipe convert autotrain
    "ftpipe.cli.schedule",   # ftpipe schedule github / cron
)

for _name in COMMAND_MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as exc:
        if exc.name != _name:
            raise
