"""The watch stream: where it starts, resuming, filters, trimming, fan-out, shutdown and client resume.

The scripts that append events are another change; these tests write the entries themselves with
XADD on the real shards, in the format storage/keys.py documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from session_store import (
    EventsTrimmedError,
    EventType,
    InvalidArgumentError,
    SessionEvent,
    SessionStoreClient,
)
from session_store.client import AsyncSessionStoreClient
from session_store.config import RedisSettings, Settings, ShardSettings
from session_store.events.stream import EventFilter, Position, StreamId, decode_cursor, encode_cursor
from session_store.events.watch import StreamHub
from session_store.model.clock import TestClock
from session_store.server import EVENTS_SERVICE_NAME, SessionStoreServer
from session_store.storage import keys
from session_store.storage.access import build_shards
from session_store.storage.shard import Shard
from session_store.v1 import events_pb2 as pb
from session_store.v1 import events_pb2_grpc as pb_grpc
from tests.backends import BOTH_BACKENDS

pytestmark = [pytest.mark.timeout(60), BOTH_BACKENDS]

REALM = "watch"
WAIT_SECONDS = 10.0
T = TypeVar("T")


class Streams:
    """Direct connections to each shard (each group of a cluster), to append and trim event entries as
    the scripts would."""

    def __init__(self, shards: dict[str, Shard]) -> None:
        """Use connected shards (built as the service builds them)."""
        self._shards = shards
        self.names = list(shards)

    @classmethod
    async def connect(cls, shards: tuple[ShardSettings, ...]) -> Streams:
        """Connect to the shards of the test's backend."""
        built = build_shards(RedisSettings(), shards, guard=False)
        for shard in built.values():
            await shard.connect(attempts=3, delay=0.2)
        return cls(built)

    async def append(
        self,
        shard: str,
        session_id: str,
        *,
        etype: str = "created",
        realm: str = REALM,
        user_id: str = "u1",
        entry_id: str = "*",
        **extra: str,
    ) -> str:
        """XADD one event entry; returns its stream id."""
        fields = {"t": etype, "r": realm, "u": user_id, "s": session_id, "at": "1700000000000", **extra}
        flat = [part for item in fields.items() for part in item]
        return str(await self._shards[shard].command("XADD", keys.EVENTS, entry_id, *flat))

    async def trim(self, shard: str, max_length: int) -> None:
        """Trim a shard's stream exactly (not approximately) to `max_length` entries."""
        await self._shards[shard].command("XTRIM", keys.EVENTS, "MAXLEN", max_length)

    async def close(self) -> None:
        """Close every connection."""
        for shard in self._shards.values():
            await shard.close()


@pytest.fixture
async def streams(flushed_shards: tuple[ShardSettings, ...]) -> AsyncIterator[Streams]:
    """Connections to the emptied shards."""
    appender = await Streams.connect(flushed_shards)
    try:
        yield appender
    finally:
        await appender.close()


@contextlib.asynccontextmanager
async def fresh_service(
    shards: tuple[ShardSettings, ...], clock: TestClock, settings: Settings
) -> AsyncIterator[tuple[SessionStoreServer, AsyncSessionStoreClient]]:
    """Another service node started now: its hub buffers only what comes next, so older positions are
    read from the shards themselves."""
    srv = SessionStoreServer(settings, shards, clock=clock)
    await srv.start()
    try:
        async with AsyncSessionStoreClient(f"127.0.0.1:{srv.port}", max_attempts=1) as store:
            yield srv, store
    finally:
        await srv.stop(grace=0)


async def take(events: AsyncIterator[T], count: int, seconds: float = WAIT_SECONDS) -> list[T]:
    """The next `count` items, failing the test when they do not come in time."""
    async with asyncio.timeout(seconds):
        return [await anext(events) for _ in range(count)]


