"""The Redis Cluster backend against a real local cluster: slots migrated and primaries failed over
while logins flow, nothing lost; placement left to the cluster; scripts reloaded on a new primary.

The rest of the API runs on the cluster through the modules marked ``both_backends``; this module
is about what only a cluster does. It starts its own cluster (3 primaries, 1 replica each), since it
moves slots and promotes replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from session_store import (
    AsyncSessionStoreClient,
    PreconditionFailedError,
    SessionNotFoundError,
    SessionStoreError,
)
from session_store.config import Settings, ShardSettings
from session_store.embedded import EmbeddedCluster, start_cluster
from session_store.model.clock import TestClock
from session_store.model.ids import user_partition
from session_store.server import SessionStoreServer
from session_store.storage import keys
from session_store.storage._scripts import load_scripts
from tests.backends import flush_all, partitioned_keys

pytestmark = pytest.mark.timeout(120)

REALM = "cluster-realm"
GROUPS = 16


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    """A cluster of 3 primaries with a replica each, for this module alone, stopped by PID."""
    with tempfile.TemporaryDirectory(prefix="session-store-cluster-backend-") as root:
        started = start_cluster(Path(root), 3, replicas=1, appendonly=False)
        try:
            yield started
        finally:
            started.stop()


@pytest.fixture
def store_shards(cluster: EmbeddedCluster) -> tuple[ShardSettings, ...]:
    """The cluster as the store's one entry, emptied."""
    cluster.wait_stable()
    shards = (ShardSettings(name="cluster", url=cluster.url),)
    flush_all(shards)
    return shards


@contextlib.asynccontextmanager
async def service(
    shards: tuple[ShardSettings, ...],
) -> AsyncIterator[tuple[SessionStoreServer, AsyncSessionStoreClient]]:
    """An in-process service node on the cluster and a client with the default retries."""
    srv = SessionStoreServer(
        Settings(listen="127.0.0.1:0", grace_seconds=0.5, policy_refresh_seconds=0.001),
        shards,
        clock=TestClock(),
    )
    await srv.start()
    try:
        async with AsyncSessionStoreClient(f"127.0.0.1:{srv.port}") as store:
            yield srv, store
    finally:
        await srv.stop(grace=0)


def group_slot(group: int) -> int:
    """The hash slot of a group: every key of the group's partitions is in it."""
    return EmbeddedCluster.slot_of(keys.group_tag(group, GROUPS))


def user_in_group(group: int, n: int) -> str:
    """The n-th user id whose partition is in `group`."""
    found = 0
    for i in range(100_000):
        user = f"user-{i}"
        if keys.group_of(user_partition(REALM, user), GROUPS) == group:
            if found == n:
                return user
            found += 1
    raise AssertionError(f"no user in group {group}")


@dataclass
class Load:
    """What a load run was told: sessions acknowledged as created and as logged out, and errors."""

    created: dict[str, str] = field(default_factory=dict)
    """session id -> user id"""
    removed: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    calls: int = 0

    async def run(
        self, store: AsyncSessionStoreClient, users: list[str], stop: asyncio.Event, worker: int
    ) -> None:
        """Log users in, attach a client, touch, and log every third session out, until `stop`."""
        n = 0
        while not stop.is_set():
            user = users[(worker + n) % len(users)]
            n += 1
            try:
                session = await store.create_user_session(REALM, user, login_username=user)
                self.created[session.id] = user
                await store.attach_client_session(REALM, session.id, "app")
                await store.touch_user_session(REALM, session.id, client_ids=["app"])
                if n % 3 == 0:
                    await store.remove_user_session(REALM, session.id)
                    self.removed.add(session.id)
                self.calls += 4 if n % 3 == 0 else 3
            except SessionStoreError as exc:
                self.errors.append(f"{type(exc).__name__}: {exc.message}")


async def check_nothing_lost(store: AsyncSessionStoreClient, load: Load) -> None:
    """Every acknowledged session is readable with its client session unless it was logged out, and
    the logged-out ones are gone; the count is the live set."""
    for session_id, user in load.created.items():
        if session_id in load.removed:
            with pytest.raises(SessionNotFoundError):
                await store.get_user_session(REALM, session_id)
            continue
        got = await store.get_user_session(REALM, session_id)
        assert (user, ["app"]) == (got.user_id, list(got.client_sessions))
    assert len(load.created) - len(load.removed) == await store.count_sessions(REALM)


