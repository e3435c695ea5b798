"""Every lifecycle change appends exactly one event to its shard's stream, in the same script call;
every session ends exactly once, whichever path (logout, revoke, eviction, bulk removal, sweeper,
notification, a read) gets there first."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from session_store.client import AsyncSessionStoreClient
from session_store.config import EventSettings, Settings, ShardSettings
from session_store.errors import SessionNotFoundError
from session_store.model.clock import TestClock
from session_store.model.ids import user_partition
from session_store.model.policy import RealmPolicy
from session_store.model.session import LimitBehavior, NewClientSession, NewUserSession, SessionLimits
from session_store.server import SessionStoreServer
from session_store.storage import keys
from session_store.v1 import events_pb2, events_pb2_grpc
from tests.backends import BOTH_BACKENDS, flush_all

pytestmark = BOTH_BACKENDS

REALM = "events"


@pytest.fixture
def settings() -> Settings:
    """No background sweeper on the in-process server: these tests sweep explicitly and count what
    each sweep ended (with one running, it could end a session first and the count would be 0)."""
    return Settings(
        listen="127.0.0.1:0",
        grace_seconds=0.5,
        policy_refresh_seconds=0.001,
        events=EventSettings(sweeper=False),
    )


async def stream_events(server: SessionStoreServer, realm: str = REALM) -> list[dict[str, Any]]:
    """Every event of a realm on every shard, as dicts (clients decoded), in per-shard order."""
    found: list[dict[str, Any]] = []
    for shard in server.router.shards.values():
        for _, flat in await shard.command("XRANGE", keys.EVENTS, "-", "+"):
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            fields["c"] = json.loads(fields["c"]) if "c" in fields else []
            if fields["r"] == realm:
                found.append(fields)
    return found


def kinds(events: list[dict[str, Any]], session_id: str) -> list[str]:
    """The types of a session's events, in order."""
    return [e["t"] for e in events if e["s"] == session_id]


async def counted_sessions(server: SessionStoreServer, realm: str = REALM, *, offline: bool = False) -> int:
    """The scripts' count of a realm's sessions not yet ended, over every shard."""
    field = f"{'o' if offline else 's'}:{realm}"
    total = 0
    for shard in server.router.shards.values():
        total += int(await shard.command("HGET", keys.COUNTS, field) or 0)
    return total


async def login(client: AsyncSessionStoreClient, user: str = "alice", **kw: Any) -> str:
    """A new online session's id."""
    session = await client.create_user_session(REALM, user, **kw)
    return session.id


