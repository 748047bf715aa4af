"""validate and plan stay light: none of the heavy libraries is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "datasets", "openai", "ray", "trl", "peft", "huggingface_hub", "matplotlib")

SCRIPT = """
import json, sys
from ftpipe.cli import main, commands, more
try:
    main.main(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)), file=sys.stderr)
""" % (HEAVY,)


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "pipelines/quickstart.yaml"],
        ["plan", "pipelines/quickstart.yaml"],
        ["plan", "--json", "pipelines/openai-recipes.yaml"],
        ["--help"],
        ["schema"],
    ],
)
def test_light_commands_import_no_heavy_library(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=REPO, capture_output=True, text=True)
    loaded = json.loads(proc.stderr.strip().splitlines()[-1])
    assert loaded == [], f"`ftpipe {' '.join(args)}` imported {loaded}"


# ftpipe's own modules each light command leaves alone: work it does not need to do
OWN_UNUSED = {
    "--help": ("ftpipe.spec", "ftpipe.registry", "ftpipe.api", "pydantic.main"),  # no pipeline model is built
    "validate": ("ftpipe.engine", "ftpipe.store", "ftpipe.planner", "ftpipe.evaluation", "ftpipe.trainers"),
    "plan": ("ftpipe.engine", "ftpipe.evaluation.step", "ftpipe.trainers", "ftpipe.executors", "ftpipe.deploy"),
}


@pytest.mark.parametrize("command", sorted(OWN_UNUSED))
def test_light_commands_import_only_what_they_use(command: str) -> None:
    args = [command] if command.startswith("-") else [command, "pipelines/quickstart.yaml"]
    script = SCRIPT.replace("in %r" % (HEAVY,), "in ('ftpipe', 'pydantic')")
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, capture_output=True, text=True)
    loaded = json.loads(proc.stderr.strip().splitlines()[-1])
    unused = [m for m in loaded if any(m == u or m.startswith(u + ".") for u in OWN_UNUSED[command])]
    assert unused == [], f"`ftpipe {' '.join(args)}` imported {unused}"


_PROBE = """
import atexit, gc, sys
from ftpipe.cli import main, run_cli

@main.command("probe")
def probe() -> None:
    pass

atexit.register(lambda: print("collector", "on" if gc.isenabled() else "off"))
sys.argv = ["ftpipe", *sys.argv[1:]]
run_cli()
"""


@pytest.mark.parametrize(("args", "collector"), [(["validate", "pipelines/quickstart.yaml"], "off"), (["probe"], "on")])
def test_only_short_lived_commands_run_without_the_cycle_collector(args: list[str], collector: str) -> None:
    """`validate`, `plan` and `schema` skip the cycle collector (their start-up makes no
    garbage worth collecting); every other command, which may train for hours, has it."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"collector {collector}"


def test_the_python_api_names_stay_functions_once_every_module_is_loaded() -> None:
    # a submodule named like an API function would replace it on the package when imported
    code = (
        "import ftpipe, ftpipe.engine, ftpipe.planner, ftpipe.cli.commands\n"
        "p = ftpipe.plan('pipelines/quickstart.yaml')\n"
        "assert [s.id for s in p.steps][:2] == ['prepare', 'train'], p\n"
        "assert all(callable(getattr(ftpipe, n)) for n in ('load', 'plan', 'run', 'validate'))\n"
        "assert ftpipe.validate('pipelines/quickstart.yaml') == []\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