class TestSlotMigration:
    """A slot migrated by the cluster while logins flow."""

    async def test_migrating_slots_under_load_loses_nothing(
        self, cluster: EmbeddedCluster, store_shards: tuple[ShardSettings, ...]
    ) -> None:
        """Two groups' slots move to other primaries mid-load: no caller sees an error, every
        acknowledged session is still there, and the service follows the slots to their new owners."""
        groups = [0x3, 0xC]
        users = [user_in_group(g, n) for g in groups for n in range(20)] + [
            user_in_group(0x7, n) for n in range(10)
        ]
        load = Load()
        async with service(store_shards) as (_srv, store):
            stop = asyncio.Event()
            workers = [asyncio.create_task(load.run(store, users, stop, w)) for w in range(8)]
            await asyncio.sleep(0.5)
            moved_keys = 0
            targets = {}
            for group in groups:
                slot = group_slot(group)
                source = cluster.node_for_slot(slot)
                target = next(m for m in cluster.masters if m.port != source.port)
                targets[group] = target.port
                moved_keys += await asyncio.to_thread(
                    cluster.migrate_slot, slot, target, batch=5, pause_seconds=0.01
                )
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*workers)

            assert [] == load.errors
            assert moved_keys > 0
            assert targets == {g: cluster.node_for_slot(group_slot(g)).port for g in groups}
            assert load.calls > 100
            await check_nothing_lost(store, load)

    async def test_a_node_started_before_a_migration_follows_it(
        self, cluster: EmbeddedCluster, store_shards: tuple[ShardSettings, ...]
    ) -> None:
        """A service node whose slot map predates a migration reads and writes the moved group at once
        (MOVED is followed; the old owner no longer holds the keys)."""
        user = user_in_group(0x5, 0)
        async with service(store_shards) as (_srv, store):
            session = await store.create_user_session(REALM, user)
            slot = group_slot(0x5)
            source = cluster.node_for_slot(slot)
            target = next(m for m in cluster.masters if m.port != source.port)
            await asyncio.to_thread(cluster.migrate_slot, slot, target)

            touched = await store.touch_user_session(REALM, session.id)
            again = await store.create_user_session(REALM, user)

            assert session.id == touched.id
            assert {session.id, again.id} == {s.id for s in await store.list_user_sessions(REALM, user)}


class TestFailover:
    """A replica promoted while logins flow."""

    async def test_failover_under_load_loses_nothing(
        self, cluster: EmbeddedCluster, store_shards: tuple[ShardSettings, ...]
    ) -> None:
        """A coordinated failover of the primary of a busy group: callers see no error, nothing
        acknowledged is lost, and the scripts are loaded again on the new primary when it needs them."""
        group = 0x9
        users = [user_in_group(group, n) for n in range(20)]
        load = Load()
        async with service(store_shards) as (_srv, store):
            stop = asyncio.Event()
            workers = [asyncio.create_task(load.run(store, users, stop, w)) for w in range(6)]
            await asyncio.sleep(0.5)
            old = cluster.node_for_slot(group_slot(group))
            replica = next(r for r in cluster.replicas if cluster.master_of(r).port == old.port)
            await asyncio.to_thread(cluster.failover, replica)
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*workers)

            assert replica.port == cluster.node_for_slot(group_slot(group)).port
            assert [] == load.errors
            await check_nothing_lost(store, load)

    async def test_a_script_reload_reaches_every_primary(
        self, cluster: EmbeddedCluster, store_shards: tuple[ShardSettings, ...]
    ) -> None:
        """After NOSCRIPT (scripts flushed, or a new primary), the scripts are loaded on every primary,
        not only where the group's slot map points: a stale map during a failover names the old one."""
        user = user_in_group(0x1, 0)
        sha = load_scripts()["touch_user_session"].sha
        async with service(store_shards) as (_srv, store):
            session = await store.create_user_session(REALM, user)
            for node in cluster.masters:
                with redis.Redis(host="127.0.0.1", port=node.port) as conn:
                    conn.script_flush()
            touched = await store.touch_user_session(REALM, session.id)

        assert session.id == touched.id
        for node in cluster.masters:
            with redis.Redis(host="127.0.0.1", port=node.port) as conn:
                assert [True] == conn.script_exists(sha)


class TestPlacementIsTheClusters:
    """session-store does not place or move anything on a cluster."""

    async def test_shard_moves_are_refused_and_topology_shows_the_groups(
        self, store_shards: tuple[ShardSettings, ...]
    ) -> None:
        """AddShard and RemoveShard answer FAILED_PRECONDITION; the topology lists the 16 groups with
        256 partitions each."""
        async with service(store_shards) as (_srv, store):
            topology = await store.get_topology()
            with pytest.raises(PreconditionFailedError, match="Redis Cluster"):
                await store.add_shard("redis://127.0.0.1:1/0", name="extra")
            with pytest.raises(PreconditionFailedError, match="Redis Cluster"):
                await store.remove_shard("cluster/0")

        assert [f"cluster/{g:x}" for g in range(GROUPS)] == [s.name for s in topology.shards]
        assert [256] * GROUPS == [s.partitions for s in topology.shards]

    async def test_every_key_of_a_user_lives_in_the_users_group_slot(
        self, cluster: EmbeddedCluster, store_shards: tuple[ShardSettings, ...]
    ) -> None:
        """The keys a login writes carry its group's hash tag: they are all in the group's slot."""
        user = user_in_group(0xA, 0)
        async with service(store_shards) as (srv, store):
            session = await store.create_user_session(REALM, user, broker_user_id="idp.u")
            await store.attach_client_session(REALM, session.id, "app")
            written = await partitioned_keys(srv.router, f"ss:{{{user_partition(REALM, user):03x}}}:*")

        assert keys.session(user_partition(REALM, user), session.id, offline=False) in written
        grouped = {keys.in_group(k, 0xA, GROUPS) for k in written}
        assert {group_slot(0xA)} == {EmbeddedCluster.slot_of(k) for k in grouped}
