"""A service's startup objects are out of the garbage collector's reach once it serves."""

from __future__ import annotations

import gc
import weakref

from a402.serving import freeze_startup_objects


class _Node:
    """An object that can sit in a reference cycle and be watched by a weak reference."""

    def __init__(self) -> None:
        self.me: _Node | None = None


def test_the_objects_alive_before_serving_are_frozen_and_later_ones_still_collected() -> None:
    try:
        freeze_startup_objects()
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # the imported modules, at least
        node = _Node()
        node.me = node  # made after: a cycle only the collector frees
        gone = weakref.ref(node)
        del node
        # (another thread's allocations may start a collection first: what matters is
        # that it is freed, by whichever collection, not which one counted it)
        gc.collect()
        assert gone() is None
        # still frozen (a frozen object can be freed by reference counting when another
        # thread drops it, so the count may fall a little, never to nothing)
        assert gc.get_freeze_count() > frozen // 2
    finally:
        gc.unfreeze()