async def wait_until(condition: Callable[[], bool], seconds: float = WAIT_SECONDS) -> None:
    """Poll a condition of the hub (its readers run in the background) until it holds."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - the hub's readers run on their own; nothing signals a test
            await asyncio.sleep(0.01)


def session_ids(events: list[SessionEvent]) -> list[str]:
    """The session ids of events, in order."""
    return [e.session_id for e in events]


def ids_by_shard(events: list[SessionEvent]) -> dict[str, list[StreamId]]:
    """Each shard identity's stream ids, in the order delivered."""
    result: dict[str, list[StreamId]] = {}
    for event in events:
        identity, _, entry_id = event.id.partition("/")
        result.setdefault(identity, []).append(StreamId.parse(entry_id))
    return result


def error_reason(err: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]  # AioRpcError is a Call at run time
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return str(info.reason)


async def watch_error(server: SessionStoreServer, request: pb.WatchRequest) -> grpc.aio.AioRpcError:
    """The error that ends a raw Watch call before or after its first message."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = pb_grpc.SessionEventsStub(channel).Watch(request)

        async def drain() -> None:
            async with asyncio.timeout(WAIT_SECONDS):
                async for _ in call:
                    pass

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await drain()
    return caught.value


class TestStart:
    """A watch starts from now (the default), from the oldest entry, or after a cursor."""

    @pytest.mark.parametrize("request_", [pb.WatchRequest(from_now=True), pb.WatchRequest()])
    async def test_from_now_delivers_only_later_events(
        self, server: SessionStoreServer, streams: Streams, request_: pb.WatchRequest
    ) -> None:
        """Entries appended before the first message (a checkpoint) are not delivered; later ones are."""
        for name in streams.names:
            await streams.append(name, f"before-{name}")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = pb_grpc.SessionEventsStub(channel).Watch(request_)
            async with asyncio.timeout(WAIT_SECONDS):
                first = await call.read()
                for name in streams.names:
                    await streams.append(name, f"after-{name}")
                later = [await call.read() for _ in streams.names]
            call.cancel()

        assert isinstance(first, pb.Event)
        assert (pb.EVENT_TYPE_UNSPECIFIED, "", True) == (first.type, first.id, bool(first.cursor))
        assert {f"after-{n}" for n in streams.names} == {
            m.session_id for m in later if isinstance(m, pb.Event)
        }

    async def test_from_oldest_delivers_every_retained_event(
        self, client: AsyncSessionStoreClient, streams: Streams
    ) -> None:
        """From the oldest, every entry of every shard arrives, each shard's in stream order."""
        expected = {}
        for i in range(3):
            for name in streams.names:
                expected[f"{name}-{i}"] = await streams.append(name, f"{name}-{i}")
        async with client.watch(from_oldest=True) as events:
            got = await take(events, len(expected))

        assert set(expected) == set(session_ids(got))
        assert all(ids == sorted(ids) for ids in ids_by_shard(got).values())

    async def test_events_of_all_shards_are_merged(
        self, client: AsyncSessionStoreClient, streams: Streams
    ) -> None:
        """One watch delivers the events of every shard, with unique ids naming one identity per shard."""
        for name in streams.names:
            await streams.append(name, f"s-{name}")
        async with client.watch(from_oldest=True) as events:
            got = await take(events, len(streams.names))

        assert len(streams.names) == len(ids_by_shard(got)) == len({e.id for e in got})

    async def test_event_fields_are_decoded(self, client: AsyncSessionStoreClient, streams: Streams) -> None:
        """Every field of an entry reaches the client's SessionEvent."""
        entry_id = await streams.append(
            streams.names[0],
            "sid-1",
            etype="expired",
            user_id="u7",
            o="1",
            c='["app","console"]',
            why="idle",
            dl="1699999999000",
        )
        async with client.watch(from_oldest=True) as events:
            (event,) = await take(events, 1)

        assert entry_id == event.id.partition("/")[2]
        expected = SessionEvent(
            id=event.id,
            type=EventType.EXPIRED,
            realm=REALM,
            user_id="u7",
            session_id="sid-1",
            offline=True,
            client_ids=("app", "console"),
            reason="idle",
            at_ms=1700000000000,
            deadline_ms=1699999999000,
            cursor=event.cursor,
        )
        assert expected == event


