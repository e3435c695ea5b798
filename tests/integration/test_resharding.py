"""Online resharding against real redis-server processes: moves lose and duplicate nothing, stale
nodes are fenced, and a mover stopped at any step leaves nothing half-done."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis_async

from session_store import (
    AsyncSessionStoreClient,
    InvalidArgumentError,
    PartitionMovedError,
    PreconditionFailedError,
)
from session_store.client._base import MoveReport
from session_store.config import Settings, ShardSettings
from session_store.embedded import RedisProcess, start_redis
from session_store.events.stream import EventType
from session_store.model.clock import TestClock
from session_store.model.ids import PARTITION_COUNT, user_partition
from session_store.server import SessionStoreServer
from session_store.storage import keys
from session_store.storage.access import build_shards
from session_store.storage.rebalance import STEPS, Rebalancer
from session_store.storage.router import Router
from session_store.storage.shard import Shard

REALM = "r"


class Crash(BaseException):
    """Stands for the mover's process dying: no `except Exception` catches it."""


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[RedisProcess]]:
    """Three servers of this test's own: shards s0 and s1 in the map, s2 empty (to be added)."""
    started: list[RedisProcess] = []
    try:
        for i in range(3):
            started.append(start_redis(f"s{i}", tmp_path / f"s{i}", appendonly=False))
        yield started
    finally:
        for proc in started:
            proc.stop()


def _settings() -> Settings:
    return Settings(listen="127.0.0.1:0", grace_seconds=0.2, policy_refresh_seconds=0.001)


def _shard(proc: RedisProcess) -> Shard:
    return build_shards(_settings().redis, [ShardSettings(name=proc.name, url=proc.url)], guard=False)[
        proc.name
    ]


def _router(procs: list[RedisProcess]) -> Router:
    """A second node's view (as `session-store cluster` builds it): only s0 and s1 configured."""
    return Router(
        {p.name: _shard(p) for p in procs[:2]},
        factory=lambda name, url: _shard(next(p for p in procs if p.name == name)),
        refresh_seconds=0,
    )


@contextlib.asynccontextmanager
async def _service(
    procs: list[RedisProcess],
) -> AsyncIterator[tuple[SessionStoreServer, AsyncSessionStoreClient]]:
    shard_settings = tuple(ShardSettings(name=p.name, url=p.url) for p in procs[:2])
    server = SessionStoreServer(_settings(), shard_settings, clock=TestClock())
    await server.start()
    try:
        async with AsyncSessionStoreClient(f"127.0.0.1:{server.port}") as client:
            yield server, client
    finally:
        await server.stop(0)


async def _dump(procs: list[RedisProcess]) -> dict[str, tuple[str, Any]]:
    """Every partition key of every server: key -> (server, logical value). Fails on a duplicate."""
    found: dict[str, tuple[str, Any]] = {}
    for proc in procs:
        conn = redis_async.Redis.from_url(proc.url, decode_responses=True)
        try:
            async for name in conn.scan_iter(match="ss:{*", count=1000):
                kind = await conn.type(name)
                value: Any
                if kind == "hash":
                    value = await conn.hgetall(name)
                elif kind == "zset":
                    value = await conn.zrange(name, 0, -1, withscores=True)
                elif kind == "set":
                    value = sorted(await conn.smembers(name))
                else:
                    value = await conn.get(name)
                assert name not in found, f"{name} is on {found[name][0]} and {proc.name}"
                found[name] = (proc.name, value)
        finally:
            await conn.aclose()
    return found


async def _owners(procs: list[RedisProcess]) -> list[list[str]]:
    """For each partition, the servers whose ownership byte says they serve it ('1', '2' or '3')."""
    owned: list[list[str]] = [[] for _ in range(PARTITION_COUNT)]
    for proc in procs:
        conn = redis_async.Redis.from_url(proc.url, decode_responses=True)
        try:
            own = str(await conn.get(keys.OWNERSHIP) or "")
        finally:
            await conn.aclose()
        for p, state in enumerate(own[:PARTITION_COUNT]):
            if state in "123":
                owned[p].append(f"{proc.name}:{state}")
    return owned


async def _create(client: AsyncSessionStoreClient, count: int, prefix: str) -> list[str]:
    created = await asyncio.gather(
        *(client.create_user_session(REALM, f"{prefix}-{i}") for i in range(count))
    )
    return [s.id for s in created]


