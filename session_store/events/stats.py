"""The event pipeline's numbers, gathered once for both the Stats RPC and the metrics endpoint.

Cluster-wide numbers come from the shards' counters (kept by the scripts, exact, no scan): sessions
not yet ended per realm, events appended per type, stream lengths, the sweeper's lag. Watcher numbers
are this node's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from session_store.errors import SessionStoreError
from session_store.model.clock import Clock
from session_store.storage.expiry import ExpiryRepository, ShardEventStats
from session_store.storage.router import Router


@dataclass(frozen=True)
class PipelineStats:
    """One snapshot of the event pipeline.

    Attributes:
        shards: each answering shard's numbers, by shard name.
        unavailable: shards that did not answer (their numbers are missing from the totals).
        watchers: watch streams open on this node.
        watcher_lags_ms: each of them, how far (ms) behind the newest event this node has seen.
        sweeper_expired: sessions this node's sweeper and listener ended.
        notifications: expired-key notifications this node received.
        listening: per shard, whether this node's notification listener is subscribed.
    """

    shards: dict[str, ShardEventStats]
    unavailable: tuple[str, ...] = ()
    watchers: int = 0
    watcher_lags_ms: tuple[int, ...] = ()
    sweeper_expired: int = 0
    notifications: int = 0
    listening: dict[str, bool] = field(default_factory=dict)

    @property
    def sessions(self) -> dict[tuple[str, bool], int]:
        """Sessions not yet ended, by (realm, offline), over every answering shard."""
        total: dict[tuple[str, bool], int] = {}
        for stats in self.shards.values():
            for key, count in stats.sessions.items():
                total[key] = total.get(key, 0) + count
        return total

    @property
    def events(self) -> dict[str, int]:
        """Events appended, by type, over every answering shard (monotonic per shard)."""
        total: dict[str, int] = {}
        for stats in self.shards.values():
            for kind, count in stats.events.items():
                total[kind] = total.get(kind, 0) + count
        return total

    @property
    def sweeper_lag_ms(self) -> int:
        """The longest any passed deadline has waited for its event, over every answering shard."""
        return max((s.overdue_ms for s in self.shards.values()), default=0)


WatcherSource = Callable[[], tuple[int, list[int]]]
"""Returns this node's (watcher count, each watcher's lag in ms)."""


async def gather_pipeline_stats(
    router: Router,
    clock: Clock,
    *,
    watchers: WatcherSource | None = None,
    sweeper_expired: int = 0,
    notifications: int = 0,
    listening: dict[str, bool] | None = None,
) -> PipelineStats:
    """Read every shard's pipeline numbers concurrently; a shard that fails is listed, not fatal."""
    expiry = ExpiryRepository(clock)
    names = list(router.shards)
    results = await asyncio.gather(
        *(expiry.shard_stats(router.shards[name]) for name in names), return_exceptions=True
    )
    shards: dict[str, ShardEventStats] = {}
    unavailable: list[str] = []
    for name, result in zip(names, results, strict=True):
        if isinstance(result, ShardEventStats):
            shards[name] = result
        elif isinstance(result, SessionStoreError):
            unavailable.append(name)
        else:
            raise result
    count, lags = watchers() if watchers is not None else (0, [])
    return PipelineStats(
        shards=shards,
        unavailable=tuple(unavailable),
        watchers=count,
        watcher_lags_ms=tuple(lags),
        sweeper_expired=sweeper_expired,
        notifications=notifications,
        listening=dict(listening or {}),
    )
