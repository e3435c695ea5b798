"""Routing: which shard serves a partition, from the newest stored partition map, with retries when
a partition has moved or is frozen by a move.

A node starts from the map its configured shards hold (the highest epoch among them); when none
holds one, it computes the map of the configured shards (`place_partitions`, epoch 1) and seeds it on
every shard. It then follows changes: every `refresh_seconds` it reads each shard's epoch, and a
script that answers SS_MOVED makes it read the newer map at once. A stale map is harmless: the
ownership guard of every script refuses partitions the shard does not own, and `call` retries on
the new owner (docs/architecture.md, "Resharding").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from session_store.errors import (
    PartitionFrozenError,
    PartitionMovedError,
    PreconditionFailedError,
    SessionStoreError,
    ShardUnavailableError,
)
from session_store.model.ids import PARTITION_COUNT
from session_store.model.placement import PartitionMap, place_partitions
from session_store.storage import keys
from session_store.storage._errors import NoMapError
from session_store.storage.shard import KeyOrArg, Shard
from session_store.storage.topology import Topology, read_epoch, read_topology, seed_topology

log = structlog.get_logger(__name__)

ShardFactory = Callable[[str, str], Shard]
"""Builds a shard the node was not configured with but the stored map names: (name, URL) -> Shard."""

TOPOLOGY_REFRESH_SECONDS = 1.0
"""How often a node reads every shard's map epoch: the bound on how long it runs on a stale map
when no call has told it (a call that meets a moved partition refreshes at once)."""
ROUTE_ATTEMPTS = 12
"""Tries of one script call across moved/frozen answers before the caller gets UNAVAILABLE."""
FROZEN_BACKOFF_SECONDS = 0.002
"""First wait after a frozen answer; doubles up to `MAX_BACKOFF_SECONDS` (a freeze lasts ms)."""
MAX_BACKOFF_SECONDS = 0.1

_OWN_BYTE = ("GETRANGE", keys.OWNERSHIP)
"""A partition's ownership byte is `GETRANGE ss:own p p`."""

RetryObserver = Callable[[str], None]
"""Told of every retried call with its reason: "moved" or "frozen" (metrics)."""


