"""Test isolation: every test gets its own home, cache and run store, and no real token
or endpoint from the developer's environment can reach a test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_SCRUB = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_MANAGEMENT_TOKEN",
    "WANDB_API_KEY",
    "RAY_ADDRESS",
    "FTPIPE_STORE",
    "HF_ENDPOINT",
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("home")
    for var in _SCRUB:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    # the built-in tiny model is deterministic: share one build across tests
    shared = Path(os.environ.get("FTPIPE_TEST_CACHE", REPO / ".pytest_cache" / "ftpipe-cache"))
    shared.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("FTPIPE_CACHE", str(shared))
