"""The principals of recently presented keys: reused while fresh, dropped on any change."""

from __future__ import annotations

from sandcastle.services.auth import Principal
from sandcastle.services.principals import PrincipalCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def principal(key_id: str = "k1") -> Principal:
    return Principal(key_id=key_id, org_id="o1", project_id=None, role="owner")


def test_a_principal_is_reused_while_the_store_has_not_changed_and_it_is_fresh() -> None:
    clock = Clock()
    cache = PrincipalCache(2.0, clock=clock)
    cache.put("h1", principal(), generation=7)
    clock.now += 1.9
    assert cache.get("h1", generation=7) == principal()


def test_a_change_to_the_store_makes_every_principal_stale() -> None:
    cache = PrincipalCache(60.0, clock=Clock())
    cache.put("h1", principal("k1"), generation=7)
    cache.put("h2", principal("k2"), generation=7)
    assert cache.get("h1", generation=8) is None
    assert cache.get("h2", generation=8) is None
    # Dropped, not only hidden: the old generation does not bring them back.
    assert cache.get("h1", generation=7) is None


def test_a_principal_older_than_the_cache_time_is_read_again() -> None:
    clock = Clock()
    cache = PrincipalCache(2.0, clock=clock)
    cache.put("h1", principal(), generation=1)
    clock.now += 2.0
    assert cache.get("h1", generation=1) is None


def test_a_cache_time_of_zero_keeps_nothing() -> None:
    cache = PrincipalCache(0.0, clock=Clock())
    cache.put("h1", principal(), generation=1)
    assert cache.get("h1", generation=1) is None


def test_the_cache_holds_at_most_its_bound_dropping_the_least_recently_read() -> None:
    cache = PrincipalCache(60.0, max_entries=2, clock=Clock())
    cache.put("h1", principal("k1"), generation=1)
    cache.put("h2", principal("k2"), generation=1)
    cache.put("h3", principal("k3"), generation=1)
    assert cache.get("h1", generation=1) is None
    assert cache.get("h2", generation=1) == principal("k2")
    assert cache.get("h3", generation=1) == principal("k3")
