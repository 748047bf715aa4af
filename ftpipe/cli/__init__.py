"""The `ftpipe` command. Each command group lives in its own module; heavy libraries are
imported inside the commands that need them so that --help, validate and plan stay fast."""
from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import click

from ftpipe import __version__
from ftpipe.errors import EXIT_INVALID, EXIT_STEP_FAILED, FtpipeError


class FtpipeGroup(click.Group):
    """Turns ftpipe's own errors into their message and exit code, wherever the CLI is
    invoked from (the console script, ``python -m ftpipe``, tests)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FtpipeError as exc:
            if os.environ.get("FTPIPE_DEBUG"):
                traceback.print_exc()
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=FtpipeGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ftpipe")
def main() -> None:
    """Declarative pipelines for fine-tuning LLMs: prepare → train → evaluate → gate → deploy.

    \b
    Exit codes: 0 success · 1 a step failed · 2 invalid pipeline or usage ·
    3 the evaluation gate blocked deployment · 4 another run holds the lock · 130 interrupted
    """


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def run_cli() -> None:
    """Entry point: user errors print without a traceback (FTPIPE_DEBUG=1 shows it)."""
    from ftpipe.cli import commands, more  # noqa: F401 - registers the commands

    try:
        code = main.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_INVALID if exc.exit_code == 2 else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except FtpipeError as exc:
        if os.environ.get("FTPIPE_DEBUG"):
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last resort: a bug, said plainly
        if os.environ.get("FTPIPE_DEBUG"):
            traceback.print_exc()
        from ftpipe.faults import no_room

        if no_room(exc):  # the machine's fault, not a bug: say what to do
            click.echo(f"error: the disk is full ({exc}): free space and run again; finished steps are kept",
                       err=True)
            sys.exit(EXIT_STEP_FAILED)
        click.echo(f"internal error: {type(exc).__name__}: {exc}\n  (a bug in ftpipe; FTPIPE_DEBUG=1 shows the "
                   "traceback — please report it)", err=True)
        sys.exit(EXIT_STEP_FAILED)
    sys.exit(code or 0)
