"""gateway/stalls.py: what lives at a snapshot renewal is frozen out of the collector's sight,
and a cycle that died frozen is freed at the next renewal."""

from __future__ import annotations

import gc
import weakref

from gateway import stalls


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_collect_all_freezes_what_lives_and_frees_the_cycles_that_died_frozen() -> None:
    try:
        alive = _Cycle()
        stalls.collect_all()
        assert not any(seen is alive for seen in gc.get_objects())  # out of sight
        dead = weakref.ref(alive)
        del alive
        gc.collect()
        assert dead() is not None  # a frozen cycle: no collection sees it...
        stalls.collect_all()
        assert dead() is None  # ...but the one of the next renewal
    finally:
        gc.unfreeze()
