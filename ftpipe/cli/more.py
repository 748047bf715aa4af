"""Kept so that older imports (``from ftpipe.cli import more``) still work: every command,
core or optional, is now listed in :data:`ftpipe.cli.COMMANDS` and imported on first use."""

from __future__ import annotations

from ftpipe.cli import COMMANDS

COMMAND_MODULES = tuple(sorted({target.partition(":")[0] for target in COMMANDS.values()}))
