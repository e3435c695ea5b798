"""The SessionEvents gRPC servicer: validate the watch, stream what the node's StreamHub delivers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable

import structlog

from session_store.api import convert_events
from session_store.api.servicer import Context, rpc, stream_rpc
from session_store.events.stats import PipelineStats
from session_store.events.watch import StreamHub
from session_store.v1 import events_pb2 as pb
from session_store.v1 import events_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)

StatsSource = Callable[[], Awaitable[PipelineStats]]
"""Gathers the event pipeline's numbers (see events.stats)."""


class SessionEventsServicer(pb_grpc.SessionEventsServicer):
    """The Watch RPC, over this node's StreamHub, and the pipeline's numbers."""

    def __init__(self, hub: StreamHub, stats: StatsSource) -> None:
        """Serve the watches from this hub and the stats from `stats`."""
        self._hub = hub
        self._stats = stats

    @rpc
    async def GetEventStats(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.GetEventStatsRequest, context: Context
    ) -> pb.EventStats:
        """See the proto."""
        return stats_to_proto(await self._stats())

    @stream_rpc
    async def Watch(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.WatchRequest, context: Context
    ) -> AsyncGenerator[pb.Event, None]:
        """See the proto."""
        event_filter = convert_events.watch_filter(request)
        after_cursor, from_oldest = convert_events.watch_start(request)
        items = self._hub.watch(event_filter, after_cursor=after_cursor, from_oldest=from_oldest)
        async with contextlib.aclosing(items):
            async for item in items:
                yield convert_events.event_to_proto(item.event, item.cursor)


def stats_to_proto(stats: PipelineStats) -> pb.EventStats:
    """The EventStats message of a snapshot."""
    return pb.EventStats(
        sessions=[
            pb.RealmSessionCount(realm=realm, offline=offline, count=count)
            for (realm, offline), count in sorted(stats.sessions.items())
        ],
        events_by_type=stats.events,
        shards=[
            pb.ShardEventStats(
                shard=name,
                stream_length=shard.stream_length,
                sweeper_lag_ms=shard.overdue_ms,
                listening=stats.listening.get(name, False),
            )
            for name, shard in sorted(stats.shards.items())
        ],
        unavailable_shards=list(stats.unavailable),
        sweeper_lag_ms=stats.sweeper_lag_ms,
        watchers=stats.watchers,
        watcher_lags_ms=list(stats.watcher_lags_ms),
        node_expired=stats.sweeper_expired,
        node_notifications=stats.notifications,
    )