class Router:
    """The shards of this service node and the partition map that places partitions on them."""

    def __init__(
        self,
        shards: Mapping[str, Shard],
        weights: Mapping[str, int] | None = None,
        *,
        factory: ShardFactory | None = None,
        refresh_seconds: float = TOPOLOGY_REFRESH_SECONDS,
        on_retry: RetryObserver | None = None,
    ) -> None:
        """Start from the map of `shards` in order (weights default to 1 each) until `connect` reads
        the stored one.

        Args:
            factory: builds shards the stored map names but the configuration does not.
            refresh_seconds: how often to look for a newer map (0: only when a call meets one).
            on_retry: told of every moved/frozen retry.

        Raises:
            ValueError: no shards, or weights for unknown shards.
        """
        if not shards:
            raise ValueError("at least one shard is needed")
        weights = dict(weights or {})
        unknown = set(weights) - set(shards)
        if unknown:
            raise ValueError(f"weights given for unknown shards: {sorted(unknown)}")
        self.shards = dict(shards)
        self._factory = factory
        self._refresh_seconds = refresh_seconds
        self.on_retry = on_retry
        self._refresh_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.shard_listeners: list[Callable[[Shard], Awaitable[None]]] = []
        """Told of every shard connected while serving (the event hub follows its stream)."""
        # Epoch 0: only a candidate. Any stored map wins over it (`connect`); on a first start the
        # first configured shard decides which candidate becomes epoch 1.
        self._fixed = _fixed_placement(self.shards)
        candidate = self._fixed or place_partitions({n: weights.get(n, 1) for n in shards})
        self._use(dataclasses.replace(candidate, epoch=0))

    def _use(self, partition_map: PartitionMap) -> None:
        self.partition_map = partition_map
        self._by_partition = [self.shards[owner] for owner in partition_map.owners]
        self._partitions_by_shard = {name: partition_map.partitions_of(name) for name in self.shards}

    @property
    def fixed(self) -> bool:
        """Whether the shards own their partitions by construction (the groups of a Redis Cluster,
        storage/cluster.py): placement and moves are then the cluster's, never ours."""
        return self._fixed is not None

    @property
    def epoch(self) -> int:
        """The epoch of the map in use."""
        return self.partition_map.epoch

    def topology(self) -> Topology:
        """The map in use with the URL of each shard."""
        return Topology(self.partition_map, {name: shard.url for name, shard in self.shards.items()})

    def shard_for(self, partition: int) -> Shard:
        """The shard that owns a partition."""
        return self._by_partition[partition]

    def partitions_by_shard(self) -> dict[str, list[int]]:
        """Shard name -> the partitions it owns (every known shard, possibly none)."""
        return self._partitions_by_shard

    async def call(self, partition: int, script: str, keys_: Sequence[str], args: Sequence[KeyOrArg]) -> Any:
        """Run a script on the owner of `partition`, following moves and waiting out freezes.

        A moved or frozen answer proves the script did nothing, so retrying is always safe.

        Raises:
            PartitionMovedError, PartitionFrozenError: still so after `ROUTE_ATTEMPTS` tries.
            SessionStoreError: anything else the shard answered (see `Shard.call`).
        """
        delay = FROZEN_BACKOFF_SECONDS
        last: SessionStoreError | None = None
        for _attempt in range(ROUTE_ATTEMPTS):
            shard = self._by_partition[partition]
            try:
                return await shard.call(script, keys_, args)
            except PartitionMovedError as exc:
                last = exc
                self._retried("moved")
                await self.refresh(exc.epoch)
                if self._by_partition[partition] is not shard:
                    continue
            except PartitionFrozenError as exc:
                last = exc
                self._retried("frozen")
            except NoMapError:
                last = ShardUnavailableError(f"shard {shard.name} holds no partition map yet")
                await self.seed(shard)
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        assert last is not None  # noqa: S101 - the loop ran at least once and only failures continue
        raise last

    async def read(self, partition: int, *command: KeyOrArg) -> Any:
        """One plain read command on a partition's keys, fenced like a script: the shard's ownership
        byte is read right after it in the same pipeline, and a shard that no longer serves the
        partition (or is freezing it) is not believed; the read goes to the owner after the map is
        re-read. (A byte still '1' or '3' after the read proves it was so during it: a partition
        only leaves a shard through '2' and '0'.)

        Raises:
            PartitionMovedError: the partition did not settle on a shard within `ROUTE_ATTEMPTS` tries.
            SessionStoreError: the shard failed.
        """
        replies = await self._read_fenced({partition: command})
        return replies[partition]

    async def read_all(self, command: Callable[[int], Sequence[KeyOrArg]]) -> list[Any]:
        """`command(p)` for every partition, one pipeline per shard, fenced as `read`: a partition
        whose shard no longer served it is read again from its owner on the newer map.

        Returns:
            The replies in partition order.

        Raises:
            PartitionMovedError: some partition did not settle within `ROUTE_ATTEMPTS` tries.
            SessionStoreError: a shard failed (a partial answer would be wrong).
        """
        replies = await self._read_fenced({p: command(p) for p in range(len(self._by_partition))})
        return [replies[p] for p in sorted(replies)]

    async def _read_fenced(self, commands: Mapping[int, Sequence[KeyOrArg]]) -> dict[int, Any]:
        done: dict[int, Any] = {}
        pending = sorted(commands)
        delay = FROZEN_BACKOFF_SECONDS

        async def one(shard: Shard, partitions: list[int]) -> list[int]:
            if len(partitions) == 1:
                own_read: tuple[KeyOrArg, ...] = (*_OWN_BYTE, partitions[0], partitions[0])
            else:
                own_read = (*_OWN_BYTE, 0, -1)
            replies = await shard.pipeline([*(commands[p] for p in partitions), own_read])
            own = str(replies[-1] or "")
            if not own:  # a wiped shard: give it its ownership string, then read again
                await self.seed(shard)
                return partitions
            unsettled = []
            for p, reply in zip(partitions, replies[:-1], strict=True):
                state = own if len(partitions) == 1 else own[p : p + 1]
                if state in ("1", "3"):
                    done[p] = reply
                else:
                    unsettled.append(p)
            return unsettled

        for _attempt in range(ROUTE_ATTEMPTS):
            groups: dict[str, list[int]] = {}
            for p in pending:
                groups.setdefault(self._by_partition[p].name, []).append(p)
            left = await asyncio.gather(*(one(self.shards[n], ps) for n, ps in groups.items()))
            pending = [p for ps in left for p in ps]
            if not pending:
                return done
            self._retried("moved")
            await self.refresh()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        raise PartitionMovedError(f"{len(pending)} partitions did not settle on a shard; retry")

    def _retried(self, reason: str) -> None:
        if self.on_retry is not None:
            self.on_retry(reason)

    async def seed(self, shard: Shard) -> None:
        """Give a shard without an ownership string the one of the newest map (it was wiped or is new).

        Raises:
            SessionStoreError: the shard failed.
        """
        await self.refresh()
        if await seed_topology(shard, self.topology(), ownership=True):
            log.warning("shard_seeded", shard=shard.name, epoch=self.epoch)

    async def refresh(self, at_least: int = 0) -> None:
        """Adopt the newest map any shard holds (one concurrent refresh at a time).

        Args:
            at_least: skip the reads when the map in use is already this new (0: always read).
        """
        async with self._refresh_lock:
            if at_least and self.epoch >= at_least:
                return
            names = list(self.shards)
            epochs = await asyncio.gather(
                *(read_epoch(self.shards[n]) for n in names), return_exceptions=True
            )
            newest, holder = self.epoch, ""
            for name, epoch in zip(names, epochs, strict=True):
                if isinstance(epoch, int) and epoch > newest:
                    newest, holder = epoch, name
            if holder:
                stored = await read_topology(self.shards[holder])
                if stored is not None and stored.epoch > self.epoch:
                    await self._adopt(stored)

    async def _adopt(self, topology: Topology) -> None:
        """Use a stored map, connecting first to any shard it names that this node does not know."""
        for name in topology.map.shards:
            if name in self.shards:
                continue
            if self._factory is None:
                raise ShardUnavailableError(
                    f"the partition map names shard {name} and this node cannot reach it"
                )
            await self.add_shard(name, self._factory(name, topology.urls[name]))
            log.info("shard_added_from_map", shard=name, epoch=topology.epoch)
        before = self.epoch
        self._use(topology.map)
        log.debug("partition_map_adopted", epoch=topology.epoch, previous=before)

    async def use(self, topology: Topology) -> None:
        """Use a map this node made (the mover's flips) when it is newer than the one in use."""
        async with self._refresh_lock:
            if topology.epoch > self.epoch:
                await self._adopt(topology)

    async def connect_shard(self, name: str, url: str) -> Shard:
        """Connect a shard the configuration does not name (a move's target) and route through it.

        Raises:
            ShardUnavailableError: no shard factory, or the shard did not answer.
        """
        if name in self.shards:
            return self.shards[name]
        if self._factory is None:
            raise ShardUnavailableError(f"this node cannot build a connection to shard {name}")
        await self.add_shard(name, self._factory(name, url))
        return self.shards[name]

    async def add_shard(self, name: str, shard: Shard) -> None:
        """Connect a new shard and give it an ownership string that owns nothing (it does not
        appear in the map until a move flips a partition to it).

        Raises:
            ShardUnavailableError: the shard did not answer.
        """
        if name in self.shards:
            return
        await shard.connect(attempts=3, delay=0.2)
        await seed_topology(shard, self.topology(), ownership=True)
        self.shards[name] = shard
        self._partitions_by_shard[name] = []
        for listener in self.shard_listeners:
            try:
                await listener(shard)
            except SessionStoreError as exc:
                log.warning("shard_listener_failed", shard=name, error=exc.message)

    async def connect(self, *, attempts: int = 10, delay: float = 0.5) -> None:
        """Connect every shard (bounded retries each), then load or seed the stored map and start
        following it.

        Raises:
            ShardUnavailableError: a shard did not answer.
        """
        await asyncio.gather(*(s.connect(attempts=attempts, delay=delay) for s in self.shards.values()))
        await self.refresh()
        configured = list(self.shards.values())
        if self.epoch == 0:
            # No shard holds a map: the first start. The first configured shard keeps whichever
            # candidate reaches it first (nodes starting together with different lists agree on it),
            # and every node adopts that one before giving any shard its ownership string.
            first = configured[0]
            candidate = self.topology()
            first_map = dataclasses.replace(candidate.map, epoch=1)
            await seed_topology(first, dataclasses.replace(candidate, map=first_map), ownership=True)
            stored = await read_topology(first)
            if stored is None:
                raise ShardUnavailableError(f"shard {first.name} did not keep the partition map")
            async with self._refresh_lock:
                await self._adopt(stored)
        if self._fixed is not None and self.partition_map.owners != self._fixed.owners:
            # Keys are laid out by group: data written with another group count is in other slots.
            raise PreconditionFailedError(
                "the Redis Cluster holds a partition map of other groups "
                f"({len(self.partition_map.shards)}) than configured ({len(self._fixed.shards)}): "
                "keep the URL's groups= as it was when the store was first used"
            )
        # Seeding is idempotent: it writes the map only where it is newer and an ownership string only
        # where there is none (a new shard, or the first start), always from the stored map.
        await asyncio.gather(*(seed_topology(s, self.topology(), ownership=True) for s in configured))
        unplaced = [n for n in self.shards if n not in self.partition_map.shards]
        if unplaced:
            log.warning(
                "shards_not_in_partition_map",
                shards=unplaced,
                epoch=self.epoch,
                hint="add them with `session-store cluster add-shard`",
            )
        if self._refresh_seconds > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self.refresh()
            except SessionStoreError as exc:
                log.warning("partition_map_refresh_failed", error=exc.message)

    async def close(self) -> None:
        """Stop following the map and close every shard's pool."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.gather(*(s.close() for s in self.shards.values()))


def _fixed_placement(shards: Mapping[str, Shard]) -> PartitionMap | None:
    """The map of shards that own their partitions by construction (a Redis Cluster's groups), or
    None for shards placed by `place_partitions`.

    Raises:
        ValueError: such shards mixed with others, or not covering every partition exactly once.
    """
    fixed = {name: s.fixed_partitions for name, s in shards.items()}
    if all(p is None for p in fixed.values()):
        return None
    owners: list[str | None] = [None] * PARTITION_COUNT
    for name, partitions in fixed.items():
        if partitions is None:
            raise ValueError("a Redis Cluster's groups cannot be mixed with standalone shards")
        for p in partitions:
            if owners[p] is not None:
                raise ValueError(f"partition {p} is owned by both {owners[p]} and {name}")
            owners[p] = name
    placed = [o for o in owners if o is not None]
    if len(placed) != PARTITION_COUNT:
        raise ValueError("the groups do not cover every partition")
    return PartitionMap(tuple(placed), tuple(shards), tuple(1 for _ in shards), 0)
