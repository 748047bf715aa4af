"""frozen_heap: collections inside skip the objects alive at its start, still free what
the block drops, and the heap goes back to normal collection afterwards."""

from __future__ import annotations

import gc
import weakref

from ftpipe.heap import frozen_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_collections_skip_the_old_heap_but_free_the_blocks_garbage() -> None:
    assert gc.get_freeze_count() == 0
    old = _Node()
    with frozen_heap():
        assert gc.get_freeze_count() > 0  # the old heap, ``old`` included, is frozen
        new = _Node()
        gone = weakref.ref(new)
        del new
        gc.collect()
        assert gone() is None  # garbage the block made is still collected
        old_ref = weakref.ref(old)
        del old
        gc.collect()
        assert old_ref() is not None  # frozen: the collector does not look at it
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert old_ref() is None  # unfrozen afterwards: nothing leaks


def test_nested_blocks_leave_unfreezing_to_the_outermost() -> None:
    with frozen_heap():
        with frozen_heap():
            pass
        assert gc.get_freeze_count() > 0  # still frozen: the outer block is not over
    assert gc.get_freeze_count() == 0
