"""gateway/stalls.py: what lives at a snapshot renewal is frozen out of the collector's sight
after a collection of the young generations only, and a frozen object that dies is still freed
at once, unless it is in a reference cycle (which no request leaves: tests/test_cycles.py)."""

from __future__ import annotations

import gc
import weakref

from gateway import stalls


class _Cycle:
    def __init__(self) -> None:
        self.me = self


class _Acyclic:
    pass


def test_freeze_young_frees_the_young_cycles_and_freezes_what_lives() -> None:
    try:
        gc.collect()
        died = weakref.ref(_Cycle())  # garbage already, in the young generations
        alive, acyclic = _Cycle(), _Acyclic()
        stalls.freeze_young()
        assert died() is None  # collected before the freeze
        assert not any(seen is alive for seen in gc.get_objects())  # out of sight
        freed = weakref.ref(acyclic)
        del acyclic
        assert freed() is None  # frozen, but freed by its reference count
        frozen_cycle = weakref.ref(alive)
        del alive
        gc.collect()
        assert frozen_cycle() is not None  # a cycle that dies frozen is for no collection
    finally:
        gc.unfreeze()
