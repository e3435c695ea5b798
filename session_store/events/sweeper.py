"""The expiry sweeper and the keyspace-notification listener: two of the three paths by which a
session that reached its deadline gets its one `expired` event (the third is any script that finds
it dead). Whichever path removes the session from its partition's expiry index first appends the
event; the others find nothing to do (storage/scripts/expire_sessions.lua).

The sweeper claims due partitions on each shard (claim_due_partitions.lua: a lease in the shard's
`ss:due` index), so several service nodes share the sweeping without doing it twice, and a node that
dies leaves its claims to lapse. The listener turns each `expired` notification of a session hash
into an immediate sweep of that session's partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import structlog
from redis import exceptions as redis_errors

from session_store.config import EventSettings
from session_store.errors import PartitionFrozenError, PartitionMovedError, SessionStoreError
from session_store.model.clock import Clock
from session_store.storage import keys
from session_store.storage._errors import NoMapError
from session_store.storage.expiry import ExpiryRepository
from session_store.storage.router import Router
from session_store.storage.shard import Shard

log = structlog.get_logger(__name__)

CLAIM_LEASE_MS = 2_000
"""How long a claimed partition is left to its sweeper before another node may take it: bounds the
extra delay of a dead node's claims (an expire_sessions call takes 3-50 ms; a lapsed claim only risks
a repeated call, never a second event)."""
CLAIM_BATCH = 32
"""Partitions claimed per call; they are swept concurrently."""
MAX_CALLS_PER_PARTITION = 64
"""expire_sessions calls per claimed partition before it is released (a bound, not a target)."""
TRIM_INTERVAL_SECONDS = 5.0
"""How often a sweeper caps its shard's stream."""
ERROR_BACKOFF_SECONDS = 1.0
"""Pause after a failed sweep of a shard (down, or failing over) before trying again."""
LISTENER_RETRY_SECONDS = 1.0
"""Pause before the listener reconnects to a shard."""
STOP_TIMEOUT_SECONDS = 2.0
"""How long `stop` waits for the background tasks."""
STOP_ROUNDS = 8
"""Cancellations `stop` sends to a task that keeps running (each waits its share of the timeout)."""
PENDING_LIMIT = 4096
"""Partitions a listener remembers to sweep; more are left to the sweeper."""


@dataclass
class SweeperStats:
    """What this node's sweeper and listener did (for the Stats RPC and metrics)."""

    sweeps: int = 0
    expired: int = 0
    notifications: int = 0
    errors: int = 0
    listening: dict[str, bool] = field(default_factory=dict)


