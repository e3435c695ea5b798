"""A shard that goes down makes only its own partitions UNAVAILABLE; AOF brings its sessions back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from session_store import AsyncSessionStoreClient, ShardUnavailableError
from session_store.config import Settings, ShardSettings
from session_store.embedded import EmbeddedShards, RedisProcess, start_redis
from session_store.model.clock import TestClock
from session_store.model.ids import user_partition
from session_store.server import SessionStoreServer


@pytest.fixture
def own_shards(tmp_path: Path) -> Iterator[list[RedisProcess]]:
    """Three shards of this test's own (with AOF), so one can be killed."""
    shards = EmbeddedShards(tmp_path, 3, appendonly=True)
    started = shards.start()
    try:
        yield started
    finally:
        shards.stop()
        for proc in started:
            proc.stop()


def _user_on(server: SessionStoreServer, shard: str, realm: str) -> str:
    """A user id whose partition the named shard owns."""
    for i in range(10_000):
        user = f"user-{i}"
        if server.router.shard_for(user_partition(realm, user)).name == shard:
            return user
    raise AssertionError("no user found for the shard")  # pragma: no cover


class TestShardDown:
    """Killing one of three shards mid-test."""

    async def test_other_shards_keep_serving_and_data_survives(
        self, own_shards: list[RedisProcess], tmp_path: Path
    ) -> None:
        """Calls for the dead shard are UNAVAILABLE, others succeed, and a restart from AOF restores it."""
        settings = Settings(listen="127.0.0.1:0", grace_seconds=0.2, policy_refresh_seconds=0.001)
        shard_settings = tuple(ShardSettings(name=p.name, url=p.url) for p in own_shards)
        server = SessionStoreServer(settings, shard_settings, clock=TestClock())
        await server.start()
        try:
            async with AsyncSessionStoreClient(f"127.0.0.1:{server.port}", max_attempts=1) as client:
                victim = own_shards[1]
                doomed_user = _user_on(server, victim.name, "r")
                healthy_user = _user_on(server, own_shards[0].name, "r")
                doomed = await client.create_user_session("r", doomed_user)
                healthy = await client.create_user_session("r", healthy_user)
                await client.set_realm_policy(
                    await client.get_realm_policy("r")
                )  # the policy lives on every shard

                victim.kill()
                with pytest.raises(ShardUnavailableError):
                    await client.get_user_session("r", doomed.id)
                with pytest.raises(ShardUnavailableError):
                    await client.create_user_session("r", doomed_user)
                assert healthy.id == (await client.touch_user_session("r", healthy.id)).id
                assert healthy_user == (await client.create_user_session("r", healthy_user)).user_id
                with pytest.raises(ShardUnavailableError):
                    await client.count_sessions("r")  # a partial count would be wrong

                restarted = start_redis(victim.name, victim.data_dir, port=victim.port, appendonly=True)
                own_shards.append(restarted)
                assert doomed_user == (await client.get_user_session("r", doomed.id)).user_id
                assert 3 == await client.count_sessions("r")
        finally:
            await server.stop(grace=0)