class TestResume:
    """A cursor resumes a watch exactly after the event it came with."""

    async def test_resume_misses_nothing_and_repeats_nothing(
        self, client: AsyncSessionStoreClient, streams: Streams
    ) -> None:
        """Read 4 of 6, stop, append 5 across shards, resume from the 4th cursor: exactly the other 7."""
        names = streams.names
        for i in range(6):
            await streams.append(names[i % 3], f"old-{i}")
        async with client.watch(from_oldest=True) as events:
            seen = await take(events, 4)
        for i in range(5):
            await streams.append(names[i % 3], f"new-{i}")
        async with client.watch(after_cursor=seen[-1].cursor) as events:
            rest = await take(events, 7)
            await streams.append(names[0], "sentinel")
            (after,) = await take(events, 1)

        every = {f"old-{i}" for i in range(6)} | {f"new-{i}" for i in range(5)}
        assert every == set(session_ids(seen + rest))
        assert 11 == len(session_ids(seen + rest))
        assert "sentinel" == after.session_id

    async def test_shard_missing_from_cursor_starts_from_its_oldest(
        self, client: AsyncSessionStoreClient, streams: Streams
    ) -> None:
        """A shard the cursor does not name (a new shard) is read from its oldest entry."""
        names = streams.names[:3]  # three shards (of a cluster's groups: three of them)
        for name in names:
            await streams.append(name, f"first-{name}")
        async with client.watch(from_oldest=True) as events:
            seen = await take(events, 3)
        new_shard = names[2]
        new_identity = next(e.id.partition("/")[0] for e in seen if e.session_id == f"first-{new_shard}")
        position = decode_cursor(seen[-1].cursor)
        del position[new_identity]
        for name in names:
            await streams.append(name, f"second-{name}")
        async with client.watch(after_cursor=encode_cursor(position)) as events:
            rest = await take(events, 4)
            await streams.append(new_shard, "sentinel")
            (after,) = await take(events, 1)

        expected = {f"second-{n}" for n in names} | {f"first-{new_shard}"}
        assert (expected, "sentinel") == (set(session_ids(rest)), after.session_id)

    async def test_cursor_keeps_shards_this_node_does_not_know(self, server: SessionStoreServer) -> None:
        """A removed shard's position survives in the cursors of a resumed watch."""
        hub = server.events
        foreign = {"0123456789abcdef": Position(StreamId(5, 1), 3)}
        items = hub.watch(EventFilter(), after_cursor=encode_cursor(foreign))
        try:
            first = await take(items, 1)
        finally:
            await items.aclose()

        assert foreign["0123456789abcdef"] == decode_cursor(first[0].cursor)["0123456789abcdef"]


