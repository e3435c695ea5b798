"""Fixtures: real redis-server processes (started by session_store.embedded, as `make run` does),
an in-process grpc.aio server on 127.0.0.1:0 with a test clock, and clients."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from session_store.client import AsyncSessionStoreClient
from session_store.config import Settings, ShardSettings
from session_store.embedded import EmbeddedShards
from session_store.model.clock import TestClock
from session_store.server import SessionStoreServer

SHARD_COUNT = 3


@pytest.fixture(scope="session")
def redis_shards() -> Iterator[tuple[ShardSettings, ...]]:
    """Three real redis-server processes for the whole run, stopped by PID at the end."""
    with tempfile.TemporaryDirectory(prefix="session-store-tests-") as root:
        shards = EmbeddedShards(Path(root), SHARD_COUNT, appendonly=False)
        started = shards.start()
        try:
            yield tuple(ShardSettings(name=p.name, url=p.url) for p in started)
        finally:
            shards.stop()


@pytest.fixture
def flushed_shards(redis_shards: tuple[ShardSettings, ...]) -> tuple[ShardSettings, ...]:
    """The shared shards, emptied before the test."""
    for shard in redis_shards:
        with redis.Redis.from_url(shard.url) as conn:
            conn.flushall()
    return redis_shards


@pytest.fixture
def clock() -> TestClock:
    """A frozen test clock, moved only by the test."""
    return TestClock()


@pytest.fixture
def settings() -> Settings:
    """Test settings: short grace, policies re-read at once."""
    return Settings(listen="127.0.0.1:0", grace_seconds=0.5, policy_refresh_seconds=0.001)


@pytest.fixture
async def server(
    flushed_shards: tuple[ShardSettings, ...], clock: TestClock, settings: Settings
) -> AsyncIterator[SessionStoreServer]:
    """An in-process service on a free loopback port, in front of the emptied shards."""
    srv = SessionStoreServer(settings, flushed_shards, clock=clock)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(grace=0)


@pytest.fixture
async def client(server: SessionStoreServer) -> AsyncIterator[AsyncSessionStoreClient]:
    """An async client of the in-process service."""
    async with AsyncSessionStoreClient(f"127.0.0.1:{server.port}", max_attempts=1) as c:
        yield c
