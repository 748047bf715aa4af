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