class TestFilters:
    """Filters are applied by the server; skipped events still move the cursor."""

    @pytest.mark.parametrize(
        "case",
        [
            (["a"], [], "", ["s1", "s2", "s4"]),
            ([], [EventType.CREATED], "", ["s1", "s3"]),
            (["a"], [], "u1", ["s1", "s4"]),
            (["a", "b"], [EventType.CREATED, EventType.EXPIRED], "u1", ["s1", "s3", "s4"]),
        ],
    )
    async def test_filter(
        self,
        client: AsyncSessionStoreClient,
        streams: Streams,
        case: tuple[list[str], list[EventType], str, list[str]],
    ) -> None:
        """Only the events of the named realms, types and user arrive, in stream order."""
        realms, types, user_id, expected = case
        shard = streams.names[0]
        await streams.append(shard, "s1", realm="a", user_id="u1")
        await streams.append(shard, "s2", realm="a", user_id="u2", etype="logged_out")
        await streams.append(shard, "s3", realm="b", user_id="u1")
        await streams.append(shard, "s4", realm="a", user_id="u1", etype="expired", why="max", dl="1")
        await streams.append(shard, "end", realm="a", user_id="u1")
        async with client.watch(realms=realms, types=types, user_id=user_id, from_oldest=True) as events:
            got = await take(events, len(expected) + 1)

        assert [*expected, "end"] == session_ids(got)

    async def test_checkpoint_moves_the_cursor_past_skipped_events(
        self, server: SessionStoreServer, streams: Streams
    ) -> None:
        """Entries a filter skipped are covered by a checkpoint, so a resume does not read them again."""
        hub = StreamHub(server.router, checkpoint_seconds=0.05)
        await hub.start()
        wanted = EventFilter(realms=frozenset({"wanted"}))
        items = hub.watch(wanted)
        try:
            (start,) = await take(items, 1)
            skipped_id = await streams.append(streams.names[0], "skipped", realm="other")
            (checkpoint,) = await take(items, 1)
        finally:
            await items.aclose()
            await hub.stop()

        assert (None, None) == (start.event, checkpoint.event)
        moved = {
            i: p for i, p in decode_cursor(checkpoint.cursor).items() if p != decode_cursor(start.cursor)[i]
        }
        assert [Position(StreamId.parse(skipped_id), 1)] == list(moved.values())

    @pytest.mark.parametrize(
        "request_",
        [
            pb.WatchRequest(user_id="u1"),
            pb.WatchRequest(realms=["has space"]),
            pb.WatchRequest(types=[pb.EVENT_TYPE_UNSPECIFIED]),
            pb.WatchRequest(types=[pb.EventType.ValueType(99)]),
            pb.WatchRequest(from_oldest=False),
            pb.WatchRequest(from_now=False),
            pb.WatchRequest(after_cursor="not a cursor"),
            pb.WatchRequest(after_cursor=""),
        ],
    )
    async def test_bad_request_is_invalid_argument(
        self, server: SessionStoreServer, request_: pb.WatchRequest
    ) -> None:
        """A bad filter or start ends the call with INVALID_ARGUMENT and reason INVALID_ARGUMENT."""
        err = await watch_error(server, request_)

        assert (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT") == (err.code(), error_reason(err))

    async def test_malformed_cursor_raises_in_the_client(self, client: AsyncSessionStoreClient) -> None:
        """The client raises InvalidArgumentError for a malformed cursor, without resuming."""
        with pytest.raises(InvalidArgumentError, match="cursor"):
            async with client.watch(after_cursor="bm90IGEgY3Vyc29y") as events:
                await take(events, 1)


class TestTrimmed:
    """A position whose following events were trimmed ends the watch with OUT_OF_RANGE."""

    async def test_trimmed_cursor_is_out_of_range(
        self,
        client: AsyncSessionStoreClient,
        streams: Streams,
        flushed_shards: tuple[ShardSettings, ...],
        clock: TestClock,
        settings: Settings,
    ) -> None:
        """Resuming after events that were trimmed is OUT_OF_RANGE with reason EVENTS_TRIMMED."""
        shard = streams.names[0]
        for i in range(3):
            await streams.append(shard, f"e{i}")
        async with client.watch(from_oldest=True) as events:
            (first,) = await take(events, 1)
        await streams.trim(shard, 0)

        async with fresh_service(flushed_shards, clock, settings) as (srv, store):
            err = await watch_error(srv, pb.WatchRequest(after_cursor=first.cursor))
            assert (grpc.StatusCode.OUT_OF_RANGE, "EVENTS_TRIMMED") == (err.code(), error_reason(err))
            with pytest.raises(EventsTrimmedError, match="trimmed"):
                async with store.watch(after_cursor=first.cursor) as events:
                    await take(events, 1)

    async def test_trimming_only_what_was_passed_loses_nothing(
        self,
        client: AsyncSessionStoreClient,
        streams: Streams,
        flushed_shards: tuple[ShardSettings, ...],
        clock: TestClock,
        settings: Settings,
    ) -> None:
        """A cursor whose own event was trimmed, but nothing after it, resumes with the next event."""
        shard = streams.names[0]
        await streams.append(shard, "e0")
        async with client.watch(from_oldest=True) as events:
            (first,) = await take(events, 1)
        await streams.trim(shard, 0)
        await streams.append(shard, "e1")

        async with (
            fresh_service(flushed_shards, clock, settings) as (_, store),
            store.watch(after_cursor=first.cursor) as events,
        ):
            (after,) = await take(events, 1)
        assert "e1" == after.session_id

    async def test_trimmed_but_still_buffered_is_delivered(
        self, client: AsyncSessionStoreClient, streams: Streams
    ) -> None:
        """Entries the node still holds in memory are delivered even after Redis trimmed them."""
        shard = streams.names[0]
        for i in range(3):
            await streams.append(shard, f"e{i}")
        async with client.watch(from_oldest=True) as events:
            (first,) = await take(events, 1)
        await streams.trim(shard, 0)
        async with client.watch(after_cursor=first.cursor) as events:
            rest = await take(events, 2)

        assert ["e1", "e2"] == session_ids(rest)

    async def test_slow_watcher_falls_behind_and_fast_one_goes_on(
        self, server: SessionStoreServer, streams: Streams
    ) -> None:
        """A watcher that stops pulling does not hold the others back; once its position is trimmed
        away it is told so instead of skipping events."""
        hub = StreamHub(server.router, buffer_size=4, batch=2)
        await hub.start()
        shard = streams.names[0]
        slow, fast = hub.watch(EventFilter()), hub.watch(EventFilter())
        try:
            await take(slow, 1)
            await take(fast, 1)
            await streams.append(shard, "e0")
            (slow_first,) = await take(slow, 1)
            last = ""
            for i in range(1, 21):
                last = await streams.append(shard, f"e{i}")
            fast_items = await take(fast, 21)
            await wait_until(lambda: hub.newest_ids()[shard] == StreamId.parse(last))
            await streams.trim(shard, 5)
            with pytest.raises(EventsTrimmedError):
                await take(slow, 1)
        finally:
            await slow.aclose()
            await fast.aclose()
            await hub.stop()

        assert slow_first.event is not None
        assert "e0" == slow_first.event.session_id
        assert [f"e{i}" for i in range(21)] == [i.event.session_id for i in fast_items if i.event]


class TestHubStats:
    """The hub counts its watchers and measures how far behind each one is."""

    async def test_watcher_count_and_lag(self, server: SessionStoreServer, streams: Streams) -> None:
        """The lag is the time between the newest entry the hub read and the watcher's position."""
        hub = StreamHub(server.router)
        await hub.start()
        shard = streams.names[0]
        items = hub.watch(EventFilter())
        try:
            await take(items, 1)
            count_watching = hub.watcher_count
            first_id = StreamId.parse(await streams.append(shard, "a"))
            await take(items, 1)
            newer = await streams.append(shard, "b", entry_id=f"{first_id.ms + 1500}-0")
            await wait_until(lambda: hub.newest_ids()[shard] == StreamId.parse(newer))
            lags = hub.watcher_lags_ms()
        finally:
            await items.aclose()
            await hub.stop()

        assert (1, [1500], 0) == (count_watching, lags, hub.watcher_count)


class TestServerLifecycle:
    """The service serves SessionEvents, ends watches promptly on stop, and clients resume after it."""

    async def test_health_reports_the_events_service(self, server: SessionStoreServer) -> None:
        """Health reports SERVING for session_store.v1.SessionEvents."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=EVENTS_SERVICE_NAME))  # type: ignore[attr-defined]  # the stubs lack the generated methods

        assert ("session_store.v1.SessionEvents", health_pb2.HealthCheckResponse.SERVING) == (
            EVENTS_SERVICE_NAME,
            reply.status,
        )

    async def test_stop_ends_watch_streams_promptly(
        self, flushed_shards: tuple[ShardSettings, ...], clock: TestClock
    ) -> None:
        """With a 30 s grace, stop still returns within 2 s: open watches end UNAVAILABLE first."""
        settings = Settings(listen="127.0.0.1:0", grace_seconds=30)
        srv = SessionStoreServer(settings, flushed_shards, clock=clock)
        port = await srv.start()
        stopped = False
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                calls = [pb_grpc.SessionEventsStub(channel).Watch(pb.WatchRequest()) for _ in range(3)]
                for call in calls:
                    await call.read()
                loop = asyncio.get_running_loop()
                started = loop.time()
                await srv.stop(grace=30)
                stopped = True
                elapsed = loop.time() - started
                codes = [await call.code() for call in calls]
        finally:
            if not stopped:
                await srv.stop(grace=0)

        assert elapsed < 2.0
        assert [grpc.StatusCode.UNAVAILABLE] * 3 == codes

    async def test_client_resumes_after_server_restart(
        self,
        flushed_shards: tuple[ShardSettings, ...],
        clock: TestClock,
        settings: Settings,
        streams: Streams,
    ) -> None:
        """The client's watch survives a restart of its server: nothing missed, nothing repeated."""
        first = SessionStoreServer(settings, flushed_shards, clock=clock)
        port = await first.start()
        second = SessionStoreServer(settings, flushed_shards, clock=clock)
        options: list[tuple[str, Any]] = [
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 200),
        ]
        names = streams.names
        try:
            async with AsyncSessionStoreClient(f"127.0.0.1:{port}", channel_options=options) as store:
                events = store.watch(from_oldest=True)
                await streams.append(names[0], "before-0")
                await streams.append(names[1], "before-1")
                before = await take(events, 2)
                await first.stop(grace=5)
                await streams.append(names[1], "during-0")
                await streams.append(names[2], "during-1")
                await second.start(listen=f"127.0.0.1:{port}")
                during = await take(events, 2, seconds=30)
                await streams.append(names[0], "after")
                after = await take(events, 1)
                await events.aclose()
        finally:
            await first.stop(grace=0)
            await second.stop(grace=0)

        assert {"before-0", "before-1"} == set(session_ids(before))
        assert {"during-0", "during-1"} == set(session_ids(during))
        assert ["after"] == session_ids(after)

    async def test_sync_client_watch(self, server: SessionStoreServer, streams: Streams) -> None:
        """The blocking client's watch delivers the same events and resumes from a cursor."""
        for name in streams.names[:3]:
            await streams.append(name, f"s-{name}")

        def flow() -> tuple[list[SessionEvent], list[SessionEvent]]:
            with SessionStoreClient(f"127.0.0.1:{server.port}") as store:
                with store.watch(from_oldest=True) as events:
                    seen = [next(events) for _ in range(2)]
                with store.watch(after_cursor=seen[-1].cursor) as events:
                    rest = [next(events)]
                return seen, rest

        seen, rest = await asyncio.to_thread(flow)
        assert {f"s-{n}" for n in streams.names[:3]} == set(session_ids(seen + rest))

    async def test_sync_watch_closes_from_another_thread(self, server: SessionStoreServer) -> None:
        """close() from another thread ends a blocking iteration with StopIteration."""
        store = SessionStoreClient(f"127.0.0.1:{server.port}")
        events = store.watch()
        started = threading.Event()

        def follow() -> list[SessionEvent]:
            started.set()
            return list(events)

        try:
            following = asyncio.create_task(asyncio.to_thread(follow))
            await asyncio.to_thread(started.wait)
            await wait_until(lambda: server.events.watcher_count == 1)
            events.close()
            got = await asyncio.wait_for(following, WAIT_SECONDS)
        finally:
            store.close()

        assert [] == got