class TestAddShard:
    """Adding a shard while serving."""

    async def test_move_without_traffic_keeps_every_key_byte_for_byte(
        self, procs: list[RedisProcess]
    ) -> None:
        """Each key ends on the new owner of its partition with the same value; only the new shard gains."""
        async with _service(procs) as (_server, client):
            await _create(client, 300, "u")
            before = await _dump(procs)
            router = _router(procs)
            await router.connect()
            try:
                progress = await Rebalancer(router, partitions_per_second=100_000).add_shard(
                    procs[2].name, _shard(procs[2])
                )
            finally:
                await router.close()
            after = await _dump(procs)
            assert {k: v for k, (_s, v) in before.items()} == {k: v for k, (_s, v) in after.items()}
            for name, (server_name, _value) in after.items():
                assert router.partition_map.owner(keys.partition_of(name)) == server_name
            counts = router.partition_map.counts()
            assert [1365, 1365, 1366] == sorted(counts.values())
            moved_from = {before[k][0] for k, (s, _v) in after.items() if s == procs[2].name}
            assert moved_from <= {procs[0].name, procs[1].name}
            assert counts[procs[2].name] == progress.moved
            assert all(len(o) == 1 for o in await _owners(procs))
            # The service node learns the new map and serves every session from its new owner.
            for sid in {k.split(":", 3)[3] for k in after if k.split(":")[2] == "s"}:
                assert sid == (await client.get_user_session(REALM, sid)).id

    async def test_move_under_concurrent_writes_loses_and_duplicates_nothing(
        self, procs: list[RedisProcess]
    ) -> None:
        """Sessions created and touched during the move are all readable after it; no key on two shards."""
        async with _service(procs) as (server, client):
            created = await _create(client, 200, "before")
            stop = asyncio.Event()
            errors: list[BaseException] = []

            async def writer(w: int) -> None:
                for i in range(100_000):
                    if stop.is_set():
                        return
                    try:
                        s = await client.create_user_session(REALM, f"w{w}-{i}")
                        created.append(s.id)
                        await client.touch_user_session(REALM, created[i % len(created)])
                    except Exception as exc:  # collected, asserted empty below
                        errors.append(exc)

            writers = [asyncio.create_task(writer(w)) for w in range(4)]
            router = _router(procs)
            await router.connect()
            try:
                progress = await Rebalancer(router, partitions_per_second=2000).add_shard(
                    procs[2].name, _shard(procs[2])
                )
            finally:
                stop.set()
                await asyncio.gather(*writers)
                await router.close()
            assert [] == errors
            assert progress.moved > 1000
            await _dump(procs)  # asserts no key is on two servers
            for sid in created:
                assert sid == (await client.get_user_session(REALM, sid)).id
            assert len(created) == await client.count_sessions(REALM)
            assert server.router.epoch == router.epoch
            assert all(len(o) == 1 for o in await _owners(procs))

    async def test_a_stale_node_is_fenced_and_follows(self, procs: list[RedisProcess]) -> None:
        """A node that has not heard of the move is refused by the old owner and retries on the new one."""
        async with _service(procs) as (_server, _client):
            stale = _router(procs)
            await stale.connect()
            try:
                mover_router = _router(procs)
                await mover_router.connect()
                try:
                    await Rebalancer(mover_router, partitions_per_second=100_000).add_shard(
                        procs[2].name, _shard(procs[2])
                    )
                    moved = next(
                        p
                        for p in range(PARTITION_COUNT)
                        if mover_router.partition_map.owner(p) == procs[2].name
                    )
                finally:
                    await mover_router.close()
                assert stale.epoch == 1
                old_owner = stale.shard_for(moved)
                probe = [
                    keys.session(moved, "x" * 24, offline=False),
                    keys.pointer(moved, "x" * 24),
                    *keys.event_keys(moved),
                ]
                args = ["", *(["0"] * 12), "", "0", "0", REALM, str(moved), "0"]
                with pytest.raises(PartitionMovedError):
                    await old_owner.call("get_user_session", probe, args)
                retried: list[str] = []
                stale.on_retry = retried.append
                with contextlib.suppress(Exception):  # not found on the new owner: what matters is where
                    await stale.call(moved, "get_user_session", probe, args)
                assert ["moved"] == retried
                assert stale.epoch > 1
                assert procs[2].name == stale.shard_for(moved).name
            finally:
                await stale.close()


