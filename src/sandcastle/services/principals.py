"""Who a presented key is: resolved from the store, and remembered between requests.

Resolving a key is a database transaction of its own: on SQLite, about a third of the server's
CPU for a warm ``execute`` (``docs/PERFORMANCE.md``). A client sends the same key request after
request, so the principal the last one resolved is kept and used again while both hold:

- nothing has changed orgs, members or keys through this server since it was read: every
  transaction of the tenancy store (``TenancyStore.generation``) makes all entries stale, so a
  revocation, a removal or a demotion here takes effect at the next request, as it did before;
- it is younger than ``ttl_s``: the bound on what another server process sharing a PostgreSQL
  store could change unseen (a key it revoked works here that much longer at most).

Only successes are kept: an unknown or revoked key reads the database every time, so a key made
after a failed attempt works at once. The entries are bounded; the oldest go first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sandcastle.domain.roles import Role
from sandcastle.errors import AuthenticationError
from sandcastle.services.auth import OPERATOR_ORG_SLUG, Principal, hash_key
from sandcastle.store.tenancy import TenancyStore

#: Keys remembered at most; far more than the clients one server serves at once.
MAX_ENTRIES = 4096


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    generation: int
    read_at: float


class PrincipalCache:
    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def get(self, key_hash: str, generation: int) -> Principal | None:
        """The principal read for ``key_hash`` while the store was at ``generation``, if it was
        read recently enough."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if entry.generation != generation or self._clock() - entry.read_at >= self._ttl_s:
            del self._entries[key_hash]
            return None
        return entry.principal

    def put(self, key_hash: str, principal: Principal, generation: int) -> None:
        """Remember ``principal``, read from the store *at* ``generation``: the generation
        must be taken before the read, so a change committed during it makes the entry stale."""
        if self._ttl_s <= 0:
            return
        self._entries[key_hash] = _Entry(principal, generation, self._clock())
        self._entries.move_to_end(key_hash)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


async def authenticate(
    store: TenancyStore, presented: str | None, cache: PrincipalCache | None = None
) -> Principal:
    """The principal of a presented key, from ``cache`` while it is fresh (see there)."""
    if not presented:
        raise AuthenticationError(
            "Authentication failed: missing API key (Authorization: Bearer <key>)"
        )
    key_hash = hash_key(presented)
    generation = store.generation
    if cache is not None and (known := cache.get(key_hash, generation)) is not None:
        return known
    principal = await _resolve(store, key_hash)
    if cache is not None:
        cache.put(key_hash, principal, generation)
    return principal


async def _resolve(store: TenancyStore, key_hash: str) -> Principal:
    async with store.reading() as tx:
        found = await tx.key_by_hash(key_hash)
    if found is None:
        raise AuthenticationError("Authentication failed: unknown or revoked API key")
    row, member, org = found
    if row.revoked_at is not None or (
        row.member_id is not None and (member is None or member.removed_at is not None)
    ):
        raise AuthenticationError("Authentication failed: unknown or revoked API key")
    role = member.role if member is not None else row.role
    return Principal(
        key_id=row.id,
        org_id=row.org_id,
        project_id=row.project_id,
        role=role,
        member_id=row.member_id,
        user_id=member.user_id if member is not None else None,
        operator=role == Role.OWNER and org.slug == OPERATOR_ORG_SLUG,
        rate_limit_per_s=org.rate_limit_per_s,
        rate_limit_burst=org.rate_limit_burst,
        org_slug=org.slug,
    )