class TestLifecycleEvents:
    """Creates, client changes and endings each append one event with what a watcher needs."""

    async def test_create_appends_created_with_realm_user_and_time(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A create appends `created` carrying realm, user, session id and the decision time."""
        sid = await login(client)
        events = await stream_events(server)
        assert 1 == len(events)
        assert {
            "t": "created",
            "r": REALM,
            "u": "alice",
            "s": sid,
            "c": [],
            "at": str(clock.now_ms),
        } == events[0]
        assert 1 == await counted_sessions(server)

    async def test_attach_and_detach_name_the_client(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient
    ) -> None:
        """Attaching and detaching a client session append client_attached and client_detached (logout)."""
        sid = await login(client)
        await client.attach_client_session(REALM, sid, "app")
        assert await client.detach_client_session(REALM, sid, "app")
        assert not await client.detach_client_session(REALM, sid, "app")
        events = await stream_events(server)
        assert ["created", "client_attached", "client_detached"] == kinds(events, sid)
        assert ["app"] == events[1]["c"]
        assert ("logout", ["app"]) == (events[2]["why"], events[2]["c"])

    async def test_logout_ends_the_session_once(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient
    ) -> None:
        """A logout appends logged_out with the session's clients; a second logout appends nothing."""
        sid = await login(client)
        await client.attach_client_session(REALM, sid, "app")
        assert await client.remove_user_session(REALM, sid)
        assert not await client.remove_user_session(REALM, sid)
        events = await stream_events(server)
        assert ["created", "client_attached", "logged_out"] == kinds(events, sid)
        assert ["app"] == events[-1]["c"]
        assert 0 == await counted_sessions(server)

    async def test_admin_revoke_is_revoked_with_reason_admin(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient
    ) -> None:
        """An administrator's removal appends revoked (admin), not logged_out."""
        sid = await login(client)
        assert await client.remove_user_session(REALM, sid, revoked_by_admin=True)
        events = await stream_events(server)
        assert [("created", None), ("revoked", "admin")] == [(e["t"], e.get("why")) for e in events]

    async def test_revoke_all_revokes_each_session_for_the_user(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient
    ) -> None:
        """Removing every session of a user appends one revoked (user) per live session."""
        ids = {await login(client) for _ in range(3)}
        other = await login(client, user="bob")
        assert 3 == await client.remove_user_sessions(REALM, "alice")
        events = await stream_events(server)
        revoked = [e for e in events if e["t"] == "revoked"]
        assert ids == {e["s"] for e in revoked}
        assert {"user"} == {e["why"] for e in revoked}
        assert ["created"] == kinds(events, other)
        assert 1 == await counted_sessions(server)

    async def test_limit_eviction_is_revoked_with_reason_limit(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A login over the user's session limit that terminates the oldest appends revoked (limit) for it."""
        limits = SessionLimits(realm_limit=1, behavior=LimitBehavior.TERMINATE_OLDEST_SESSION)
        first = await login(client)
        clock.advance(1)
        second = await client.create_user_session(REALM, "alice", limits=limits)
        assert (first,) == second.evicted_session_ids
        events = await stream_events(server)
        assert ["created", "revoked"] == kinds(events, first)
        assert "limit" == [e for e in events if e["s"] == first][-1]["why"]
        assert ["created"] == kinds(events, second.id)
        assert 1 == await counted_sessions(server)

    async def test_refreshed_events_are_off_by_default(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient
    ) -> None:
        """Touches append nothing unless refreshed events are switched on."""
        sid = await login(client)
        await client.touch_user_session(REALM, sid)
        assert ["created"] == kinds(await stream_events(server), sid)

    async def test_offline_session_events_are_marked_offline(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """An offline session's created and expired events carry o=1 and its own count."""
        await client.set_realm_policy(RealmPolicy(realm=REALM, offline_session_idle_timeout=60))
        sid = await login(client)
        await client.attach_client_session(REALM, sid, "app")
        await client.create_offline_session(REALM, sid, ["app"])
        assert 1 == await counted_sessions(server, offline=True)
        clock.advance(61)
        await server.sweeper.sweep_all()
        offline = [e for e in await stream_events(server) if e.get("o") == "1"]
        assert [("created", ["app"]), ("expired", ["app"])] == [(e["t"], e["c"]) for e in offline]
        assert 0 == await counted_sessions(server, offline=True)


class TestExpiry:
    """Each expired session gets one `expired` event, whichever path finds it first."""

    async def test_sweeper_expires_idle_sessions_once(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """After the idle timeout the sweeper appends expired (idle) with the deadline, and only once."""
        await client.set_realm_policy(RealmPolicy(realm=REALM, sso_session_idle_timeout=60))
        sid = await login(client)
        deadline = clock.now_ms + 60_000
        clock.advance(59)
        assert 0 == await server.sweeper.sweep_all()
        clock.advance(2)
        assert 1 == await server.sweeper.sweep_all()
        assert 0 == await server.sweeper.sweep_all()
        events = await stream_events(server)
        assert ["created", "expired"] == kinds(events, sid)
        assert ("idle", str(deadline), str(clock.now_ms)) == (
            events[1]["why"],
            events[1]["dl"],
            events[1]["at"],
        )
        assert 0 == await counted_sessions(server)

    async def test_max_lifespan_expiry_says_max(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A session that dies at its max lifespan, touched until then, expires with reason max."""
        await client.set_realm_policy(
            RealmPolicy(realm=REALM, sso_session_idle_timeout=60, sso_session_max_lifespan=100)
        )
        sid = await login(client)
        for _ in range(3):
            clock.advance(30)
            await client.touch_user_session(REALM, sid)
        clock.advance(11)
        assert 1 == await server.sweeper.sweep_all()
        events = await stream_events(server)
        assert ("expired", "max") == (events[-1]["t"], events[-1]["why"])

    async def test_a_touch_moves_the_deadline(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A touched session is not swept at its old deadline."""
        await client.set_realm_policy(RealmPolicy(realm=REALM, sso_session_idle_timeout=60))
        sid = await login(client)
        clock.advance(50)
        await client.touch_user_session(REALM, sid)
        clock.advance(50)
        assert 0 == await server.sweeper.sweep_all()
        assert ["created"] == kinds(await stream_events(server), sid)

    async def test_a_read_that_finds_it_dead_expires_it_and_the_sweeper_does_not_repeat(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A get after the deadline answers NOT_FOUND and appends expired; the sweeper then finds nothing."""
        await client.set_realm_policy(RealmPolicy(realm=REALM, sso_session_idle_timeout=60))
        sid = await login(client)
        clock.advance(61)
        with pytest.raises(Exception, match="expired"):
            await client.get_user_session(REALM, sid)
        assert 0 == await server.sweeper.sweep_all()
        assert ["created", "expired"] == kinds(await stream_events(server), sid)

    async def test_revoked_while_expiring_yields_one_expired_event(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A logout that comes after the deadline but before the sweeper ends nothing twice."""
        await client.set_realm_policy(RealmPolicy(realm=REALM, sso_session_idle_timeout=60))
        sid = await login(client)
        clock.advance(61)
        assert not await client.remove_user_session(REALM, sid)
        assert 0 == await server.sweeper.sweep_all()
        assert not await client.remove_user_session(REALM, sid)
        assert ["created", "expired"] == kinds(await stream_events(server), sid)

    async def test_recreating_an_expired_id_ends_the_old_session_first(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A caller-brought id reused after its session expired gets expired, then a new created."""
        await client.set_realm_policy(RealmPolicy(realm=REALM, sso_session_idle_timeout=60))
        new = NewUserSession(realm=REALM, user_id="alice")
        await server.sessions.create_user_session(new, session_id="brought-id-1")
        clock.advance(61)
        partition = user_partition(REALM, "alice")
        # Redis drops the hash at its TTL (wall time); the test clock moved without it.
        await server.router.shard_for(partition).command(
            "DEL", keys.session(partition, "brought-id-1", offline=False)
        )
        await server.sessions.create_user_session(new, session_id="brought-id-1")
        assert ["created", "expired", "created"] == kinds(await stream_events(server), "brought-id-1")
        assert 1 == await counted_sessions(server)


class TestBulkRemovalEvents:
    """Removing a realm or a client in bulk ends or detaches each session with one event."""

    async def test_realm_removal_revokes_every_session(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Every session of a removed realm gets revoked (realm_removed)."""
        ids = {await login(client, user=f"u{i}") for i in range(20)}
        clock.advance(1)
        await client.remove_sessions(REALM)
        revoked = [e for e in await stream_events(server) if e["t"] == "revoked"]
        assert ids == {e["s"] for e in revoked}
        assert len(ids) == len(revoked)
        assert {"realm_removed"} == {e["why"] for e in revoked}
        assert 0 == await counted_sessions(server)

    async def test_client_removal_detaches_its_client_sessions(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Removing a client appends client_detached (client_removed) per session that had it."""
        ids = set()
        for i in range(5):
            sid = await login(client, user=f"u{i}")
            await client.attach_client_session(REALM, sid, "gone")
            ids.add(sid)
        clock.advance(1)
        await client.remove_sessions(REALM, client_id="gone")
        detached = [e for e in await stream_events(server) if e["t"] == "client_detached"]
        assert ids == {e["s"] for e in detached}
        assert {("client_removed", ("gone",))} == {(e["why"], tuple(e["c"])) for e in detached}


async def wait_for_expired(server: SessionStoreServer, ids: set[str], within: float) -> list[dict[str, Any]]:
    """Poll the streams (real time) until every id has its expired event or `within` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        expired = [e for e in await stream_events(server) if e["t"] == "expired"]
        if ids <= {e["s"] for e in expired} or time.monotonic() > deadline:
            return expired
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def node(
    shards: tuple[ShardSettings, ...], *, sweeper: bool, notifications: bool
) -> AsyncIterator[SessionStoreServer]:
    """A service node on the real clock with the given expiry paths."""
    settings = Settings(
        listen="127.0.0.1:0",
        grace_seconds=0.5,
        policy_refresh_seconds=0.001,
        events=EventSettings(sweeper=sweeper, notifications=notifications, sweep_interval_seconds=0.1),
    )
    srv = SessionStoreServer(settings, shards)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(grace=0)


async def short_lived_sessions(srv: SessionStoreServer, count: int, idle: int = 1) -> set[str]:
    """`count` sessions of different users that go idle in `idle` seconds (real clock)."""
    await srv.policies.set(RealmPolicy(realm=REALM, sso_session_idle_timeout=idle))
    created = await asyncio.gather(
        *(
            srv.sessions.create_user_session(NewUserSession(realm=REALM, user_id=f"u{i}"))
            for i in range(count)
        )
    )
    return {s.id for s in created}


class TestRealTimeExpiry:
    """On the real clock, each path alone delivers every expiry once, and two nodes never double one."""

    async def test_notifications_alone_deliver_each_expiry(
        self, redis_shards: tuple[ShardSettings, ...]
    ) -> None:
        """With the sweeper off, keyspace notifications end every session within seconds of its deadline
        (standalone shards: a Redis Cluster store has no notification listener)."""
        flush_all(redis_shards)
        async with node(redis_shards, sweeper=False, notifications=True) as srv:
            await asyncio.sleep(0.2)  # the listeners subscribe
            ids = await short_lived_sessions(srv, 30)
            expired = await wait_for_expired(srv, ids, within=10)
            assert srv.sweeper.stats.notifications > 0
        assert sorted(ids) == sorted(e["s"] for e in expired)
        assert max(int(e["at"]) - int(e["dl"]) for e in expired) < 5000

    async def test_sweeper_alone_delivers_each_expiry_within_the_bound(
        self, flushed_shards: tuple[ShardSettings, ...]
    ) -> None:
        """With notifications off, the sweeper ends every session, none later than 2 s after its deadline."""
        async with node(flushed_shards, sweeper=True, notifications=False) as srv:
            ids = await short_lived_sessions(srv, 200)
            expired = await wait_for_expired(srv, ids, within=10)
            assert 0 == srv.sweeper.stats.notifications
        assert sorted(ids) == sorted(e["s"] for e in expired)
        assert max(int(e["at"]) - int(e["dl"]) for e in expired) <= 2000

    async def test_two_nodes_with_every_path_end_each_session_once(
        self, flushed_shards: tuple[ShardSettings, ...]
    ) -> None:
        """Two nodes, both sweeping and listening, while reads race them: one expired event per session."""
        async with (
            node(flushed_shards, sweeper=True, notifications=True) as first,
            node(flushed_shards, sweeper=True, notifications=True) as second,
        ):
            ids = await short_lived_sessions(first, 200)

            async def reader() -> None:
                for _ in range(30):
                    for sid in list(ids)[:20]:
                        with contextlib.suppress(SessionNotFoundError):
                            await second.sessions.get_user_session(REALM, sid, offline=False)
                    await asyncio.sleep(0.05)

            await reader()
            expired = await wait_for_expired(first, ids, within=10)
            ended_by = first.sweeper.stats.expired + second.sweeper.stats.expired
        assert sorted(ids) == sorted(e["s"] for e in expired)
        assert ended_by <= len(ids)

    async def test_every_event_type_once_across_two_nodes(
        self, flushed_shards: tuple[ShardSettings, ...]
    ) -> None:
        """Changes made through either node while both sweep and listen: each cause has exactly one event."""
        async with (
            node(flushed_shards, sweeper=True, notifications=True) as first,
            node(flushed_shards, sweeper=True, notifications=True) as second,
        ):
            # Idle long enough for the changes below to land first on a loaded machine.
            ids = sorted(await short_lived_sessions(first, 40, idle=4))
            nodes = (first.sessions, second.sessions)
            attached, detached, logged_out = ids[0:30], ids[0:10], ids[10:20]
            for i, sid in enumerate(attached):
                await nodes[i % 2].attach_client_session(
                    REALM, sid, NewClientSession(client_id="app"), offline=False
                )
            for i, sid in enumerate(detached):
                assert await nodes[i % 2].detach_client_session(REALM, sid, "app", offline=False)
            for i, sid in enumerate(logged_out):
                assert await nodes[i % 2].remove_user_session(REALM, sid, offline=False)
            revoked = (await second.sessions.get_user_session(REALM, ids[20], offline=False)).user_id
            assert 1 == await first.sessions.remove_user_sessions(REALM, revoked, offline=False)
            expiring = set(ids) - set(logged_out) - {ids[20]}
            await wait_for_expired(first, expiring, within=15)
            events = await stream_events(first)
        expected = {}
        for sid in ids:
            kinds_of = ["created"]
            if sid in attached:
                kinds_of.append("client_attached")
            if sid in detached:
                kinds_of.append("client_detached")
            kinds_of.append("logged_out" if sid in logged_out else "revoked" if sid == ids[20] else "expired")
            expected[sid] = kinds_of
        assert expected == {sid: kinds(events, sid) for sid in ids}


class TestEventStats:
    """GetEventStats reports the scripts' counters, the sweeper's lag and this node's watchers."""

    async def test_counts_and_lag_over_the_wire(
        self, server: SessionStoreServer, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Sessions by realm and events by type are exact; a passed deadline shows as lag until swept."""
        await client.set_realm_policy(RealmPolicy(realm=REALM, sso_session_idle_timeout=60))
        first = await login(client)
        await login(client, user="bob")
        await client.remove_user_session(REALM, first)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = events_pb2_grpc.SessionEventsStub(channel)
            stats = await stub.GetEventStats(events_pb2.GetEventStatsRequest())
            assert [(REALM, False, 1)] == [(c.realm, c.offline, c.count) for c in stats.sessions]
            assert {"created": 2, "logged_out": 1} == dict(stats.events_by_type)
            assert 3 == sum(s.stream_length for s in stats.shards)
            assert 0 == stats.sweeper_lag_ms
            clock.advance(70)
            lagging = await stub.GetEventStats(events_pb2.GetEventStatsRequest())
            await server.sweeper.sweep_all()
            swept = await stub.GetEventStats(events_pb2.GetEventStatsRequest())
        assert 10_000 == lagging.sweeper_lag_ms
        assert (0, [], 1) == (swept.sweeper_lag_ms, list(swept.sessions), swept.events_by_type["expired"])