class TestStaleReads:
    """Plain reads (counts, hint lookups, index reads) are fenced too."""

    async def test_a_stale_node_counts_every_session_after_a_move(self, procs: list[RedisProcess]) -> None:
        """A node that missed the move still counts every session: the old owners' bytes send it on."""
        async with _service(procs) as (_server, client):
            created = await _create(client, 120, "u")
            stale = _router(procs)
            await stale.connect()
            try:
                mover = _router(procs)
                await mover.connect()
                try:
                    await Rebalancer(mover, partitions_per_second=100_000).add_shard(
                        procs[2].name, _shard(procs[2])
                    )
                finally:
                    await mover.close()
                assert 1 == stale.epoch
                retried: list[str] = []
                stale.on_retry = retried.append
                counts = await stale.read_all(lambda p: ("ZCARD", keys.realm_index(p, REALM, offline=False)))
                assert len(created) == sum(int(c) for c in counts)
                assert ["moved"] == retried
                assert stale.epoch > 1
            finally:
                await stale.close()

    async def test_a_single_read_goes_to_the_new_owner(self, procs: list[RedisProcess]) -> None:
        """`Router.read` of a moved partition's key answers from its new shard."""
        async with _service(procs) as (_server, client):
            created = await _create(client, 60, "u")
            stale = _router(procs)
            await stale.connect()
            try:
                mover = _router(procs)
                await mover.connect()
                try:
                    await Rebalancer(mover, partitions_per_second=100_000).add_shard(
                        procs[2].name, _shard(procs[2])
                    )
                    moved_user = next(
                        i
                        for i in range(60)
                        if mover.shard_for(user_partition(REALM, f"u-{i}")).name == procs[2].name
                    )
                finally:
                    await mover.close()
                p = user_partition(REALM, f"u-{moved_user}")
                members = await stale.read(
                    p, "ZRANGE", keys.user_index(p, REALM, f"u-{moved_user}", offline=False), 0, -1
                )
                assert [created[moved_user]] == list(members)
                assert procs[2].name == stale.shard_for(p).name
            finally:
                await stale.close()


class TestEventsAcrossAMove:
    """Watches opened before a shard is added see the events of sessions moved to it."""

    async def test_an_open_watch_follows_the_new_shard(self, procs: list[RedisProcess]) -> None:
        """A logout of a session whose partition moved reaches a watch opened before the move, once."""
        async with _service(procs) as (server, client):
            created = await _create(client, 60, "u")
            watch = client.watch(realms=[REALM], types=[EventType.LOGGED_OUT])
            seen: list[str] = []

            async def collect() -> None:
                async for event in watch:
                    seen.append(event.session_id)

            reader = asyncio.create_task(collect())
            await asyncio.sleep(0.3)
            router = _router(procs)
            await router.connect()
            try:
                await Rebalancer(router, partitions_per_second=100_000).add_shard(
                    procs[2].name, _shard(procs[2])
                )
                on_new = [
                    sid
                    for i, sid in enumerate(created)
                    if router.shard_for(user_partition(REALM, f"u-{i}")).name == procs[2].name
                ]
            finally:
                await router.close()
            assert on_new
            for sid in on_new:
                assert await client.remove_user_session(REALM, sid)
            for _ in range(100):
                if len(seen) >= len(on_new):
                    break
                await asyncio.sleep(0.05)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await watch.aclose()
            assert sorted(on_new) == sorted(seen)
            assert procs[2].name in server.router.shards


class TestRemoveShard:
    """Removing a shard while serving."""

    async def test_every_partition_leaves_and_sessions_stay(self, procs: list[RedisProcess]) -> None:
        """After remove-shard the shard owns nothing and holds no partition key; every session reads."""
        async with _service(procs) as (_server, client):
            created = await _create(client, 200, "u")
            router = _router(procs)
            await router.connect()
            try:
                await Rebalancer(router, partitions_per_second=100_000).remove_shard(procs[0].name)
            finally:
                await router.close()
            after = await _dump(procs)
            assert {procs[1].name} == {s for s, _v in after.values()}
            assert procs[0].name not in router.partition_map.shards
            for sid in created:
                assert sid == (await client.get_user_session(REALM, sid)).id
            assert 200 == await client.count_sessions(REALM)


