"""The start-up shortcuts of `ftpipe validate` answer exactly what the long way answers:
libyaml's parser where it agrees with PyYAML's Python parser, a Pipeline model built with
only the union members the file names, and the entry-point scan skipped when no installed
distribution declares an ftpipe group."""

from __future__ import annotations

import shutil
import string
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftpipe import registry
from ftpipe.spec import yamlpos
from ftpipe.spec.validate import load
from ftpipe.spec.yamlpos import YamlProblem, load_yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "pipelines").glob("*.yaml"))
needs_libyaml = pytest.mark.skipif(yamlpos._CLoader is None, reason="PyYAML without libyaml")


def _parsed(text: str) -> Any:
    """The Document, or the problem (position and message), for ``text``."""
    try:
        doc = load_yaml(text)
    except YamlProblem as exc:
        return ("problem", exc.line, exc.col, exc.message)
    return (doc.data, doc.value_pos, doc.key_pos)


def _python_parsed(text: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The same, from PyYAML's Python parser alone (an install without libyaml)."""
    with monkeypatch.context() as m:
        m.setattr(yamlpos, "_CLoader", None)
        return _parsed(text)


@needs_libyaml
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_takes_the_libyaml_path_and_reads_the_same(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = example.read_text()
    assert yamlpos._PLAIN_TEXT.fullmatch(text)
    doc = yamlpos._compose(yamlpos._CLoader(text))  # libyaml reads it: no fall back to Python
    assert (doc.data, doc.value_pos, doc.key_pos) == _parsed(text) == _python_parsed(text, monkeypatch)


@needs_libyaml
@pytest.mark.parametrize(
    "text",
    [
        "a: {prompt: what?}\n",  # libyaml reads this; PyYAML's Python parser refuses it
        "a: {b: }\n",  # an empty value: the parsers place it one column apart
        "a: !!str 1\n",
        "---\n",
        "a: 1\na: 2\n",
        "a: [1, 2\n",
        "a:\n  b: 1\n c: 2\n",
        "a: 'open\n",
    ],
)
def test_where_the_parsers_differ_the_python_parser_answers(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _parsed(text) == _python_parsed(text, monkeypatch)


_CHARS = string.ascii_letters + string.digits + " :-[]{},'\"&*!|>#%@`=<.~/\\?\n"
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.sampled_from(["", "x y", "a: b", "- z", "#x", "'q'", "${env:A}", "1e3", "yes", "multi\nline", "what?"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("abxyz_-", min_size=1, max_size=5), inner),
    max_leaves=12,
)


@needs_libyaml
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=_VALUES,
    flow=st.sampled_from([None, False, True]),
    edits=st.lists(st.tuples(st.integers(0, 400), st.sampled_from(["insert", "delete"]), st.sampled_from(_CHARS))),
)
def test_generated_and_damaged_yaml_reads_the_same_either_way(
    data: Any, flow: bool | None, edits: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, width=40)
    for at, op, ch in edits:
        at = min(at, len(text))
        text = text[:at] + ch + text[at:] if op == "insert" else text[:at] + text[at + 1 :]
    assert _parsed(text) == _python_parsed(text, monkeypatch)


# --------------------------------------------------------------------------- the narrowed model


def _problems(path: Path) -> list[str]:
    loaded = load(path, env={})
    return [str(p) for p in loaded.problems] + ([repr(loaded.pipeline.model_dump())] if loaded.ok else [])


def _full_model_problems(path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What validation said before the narrowing: every registered member in every union."""
    with monkeypatch.context() as m:
        m.setattr(registry, "pipeline_model_for", lambda data: registry.pipeline_model())
        return _problems(path)


def _damaged(text: str) -> list[str]:
    """Each example with one line removed, retyped or re-tagged: the mistakes people make."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        out.append("\n".join(lines[:i] + lines[i + 1 :]))
        if ":" in line:
            key = line.partition(":")[0]
            for value in ("fast", "{type: nope}", "trll", "[1]", "null", "${env:HF_TOKEN}"):
                out.append("\n".join([*lines[:i], f"{key}: {value}", *lines[i + 1 :]]))
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("narrow") / "pipelines"
    shutil.copytree(REPO / "pipelines" / "data", out / "data")
    return out


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_narrowed_model_says_what_the_full_model_says(
    example: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [example.read_text(), *_damaged(example.read_text())[::3]]
    for n, text in enumerate(texts):
        f = folder / f"{example.stem}-{n}.yaml"
        f.write_text(text)
        assert _problems(f) == _full_model_problems(f, monkeypatch), text


def _members(model: Any, field: str) -> tuple:
    annotation = model.model_fields[field].annotation
    return get_args(annotation) or (annotation,)


def test_the_narrowed_model_holds_only_the_named_members() -> None:
    data = yaml.safe_load((REPO / "pipelines" / "quickstart.yaml").read_text())
    narrow, full = registry.pipeline_model_for(data), registry.pipeline_model()
    assert narrow is not full
    assert narrow is registry.pipeline_model_for(data)  # built once
    assert [t.__name__ for t in _members(narrow, "trainer")] == ["TrlTrainer"]
    assert len(_members(full, "trainer")) == len(registry.plugins()["trainer"]) > 1
    data["trainer"]["backend"] = "trll"  # an unknown tag: its message lists every backend
    assert registry.pipeline_model_for(data) is full


# --------------------------------------------------------------------------- entry points


def _dist(folder: Path, name: str, entry_points: str) -> None:
    dist = folder / f"{name}-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(entry_points)


def test_the_entry_point_scan_runs_only_where_an_ftpipe_group_is_declared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    _dist(site, "other", "[console_scripts]\nftpipe-ish = ftpipe.x:y\n\n[pytest11]\nftpipe = ftpipe.z\n")
    monkeypatch.setattr(sys, "path", [str(site), str(tmp_path / "absent")])
    assert not registry._plugins_may_be_installed()
    assert list(registry.entry_points().select(group="ftpipe.metrics")) == []

    _dist(site, "someplugin", "[console_scripts]\nx = y:z\n\n[ftpipe.metrics]\nshout = someplugin:shout\n")
    assert registry._plugins_may_be_installed()
    assert [ep.name for ep in registry.entry_points().select(group="ftpipe.metrics")] == ["shout"]


def test_what_the_quick_look_cannot_read_goes_to_the_full_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "plugins.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))  # an (empty) zip on sys.path
    monkeypatch.setattr(sys, "path", [str(archive)])
    assert registry._plugins_may_be_installed()
