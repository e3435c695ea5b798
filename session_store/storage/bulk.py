"""Bulk removal in bounded batches: every session of a realm, a client's client sessions, or the
expired leftovers, partition by partition.

A whole-realm or whole-client removal first raises a removal marker on every shard (sessions or
client sessions started before it are dead to every script from then on: readers never see what the
removal covers, even before its batch runs), then deletes the covered sessions batch by batch, each
batch one script call on one partition. Sessions created after the marker are not touched.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Sequence

from session_store.model.clock import Clock
from session_store.model.ids import PARTITION_COUNT
from session_store.model.session import RemovalProgress
from session_store.storage import keys
from session_store.storage.policies import CachedPolicy, PolicyStore
from session_store.storage.router import Router

DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 5000
PARTITIONS_IN_FLIGHT = 16
"""Partitions of one shard worked on at once: bounds the load a removal puts on a shard."""
PROGRESS_EVERY = 256
"""Partitions per progress report (4096 is a multiple of it)."""


class RemovalScope(enum.Enum):
    """What a bulk removal covers."""

    REALM = "all"
    CLIENT = "client"
    EXPIRED = "expired"


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class BulkRemoval:
    """Removes sessions of a realm in batches over every partition."""

    def __init__(self, router: Router, policies: PolicyStore, clock: Clock) -> None:
        """Work on these shards with these policies and this clock."""
        self._router = router
        self._policies = policies
        self._clock = clock

    async def _now_s(self) -> int:
        now = self._clock.script_now()
        if now:
            return int(now) // 1000
        times = await asyncio.gather(*(s.command("TIME") for s in self._router.shards.values()))
        return max(int(seconds) for seconds, _ in times)

    async def remove(
        self, realm: str, scope: RemovalScope, *, client_id: str = "", batch_size: int = DEFAULT_BATCH_SIZE
    ) -> AsyncIterator[RemovalProgress]:
        """Remove what `scope` covers, yielding progress after every group of partitions.

        Whole-realm and client removals cover everything started up to and including the current
        second (a session created in that same second, even just after the call, is removed too).

        Raises:
            ShardUnavailableError: a shard is unavailable (the marker is then either on every shard
                or reported as failed; batches already run stay done: retry to finish).
        """
        if scope is RemovalScope.REALM:
            cached = await self._policies.mark_removed(realm, "", await self._now_s() + 1)
        elif scope is RemovalScope.CLIENT:
            cached = await self._policies.mark_removed(realm, client_id, await self._now_s() + 1)
        else:
            cached = await self._policies.get(realm)
        semaphores = {name: asyncio.Semaphore(PARTITIONS_IN_FLIGHT) for name in self._router.shards}

        async def one(partition: int) -> int:
            async with semaphores[self._router.shard_for(partition).name]:
                return await self._partition(
                    partition,
                    realm=realm,
                    scope=scope,
                    client_id=client_id,
                    cached=cached,
                    batch_size=batch_size,
                )

        removed = 0
        for start in range(0, PARTITION_COUNT, PROGRESS_EVERY):
            counts = await asyncio.gather(*(one(p) for p in range(start, start + PROGRESS_EVERY)))
            removed += sum(counts)
            yield RemovalProgress(removed, start + PROGRESS_EVERY, PARTITION_COUNT)

    async def _partition(
        self,
        partition: int,
        *,
        realm: str,
        scope: RemovalScope,
        client_id: str,
        cached: CachedPolicy,
        batch_size: int,
    ) -> int:
        header = [self._clock.script_now(), *cached.args]
        removed = 0
        for offline in (False, True):
            flag = "1" if offline else "0"
            if scope is RemovalScope.CLIENT:
                cidx = keys.client_index(partition, realm, offline=offline)
                prefix = f"{client_id} "
                members = await self._router.read(partition, "ZRANGE", cidx, 0, -1)
                ids = [m[len(prefix) :] for m in members if m.startswith(prefix)]
                for chunk in _chunks(ids, batch_size):
                    removed += int(
                        await self._router.call(
                            partition,
                            "remove_client_sessions_batch",
                            [
                                cidx,
                                *keys.event_keys(partition),
                                *(keys.session(partition, i, offline=offline) for i in chunk),
                            ],
                            [*header, realm, flag, client_id, *chunk],
                        )
                    )
                continue
            ridx = keys.realm_index(partition, realm, offline=offline)
            ids = await self._router.read(partition, "ZRANGE", ridx, 0, -1)
            for chunk in _chunks(ids, batch_size):
                removed += int(
                    await self._router.call(
                        partition,
                        "remove_sessions_batch",
                        [
                            ridx,
                            keys.client_index(partition, realm, offline=offline),
                            *keys.event_keys(partition),
                            *(keys.session(partition, i, offline=offline) for i in chunk),
                        ],
                        [*header, realm, flag, scope.value, *chunk],
                    )
                )
        return removed
