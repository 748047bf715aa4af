from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tokenizer():
    """The built-in tiny model's tokenizer, loaded the public way (as a user's script would)."""
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from ftpipe.models.tiny import ensure_tiny_model

    repo = Path(__file__).resolve().parents[2]  # the shared cache of tests/conftest.py
    cache = Path(os.environ.get("FTPIPE_TEST_CACHE", repo / ".pytest_cache" / "ftpipe-cache"))
    return AutoTokenizer.from_pretrained(str(ensure_tiny_model(cache)))