class TestInterruptedMove:
    """A mover that dies at any step leaves every partition on exactly one shard."""

    @pytest.mark.parametrize("step", STEPS)
    @pytest.mark.parametrize("resume", [True, False])
    async def test_stopped_at_each_step(self, procs: list[RedisProcess], step: str, resume: bool) -> None:
        """Recovery (a resumed mover, or a starting service node) finishes or rolls back; nothing lost."""
        async with _service(procs) as (server, client):
            created = await _create(client, 150, "u")
            before = await _dump(procs)
            router = _router(procs)
            await router.connect()
            seen = 0

            async def die(at: str, _partition: int) -> None:
                nonlocal seen
                if at == step:
                    seen += 1
                    if seen == 3:
                        raise Crash(at)

            try:
                with pytest.raises(Crash):
                    await Rebalancer(router, partitions_per_second=100_000, on_step=die).add_shard(
                        procs[2].name, _shard(procs[2])
                    )
            finally:
                await router.close()
            if resume:
                again = _router(procs)
                await again.connect()
                try:
                    progress = await Rebalancer(again, partitions_per_second=100_000).recover()
                finally:
                    await again.close()
                assert progress is not None
                assert 1365 <= progress.moved
            else:
                # A service node starting repairs the partitions in flight and leaves the plan.
                async with _service(procs):
                    pass
            assert all(len(o) == 1 and o[0].endswith(":1") for o in await _owners(procs))
            after = await _dump(procs)
            assert {k: v for k, (_s, v) in before.items()} == {k: v for k, (_s, v) in after.items()}
            await server.router.refresh()
            for name, (server_name, _value) in after.items():
                assert server.router.partition_map.owner(keys.partition_of(name)) == server_name
            for sid in created:
                assert sid == (await client.get_user_session(REALM, sid)).id


class TestTargetDown:
    """A move whose target dies is rolled back without it, where that is safe."""

    async def test_a_node_starting_with_the_target_down_unfreezes_the_source(
        self, procs: list[RedisProcess]
    ) -> None:
        """Target killed while a partition is frozen: a starting node gives every partition back to
        its source (the target had not accepted), so nothing stays frozen and every session reads."""
        async with _service(procs) as (_server, client):
            created = await _create(client, 150, "u")
            before = await _dump(procs[:2])
            router = _router(procs)
            await router.connect()

            async def die(at: str, _partition: int) -> None:
                if at == "frozen":
                    procs[2].kill()
                    raise Crash(at)

            try:
                with pytest.raises(Crash):
                    await Rebalancer(router, partitions_per_second=100_000, on_step=die).add_shard(
                        procs[2].name, _shard(procs[2])
                    )
            finally:
                await router.close()
            frozen = [o for o in await _owners(procs[:2]) if o[0].endswith((":2", ":3"))]
            assert frozen  # the mover left partitions copying out and one frozen
            async with _service(procs):
                pass  # a node starts: it repairs what it safely can
            assert all(len(o) == 1 and o[0].endswith(":1") for o in await _owners(procs[:2]))
            after = await _dump(procs[:2])
            assert {k: v for k, (_s, v) in before.items()} == {k: v for k, (_s, v) in after.items()}
            for sid in created:
                assert sid == (await client.get_user_session(REALM, sid)).id


def test_user_partitions_spread_over_the_added_shard() -> None:
    """Sanity of the fixture users: they fall in many partitions."""
    assert len({user_partition(REALM, f"u-{i}") for i in range(150)}) > 140


