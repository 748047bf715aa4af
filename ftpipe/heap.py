"""Garbage collections that skip the long-lived heap while a step runs.

Once torch, transformers, TRL and datasets are imported the interpreter tracks millions of
objects that live until exit, and every full collection walks them all: 0.4 s each on a
2-core machine (accelerate runs one as training starts; the evaluate step one per variant
to free a model's memory). Inside :func:`frozen_heap` the objects alive at its start (or at
a nested block's start) sit in the permanent generation, so collections only walk what
the step itself created; models and tensors the step drops are still freed. At the end of
the outermost block everything goes back to normal collection, so nothing leaks.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Collections inside the block skip the objects alive now. Nested blocks also freeze
    what was created since the outer one began; only the outermost block unfreezes."""
    outer = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not outer:
            gc.unfreeze()
