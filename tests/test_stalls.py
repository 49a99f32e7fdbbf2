"""gateway/observability/stalls.py: what lives at a snapshot renewal is frozen out of the
collector's sight after a collection of what is in sight (not of the frozen objects), and a frozen
object that dies is still freed at once, unless it is in a reference cycle (which no request leaves:
tests/test_cycles.py), and such a cycle is freed at the renewal after the frozen objects grew."""

from __future__ import annotations

import gc
import weakref

import pytest

from gateway.observability import stalls


class _Cycle:
    def __init__(self) -> None:
        self.me = self


class _Acyclic:
    pass


def test_a_renewal_frees_the_cycles_in_sight_and_freezes_what_lives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stalls, "FROZEN_GROWTH", float("inf"))  # never all of them
    try:
        dying, alive, acyclic = _Cycle(), _Cycle(), _Acyclic()
        gc.collect()  # all three in the oldest generation, as what lived a while is
        died = weakref.ref(dying)
        del dying  # a cycle dead there: no collection of the young generations would see it
        stalls.freeze_what_lives()
        assert died() is None  # collected, not frozen
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


def test_once_the_frozen_objects_grew_a_renewal_frees_the_cycles_that_died_frozen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stalls, "_frozen_after_all", 0)  # no renewal yet
    try:
        stalls.freeze_what_lives()  # the first renewal goes through them all
        monkeypatch.setattr(stalls, "FROZEN_GROWTH", float("inf"))
        in_flight = _Cycle()
        stalls.freeze_what_lives()  # frozen while in flight
        died_frozen = weakref.ref(in_flight)
        del in_flight
        stalls.freeze_what_lives()
        assert died_frozen() is not None  # the frozen objects did not grow enough: still kept
        monkeypatch.setattr(stalls, "FROZEN_GROWTH", 0.25)
        # as if the last collection of them all had left half as many: grown past the share
        monkeypatch.setattr(stalls, "_frozen_after_all", gc.get_freeze_count() // 2)
        stalls.freeze_what_lives()
        assert died_frozen() is None  # brought back in sight and collected
    finally:
        gc.unfreeze()


def test_while_serving_the_young_generation_is_collected_less_often() -> None:
    before = gc.get_threshold()
    with stalls.collected_less_often():
        assert gc.get_threshold() == (stalls.YOUNG_THRESHOLD, *before[1:])
        assert before[0] < stalls.YOUNG_THRESHOLD
    assert gc.get_threshold() == before
