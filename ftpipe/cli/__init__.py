"""The `ftpipe` command. Each command group lives in its own module and is listed in
:data:`COMMANDS` (registered explicitly, imported when first used); heavy libraries are
imported inside the commands that need them so that --help, validate and plan stay fast.
:func:`report_error` is the one place an exception becomes a message and an exit code."""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import traceback
from typing import Any

import click

from ftpipe import __version__
from ftpipe.errors import EXIT_INVALID, EXIT_STEP_FAILED, FtpipeError

# command name -> "module:attribute" of its click command or group
COMMANDS: dict[str, str] = {
    "validate": "ftpipe.cli.commands:validate",
    "plan": "ftpipe.cli.commands:plan",
    "schema": "ftpipe.cli.commands:schema",
    "run": "ftpipe.cli.commands:run",
    "runs": "ftpipe.cli.commands:runs",
    "serve": "ftpipe.cli.serve:serve",
    "cancel": "ftpipe.cli.cancel:cancel",
    "backends": "ftpipe.cli.backends:backends",
    "convert": "ftpipe.cli.convert:convert",
    "schedule": "ftpipe.cli.schedule:schedule",
}


# Commands that read pipeline files and print, bounded by the files they are given. They run
# without the cycle collector and skip its pass at exit: their start-up builds tens of
# thousands of long-lived objects (pydantic's schemas and validators) and next to no garbage
# (a few KB a file), and collecting them anyway is about a sixth of `ftpipe validate`.
SHORT_LIVED = frozenset({"validate", "plan", "schema"})


def report_error(exc: BaseException) -> int:
    """Print an error the way ftpipe prints errors; return the exit code. A user error is
    its message (FTPIPE_DEBUG=1 adds the traceback); anything else is called a bug."""
    if isinstance(exc, KeyboardInterrupt | click.exceptions.Abort):
        click.echo("interrupted", err=True)
        return 130
    if os.environ.get("FTPIPE_DEBUG"):
        traceback.print_exception(exc)
    if isinstance(exc, FtpipeError):
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    from ftpipe.faults import no_room

    if no_room(exc):  # the machine's fault, not a bug: say what to do
        click.echo(f"error: the disk is full ({exc}): free space and run again; finished steps are kept", err=True)
        return EXIT_STEP_FAILED
    click.echo(
        f"internal error: {type(exc).__name__}: {exc}\n  (a bug in ftpipe; FTPIPE_DEBUG=1 shows the "
        "traceback — please report it)",
        err=True,
    )
    return EXIT_STEP_FAILED


class FtpipeGroup(click.Group):
    """The commands of :data:`COMMANDS`, imported on first use; ftpipe's own errors become
    their message and exit code wherever the CLI is invoked from (the console script,
    ``python -m ftpipe``, tests)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            command = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:  # an optional command module that is absent
            if exc.name != module:
                raise
            return None
        self.add_command(command, name)
        return command if isinstance(command, click.Command) else None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FtpipeError as exc:
            ctx.exit(report_error(exc))


@click.group(cls=FtpipeGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ftpipe")
def main() -> None:
    """Declarative pipelines for fine-tuning LLMs: prepare → train → evaluate → gate → deploy.

    \b
    Exit codes: 0 success · 1 a step failed · 2 invalid pipeline or usage ·
    3 the evaluation gate blocked deployment · 4 another run holds the lock · 130 interrupted
    """
    if click.get_current_context().invoked_subcommand not in SHORT_LIVED:
        gc.enable()  # (run_cli turned it off for start-up)


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def run_cli() -> None:
    """Entry point: user errors print without a traceback (FTPIPE_DEBUG=1 shows it)."""
    gc.disable()  # until the command is known: see SHORT_LIVED
    try:
        _run_main()
    finally:
        if not gc.isenabled():
            gc.freeze()  # nothing to collect at exit: skip the collector's pass over everything


def _run_main() -> None:
    try:
        code = main.main(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_INVALID if exc.exit_code == 2 else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the one error handler says what it is
        sys.exit(report_error(exc))
    except KeyboardInterrupt as exc:
        sys.exit(report_error(exc))
    sys.exit(code or 0)
