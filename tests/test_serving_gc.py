"""A service's startup objects are out of the garbage collector's reach once it serves."""

from __future__ import annotations

import gc

from a402.serving import freeze_startup_objects


def test_the_objects_alive_before_serving_are_frozen_and_later_ones_still_collected() -> None:
    try:
        freeze_startup_objects()
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # the imported modules, at least
        cycle: list[object] = []
        cycle.append(cycle)  # made after: garbage the collector still finds
        del cycle
        assert gc.collect() >= 1
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
