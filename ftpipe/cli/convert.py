"""ftpipe convert autotrain: import an AutoTrain Advanced LLM config as a pipeline."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from ftpipe.cli import emit_json
from ftpipe.errors import UsageError


@click.group()
def convert() -> None:
    """Turn another tool's training config into an ftpipe pipeline."""


def _validate_text(text: str, where: Path) -> list[str]:
    """Problems of the pipeline ``text`` as if it were a file in folder ``where``."""
    from ftpipe.spec.validate import load

    where.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ftpipe-convert-", suffix=".yaml", dir=where)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return [str(p).replace(tmp, "<converted>") for p in load(tmp).problems]
    finally:
        os.unlink(tmp)


@convert.command("autotrain")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the pipeline here (default: stdout).")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@click.option("--json", "as_json", is_flag=True, help="The pipeline, mapped and unsupported keys as JSON.")
def convert_autotrain(config: str, output: str | None, force: bool, as_json: bool) -> None:
    """Convert an AutoTrain LLM config (autotrain --config FILE) into a pipeline.

    \b
    Every key is mapped or reported, with its line, as unsupported. ${VAR} becomes
    ${env:VAR}; hub.push_to_hub becomes an hf-hub deploy target; backend spaces-<hardware>
    becomes executor hf-spaces. Exit 2 for a config that is not an LLM task.
    """
    from ftpipe.convert.autotrain import convert_file

    src = Path(config)
    out = Path(output) if output else None
    if out is not None and out.exists() and not force:
        raise UsageError(f"{out} exists", hint="pass --force to overwrite it, or choose another --output")
    conv = convert_file(src, output=out)
    problems = _validate_text(conv.text, out.parent if out else src.parent)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(conv.text, encoding="utf-8")
        os.replace(tmp, out)
    if as_json:
        emit_json(
            {
                **conv.to_json(),
                "output": str(out) if out else None,
                "text": conv.text,
                "valid": not problems,
                "problems": problems,
            }
        )
        return
    if out is None:
        click.echo(conv.text, nl=False)
    else:
        click.echo(f"wrote {out} ({len(conv.mapped)} keys mapped, {len(conv.unsupported)} unsupported)", err=True)
    for e in conv.unsupported:
        click.echo(f"unsupported: {src}:{e.line}  {e.key}: {e.reason}", err=True)
    for warning in conv.warnings:
        click.echo(f"warning: {warning}", err=True)
    for note in conv.notes:
        click.echo(f"note: {note}", err=True)
    if problems:
        click.echo("warning: the pipeline does not validate yet:", err=True)
        for p in problems:
            click.echo(f"  {p}", err=True)
    elif out is not None:
        click.echo(f"next: ftpipe validate {out} && ftpipe run {out}", err=True)