class Sweeper:
    """Ends sessions whose deadline passed, on every shard, shared with the other nodes' sweepers."""

    def __init__(self, router: Router, clock: Clock, settings: EventSettings) -> None:
        """Sweep the shards of `router` with `clock`'s now, as `settings` say (interval, stream caps)."""
        self._router = router
        self._expiry = ExpiryRepository(clock)
        self._settings = settings
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.stats = SweeperStats()

    def start(self) -> None:
        """Start the background tasks (a sweeper per shard; a listener per shard when enabled).

        A Redis Cluster store gets no listener: notifications are per node while a group's slot moves
        between nodes (settings refuse the combination; here it is only logged), so its sweeper alone
        ends sessions.
        """
        if self._settings.notifications and self._router.fixed:
            log.warning("keyspace_notifications_not_with_cluster", hint="the sweeper alone ends sessions")
        for shard in self._router.shards.values():
            if self._settings.sweeper:
                self._tasks.append(
                    asyncio.create_task(self._sweep_forever(shard), name=f"sweep-{shard.name}")
                )
            if self._settings.notifications and not self._router.fixed:
                self._tasks.append(
                    asyncio.create_task(self._listen_forever(shard), name=f"listen-{shard.name}")
                )

    async def stop(self) -> None:
        """Cancel the background tasks and wait (bounded) for them to end."""
        self._stopping = True
        # Cancel again while any task is still running: on Python 3.11 a cancellation that races
        # with an inner future completing (asyncio.wait_for) can be lost.
        pending = [t for t in self._tasks if not t.done()]
        for _ in range(STOP_ROUNDS):
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, still = await asyncio.wait(pending, timeout=STOP_TIMEOUT_SECONDS / STOP_ROUNDS)
            pending = list(still)
        for task in pending:
            log.warning("event_task_did_not_stop", task=task.get_name())
        self._tasks.clear()

    async def sweep_partition(self, shard: Shard, partition: int) -> int:
        """End every due session of one partition; returns how many this call ended.

        Raises:
            SessionStoreError: the shard failed.
        """
        ended = 0
        for _ in range(MAX_CALLS_PER_PARTITION):
            try:
                result = await self._expiry.expire_sessions(shard, partition)
            except (PartitionMovedError, PartitionFrozenError):
                # Moved away: its new owner sweeps it. Frozen: the claim lapses and it is swept later.
                break
            except NoMapError:
                await self._router.seed(shard)  # a wiped shard: its partitions are swept next round
                break
            ended += result.ended
            if not result.more:
                break
        self.stats.expired += ended
        return ended

    async def sweep_shard(self, shard: Shard) -> int:
        """Claim and sweep due partitions of `shard` until none is due; returns sessions ended.

        Raises:
            SessionStoreError: the shard failed.
        """
        ended = 0
        while True:
            parts = await self._expiry.claim_due_partitions(shard, lease_ms=CLAIM_LEASE_MS, limit=CLAIM_BATCH)
            if not parts:
                return ended
            self.stats.sweeps += 1
            counts = await asyncio.gather(*(self.sweep_partition(shard, p) for p in parts))
            ended += sum(counts)

    async def sweep_all(self) -> int:
        """One full sweep of every shard (tests and tools); returns sessions ended.

        Raises:
            SessionStoreError: a shard failed.
        """
        counts = await asyncio.gather(*(self.sweep_shard(s) for s in self._router.shards.values()))
        return sum(counts)

    async def _sweep_forever(self, shard: Shard) -> None:
        next_trim = 0.0
        while not self._stopping:
            try:
                await self.sweep_shard(shard)
                if time.monotonic() >= next_trim:
                    await self._expiry.trim_events(
                        shard,
                        max_length=self._settings.max_length,
                        max_age_seconds=self._settings.max_age_seconds,
                    )
                    next_trim = time.monotonic() + TRIM_INTERVAL_SECONDS
            except SessionStoreError as exc:
                self.stats.errors += 1
                log.warning("sweep_failed", shard=shard.name, error=str(exc))
                await asyncio.sleep(ERROR_BACKOFF_SECONDS)
                continue
            await asyncio.sleep(self._settings.sweep_interval_seconds)

    async def _listen_forever(self, shard: Shard) -> None:
        pending: asyncio.Queue[int] = asyncio.Queue(PENDING_LIMIT)
        queued: set[int] = set()
        worker = asyncio.create_task(self._sweep_pending(shard, pending, queued))
        try:
            while not self._stopping:
                try:
                    await self._listen(shard, pending, queued)
                except (redis_errors.RedisError, OSError, SessionStoreError) as exc:
                    self.stats.listening[shard.name] = False
                    log.warning("keyspace_listener_disconnected", shard=shard.name, error=str(exc))
                await asyncio.sleep(LISTENER_RETRY_SECONDS)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _listen(self, shard: Shard, pending: asyncio.Queue[int], queued: set[int]) -> None:
        await _enable_notifications(shard)
        self.stats.listening[shard.name] = True
        log.info("keyspace_listener_started", shard=shard.name)
        async for key in shard.client.subscribe(f"__keyevent@{shard.client.db}__:expired"):
            partition = _session_partition(key)
            if partition is None or partition in queued:
                continue
            self.stats.notifications += 1
            with contextlib.suppress(asyncio.QueueFull):  # the sweeper will get to it
                pending.put_nowait(partition)
                queued.add(partition)

    async def _sweep_pending(self, shard: Shard, pending: asyncio.Queue[int], queued: set[int]) -> None:
        while True:
            partition = await pending.get()
            queued.discard(partition)
            try:
                await self.sweep_partition(shard, partition)
            except SessionStoreError as exc:
                self.stats.errors += 1
                log.warning("notified_sweep_failed", shard=shard.name, error=str(exc))


def _session_partition(key: object) -> int | None:
    """The partition of an expired session hash's key; None for any other key."""
    if not isinstance(key, str) or (":s:" not in key and ":o:" not in key):
        return None
    try:
        partition = keys.partition_of(key)
    except ValueError:
        return None
    if not key.startswith((keys.tag(partition) + "s:", keys.tag(partition) + "o:")):
        return None
    return partition


async def _enable_notifications(shard: Shard) -> None:
    """Make the shard publish `expired` key events (flags E and x), keeping the flags it has.

    Managed Redis often refuses CONFIG: that is logged and the listener still subscribes (the
    operator may have set the flags); the sweeper delivers every expiry either way.

    Raises:
        SessionStoreError: the shard is unavailable.
    """
    try:
        reply = await shard.client.execute("CONFIG", "GET", "notify-keyspace-events")
        current = str(reply[1]) if len(reply) == 2 else ""
        wanted = current
        if "E" not in wanted:
            wanted += "E"
        if "x" not in wanted and "A" not in wanted:
            wanted += "x"
        if wanted != current:
            await shard.client.execute("CONFIG", "SET", "notify-keyspace-events", wanted)
            log.info("keyspace_notifications_enabled", shard=shard.name, flags=wanted)
    except redis_errors.ResponseError as exc:
        log.warning("keyspace_notifications_not_configurable", shard=shard.name, error=str(exc))
