"""RemoveSessions: bulk removal in batches, invisible at once, each session counted once."""

from __future__ import annotations

import asyncio

import pytest

from session_store import AsyncSessionStoreClient, InvalidArgumentError, SessionNotFoundError
from session_store.model.clock import TestClock
from session_store.model.ids import PARTITION_COUNT, user_partition
from session_store.model.session import RemovalProgress
from session_store.server import SessionStoreServer
from session_store.storage import keys
from tests.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS


async def _populate(client: AsyncSessionStoreClient, realm: str, users: int) -> list[str]:
    ids = []
    for u in range(users):
        session = await client.create_user_session(realm, f"user-{u}")
        await client.attach_client_session(realm, session.id, "app")
        if u % 2 == 0:
            await client.attach_client_session(realm, session.id, "other")
        ids.append(session.id)
    return ids


async def _raw_exists(
    server: SessionStoreServer, realm: str, user: str, session_id: str, *, offline: bool
) -> bool:
    partition = user_partition(realm, user)
    shard = server.router.shard_for(partition)
    return bool(await shard.command("EXISTS", keys.session(partition, session_id, offline=offline)))


class TestRemoveRealmSessions:
    """The whole realm."""

    async def test_removes_online_and_offline_and_only_that_realm(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Every session of the realm goes, online and offline, and is counted once; another realm stays."""
        ids = await _populate(client, "doomed", 12)
        await client.create_offline_session("doomed", ids[0], ["app"])
        keep = await client.create_user_session("kept", "user-0")
        seen: list[RemovalProgress] = []
        final = await client.remove_sessions("doomed", on_progress=seen.append)
        assert RemovalProgress(13, PARTITION_COUNT, PARTITION_COUNT) == final
        assert [p.partitions_done for p in seen] == sorted(p.partitions_done for p in seen)
        for sid in ids:
            with pytest.raises(SessionNotFoundError):
                await client.get_user_session("doomed", sid)
        assert 0 == await client.count_sessions("doomed")
        assert 0 == await client.count_sessions("doomed", offline=True)
        assert {} == await client.get_client_session_stats("doomed")
        assert [] == await client.list_user_sessions("doomed", "user-0")
        assert keep.id == (await client.get_user_session("kept", keep.id)).id
        clock.advance(1)
        again = await client.create_user_session("doomed", "user-0")
        assert [again.id] == [s.id for s in await client.list_user_sessions("doomed", "user-0")]
        assert 1 == await client.count_sessions("doomed")

    async def test_unreadable_before_its_batch_runs(
        self, client: AsyncSessionStoreClient, server: SessionStoreServer, clock: TestClock
    ) -> None:
        """Once the removal marker is up, a session still stored in Redis is NOT_FOUND everywhere."""
        session = await client.create_user_session("doomed", "user-1")
        await client.attach_client_session("doomed", session.id, "app")
        await server.policies.mark_removed("doomed", "", clock.now_ms // 1000 + 1)
        assert await _raw_exists(server, "doomed", "user-1", session.id, offline=False)
        with pytest.raises(SessionNotFoundError):
            await client.get_user_session("doomed", session.id)
        with pytest.raises(SessionNotFoundError):
            await client.touch_user_session("doomed", session.id)
        assert [] == await client.list_user_sessions("doomed", "user-1")

    async def test_concurrent_removals_count_each_session_once(self, client: AsyncSessionStoreClient) -> None:
        """Two removals of the same realm racing report every session exactly once between them."""
        await _populate(client, "doomed", 20)
        first, second = await asyncio.gather(
            client.remove_sessions("doomed"), client.remove_sessions("doomed")
        )
        assert 20 == first.removed + second.removed


class TestRemoveClientSessions:
    """One client's client sessions (Keycloak onClientRemoved)."""

    async def test_client_sessions_go_user_sessions_stay(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Only the client's client sessions are removed; user sessions and other clients stay."""
        ids = await _populate(client, "r", 6)
        final = await client.remove_sessions("r", client_id="app")
        assert 6 == final.removed
        assert 6 == await client.count_sessions("r")
        assert {"other": 3} == await client.get_client_session_stats("r")
        for sid in ids:
            assert "app" not in (await client.get_user_session("r", sid)).client_sessions
        clock.advance(1)
        await client.attach_client_session("r", ids[0], "app")
        assert {"other": 3, "app": 1} == await client.get_client_session_stats("r")


class TestRemoveExpired:
    """Dead sessions whose keys Redis has not dropped yet."""

    async def test_removes_dead_keeps_live(
        self, client: AsyncSessionStoreClient, server: SessionStoreServer, clock: TestClock
    ) -> None:
        """Sessions past their deadline (by the test clock) are deleted; a fresh one stays."""
        old = await client.create_user_session("r", "old-user")
        clock.advance(1800)
        fresh = await client.create_user_session("r", "new-user")
        assert await _raw_exists(server, "r", "old-user", old.id, offline=False)
        final = await client.remove_sessions("r", expired=True)
        assert 1 == final.removed
        assert not await _raw_exists(server, "r", "old-user", old.id, offline=False)
        assert fresh.id == (await client.get_user_session("r", fresh.id)).id


class TestRemoveSessionsInput:
    """Bad requests change nothing."""

    async def test_bad_batch_size(self, client: AsyncSessionStoreClient) -> None:
        """A batch size above the cap is INVALID_ARGUMENT and nothing is removed."""
        session = await client.create_user_session("r", "u")
        with pytest.raises(InvalidArgumentError):
            await client.remove_sessions("r", batch_size=1_000_000)
        assert session.id == (await client.get_user_session("r", session.id)).id

    async def test_bad_realm(self, client: AsyncSessionStoreClient) -> None:
        """An invalid realm is INVALID_ARGUMENT."""
        with pytest.raises(InvalidArgumentError):
            await client.remove_sessions("bad realm")
