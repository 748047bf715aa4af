"""Property-based fuzzing of `ftpipe validate` (issue 20): generated YAML documents, raw
text, and mutations of every example pipeline never end in exit 1 or a traceback, and
each input is handled within bounded CPU time and memory. The example budget is fixed so
that CI stays fast (about a minute in all; FTPIPE_FUZZ_EXAMPLES scales it for a longer hunt;
under CI the examples are derandomized, so a run is reproducible)."""

from __future__ import annotations

import os
import resource
import shutil
import tracemalloc
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftpipe.cli import commands, main  # noqa: F401 - registers commands
from ftpipe.errors import FtpipeError
from ftpipe.spec.validate import load

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "pipelines").glob("*.yaml"))
BUDGET = int(os.environ.get("FTPIPE_FUZZ_EXAMPLES", "120"))
CPU_LIMIT_S = 2.0
MEMORY_LIMIT_MB = 64

FUZZ = settings(
    max_examples=BUDGET,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of pipelines/ (the examples' data files resolve as in the repo)."""
    folder = tmp_path_factory.mktemp("fuzz") / "pipelines"
    shutil.copytree(REPO / "pipelines" / "data", folder / "data")
    return folder


def _cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def check_validate(folder: Path, text: str | bytes) -> None:
    """The properties every input must have."""
    f = folder / "fuzzed.yaml"
    f.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    tracemalloc.start()
    cpu = _cpu()
    try:
        loaded = load(f, env={})  # never raises for a problem in the file
        if loaded.ok:
            from ftpipe.planner import build_plan

            try:
                build_plan(loaded.pipeline, f)
            except FtpipeError:
                pass  # a user error with a message is fine; anything else is a bug
        spent = _cpu() - cpu
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert spent < CPU_LIMIT_S, f"{spent:.2f} CPU seconds"
    assert peak < MEMORY_LIMIT_MB * 2**20, f"{peak / 2**20:.0f} MB"
    assert loaded.ok or loaded.problems
    for p in loaded.problems:
        assert p.file == str(f) and p.line >= 1 and p.col >= 1 and p.message.strip(), p
    result = CliRunner().invoke(main, ["validate", str(f)])
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "internal error" not in result.output


# --------------------------------------------------------------------------- generated documents

KEYS = [
    "version",
    "name",
    "dataset",
    "source",
    "type",
    "path",
    "format",
    "columns",
    "model",
    "base",
    "trainer",
    "backend",
    "method",
    "peft",
    "hyperparameters",
    "epochs",
    "learning_rate",
    "evaluate",
    "metrics",
    "baselines",
    "gate",
    "metric",
    "must_beat",
    "deploy",
    "executor",
    "schedule",
    "cron",
    "token",
    "api_key",
    "description",
    "split",
    "repo",
    "<<",
    "local",
    "trl",
    "openai",
    "hf-hub",
    "lora",
    "r",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "1",
            "trl",
            "local",
            "lora",
            "chat",
            "builtin:tiny",
            "token_f1",
            "base",
            "${env:HF_TOKEN}",
            "${env:X:-1}",
            "${env:",
            "${oops}",
            "data/recipes.jsonl",
            "17 3 * * 1",
            "0x1F",
            ".inf",
            "~",
            "!!binary aGk=",
            "&a",
            "*a",
        ]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), inner, max_size=6),
    ),
    max_leaves=40,
)
DOCS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8).map(lambda d: {"version": 1, "name": "fuzz", **d})


@FUZZ
@given(doc=st.one_of(DOCS, VALUES), flow=st.booleans())
def test_generated_documents(workdir: Path, doc: object, flow: bool) -> None:
    check_validate(workdir, yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True))


YAML_BITS = [
    "&a ",
    "*a",
    "<<: *a\n",
    "!!python/object:os.system ",
    "!!str ",
    "!!set ",
    "? ",
    "- ",
    ": ",
    "\t",
    "'",
    '"',
    "{",
    "}",
    "[",
    "]",
    "#",
    "|\n",
    ">-\n",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "\x00",
    "\ufeff",
    "\r\n",
    "  ",
    "\n",
    "key: value\n",
    "${env:HF_TOKEN}",
]


@FUZZ
@given(parts=st.lists(st.one_of(st.sampled_from(YAML_BITS), st.text(max_size=8)), max_size=40))
def test_raw_text(workdir: Path, parts: list[str]) -> None:
    check_validate(workdir, "".join(parts))


@FUZZ
@given(blob=st.binary(max_size=200))
def test_raw_bytes(workdir: Path, blob: bytes) -> None:
    check_validate(workdir, blob)


# --------------------------------------------------------------------------- mutated examples


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(EXAMPLES)).read_text()
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(
            st.sampled_from(
                ["delete", "duplicate", "swap", "indent", "dedent", "insert", "replace_value", "truncate", "chars"]
            )
        )
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = lines[i][2:] if lines[i].startswith("  ") else lines[i].lstrip()
        elif op == "insert":
            lines.insert(i, draw(st.sampled_from(YAML_BITS)) + draw(st.text(max_size=12)) + "\n")
        elif op == "replace_value" and ":" in lines[i]:
            key, _, _ = lines[i].partition(":")
            value = yaml.safe_dump(draw(VALUES), default_flow_style=True, width=10**6).strip()
            value = value.removesuffix("\n...").strip()
            lines[i] = f"{key}: {value}\n"
        elif op == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
            del lines[i + 1 :]
        elif op == "chars":
            pos = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:pos] + draw(st.text(min_size=1, max_size=4)) + lines[i][pos:]
    return "".join(lines)


@FUZZ
@given(text=mutated_example())
def test_mutated_examples(workdir: Path, text: str) -> None:
    check_validate(workdir, text)


@st.composite
def structurally_mutated_example(draw: st.DrawFn) -> object:
    data = yaml.safe_load(draw(st.sampled_from(EXAMPLES)).read_text())
    paths: list[tuple] = []
    stack: list[tuple[tuple, object]] = [((), data)]
    while stack:
        path, value = stack.pop()
        paths.append(path)
        if isinstance(value, dict):
            stack.extend((path + (k,), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((path + (i,), v) for i, v in enumerate(value))
    path = draw(st.sampled_from(paths[1:]))
    parent = data
    for seg in path[:-1]:
        parent = parent[seg]
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(VALUES)
    return data


@FUZZ
@given(data=structurally_mutated_example())
def test_structurally_mutated_examples(workdir: Path, data: object) -> None:
    check_validate(workdir, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def test_every_example_is_fuzzed_and_valid(workdir: Path) -> None:
    assert len(EXAMPLES) >= 5
    for example in EXAMPLES:
        check_validate(workdir, example.read_text())
        assert load(workdir / "fuzzed.yaml", env={}).ok, example.name
