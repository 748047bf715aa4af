"""Every example pipeline validates, plans, points editors at the schema and says how to run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftpipe.planner import build_plan
from ftpipe.spec.validate import load

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "pipelines").glob("*.yaml"))


def test_examples_exist() -> None:
    names = {p.stem for p in EXAMPLES}
    assert "quickstart" in names and len(names) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_validates_and_plans(path: Path) -> None:
    loaded = load(path)
    assert loaded.problems == []
    plan = build_plan(loaded.pipeline, path)
    ids = [s.id for s in plan.steps]
    assert ids[:2] == ["prepare", "train"]
    assert len({s.key for s in plan.steps}) == len(ids)
    lines = path.read_text().splitlines()
    assert lines[0] == "# yaml-language-server: $schema=../schemas/pipeline.schema.json"
    assert any(line.startswith("#") and "ftpipe run pipelines/" in line for line in lines[:6])


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_passes_the_json_schema(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO / "schemas" / "pipeline.schema.json").read_text())
    jsonschema.validate(load(path).doc.data, schema)