class TestClusterCommand:
    """`session-store cluster` drives the same mover from the command line."""

    def test_status_add_and_remove_shard(self, procs: list[RedisProcess]) -> None:
        """add-shard moves the new shard's share to it, remove-shard empties one, status shows both."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_STORE_")}
        env["SESSION_STORE_REDIS_URLS"] = f"s0={procs[0].url},s1={procs[1].url}"

        def run(*args: str) -> str:
            done = subprocess.run(  # noqa: S603 - our own command line
                [sys.executable, "-m", "session_store", "cluster", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert 0 == done.returncode, done.stderr
            return done.stdout

        assert "map epoch 1" in run("status")
        added = json.loads(
            run("add-shard", procs[2].url, "--name", "s2", "--rate", "100000").splitlines()[-1]
        )
        assert 1365 == added["done"]["moved"]
        status = run("status")
        assert re.search(r"s2\s+weight 1\s+1365 partitions", status), status
        removed = json.loads(run("remove-shard", "s0", "--rate", "100000").splitlines()[-1])
        assert removed["done"]["moved"] in (1365, 1366)
        assert re.search(r"s0\s+weight 0\s+0 partitions", run("status"))


class TestClusterAdminRpcs:
    """The same operations over gRPC (ClusterAdmin), on the service node's own router."""

    async def test_topology_add_and_remove_over_grpc(self, procs: list[RedisProcess]) -> None:
        """GetTopology shows the map; AddShard streams progress and ends done; RemoveShard empties one."""
        async with _service(procs) as (server, client):
            created = await _create(client, 100, "u")
            before = await client.get_topology()
            assert 1 == before.epoch
            assert {"s0": 2048, "s1": 2048} == {s.name: s.partitions for s in before.shards}
            reports: list[MoveReport] = []
            final = await client.add_shard(
                procs[2].url, name="s2", partitions_per_second=100_000, on_progress=reports.append
            )
            assert final.done
            assert 1365 == final.moved == final.total
            assert len(reports) > 10
            assert not any(r.done for r in reports[:-1])
            after = await client.get_topology()
            assert {"s0": 1366, "s1": 1365, "s2": 1365} == {s.name: s.partitions for s in after.shards}
            assert after.epoch > 1000
            assert "" == after.plan_id
            removed = await client.remove_shard("s1", partitions_per_second=100_000)
            assert removed.done
            assert 0 == {s.name: s.partitions for s in (await client.get_topology()).shards}["s1"]
            for sid in created:
                assert sid == (await client.get_user_session(REALM, sid)).id
            assert server.router.epoch == (await client.get_topology()).epoch

    async def test_bad_requests_change_nothing(self, procs: list[RedisProcess]) -> None:
        """A malformed URL, an unknown or taken shard, a bad rate: clear statuses and the same map."""
        async with _service(procs) as (_server, client):
            with pytest.raises(InvalidArgumentError, match="url"):
                await client.add_shard("http://nowhere", name="x")
            with pytest.raises(InvalidArgumentError, match="name"):
                await client.add_shard(procs[2].url, name="bad name, with comma")
            with pytest.raises(PreconditionFailedError, match="already"):
                await client.add_shard(procs[1].url, name="s1")
            with pytest.raises(PreconditionFailedError, match="not in the partition map"):
                await client.remove_shard("nope")
            with pytest.raises(InvalidArgumentError, match="partitions_per_second"):
                await client.remove_shard("s0", partitions_per_second=-1)
            nothing = await client.resume_move()
            assert nothing.done
            assert 0 == nothing.total
            topology = await client.get_topology()
            assert 1 == topology.epoch
            assert "" == topology.plan_id


class TestFirstStart:
    """The stored map, not a node's configuration, decides ownership."""

    async def test_a_node_with_an_appended_shard_does_not_give_it_partitions(
        self, procs: list[RedisProcess]
    ) -> None:
        """A node configured with [s0, s1] after the map was stored with [s0] alone adopts that map:
        s1 owns nothing until add-shard, so no partition has two owners."""
        first = Router({procs[0].name: _shard(procs[0])}, refresh_seconds=0)
        await first.connect()
        second = Router({p.name: _shard(p) for p in procs[:2]}, refresh_seconds=0)
        await second.connect()
        try:
            assert 1 == first.epoch == second.epoch
            assert {procs[0].name: PARTITION_COUNT} == {
                n: c for n, c in second.partition_map.counts().items() if c
            }
            assert all(o == [f"{procs[0].name}:1"] for o in await _owners(procs))
        finally:
            await first.close()
            await second.close()

    async def test_nodes_starting_together_with_different_lists_agree(
        self, procs: list[RedisProcess]
    ) -> None:
        """Whichever candidate reaches the first shard first is the map every node adopts."""

        def factory(name: str, url: str) -> Shard:
            return _shard(next(p for p in procs if p.name == name))

        one = Router({procs[0].name: _shard(procs[0])}, factory=factory, refresh_seconds=0)
        two = Router({p.name: _shard(p) for p in procs[:2]}, factory=factory, refresh_seconds=0)
        await asyncio.gather(two.connect(), one.connect())
        try:
            assert one.partition_map.owners == two.partition_map.owners
            assert all(len(o) == 1 for o in await _owners(procs))
        finally:
            await one.close()
            await two.close()
