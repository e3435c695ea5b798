"""Fixtures: real redis-server processes (started by session_store.embedded, as `make run` does),
an in-process grpc.aio server on 127.0.0.1:0 with a test clock, and clients."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from session_store.client import AsyncSessionStoreClient
from session_store.config import Settings, ShardSettings
from session_store.embedded import EmbeddedCluster, EmbeddedShards, start_cluster
from session_store.model.clock import TestClock
from session_store.server import SessionStoreServer
from tests.backends import BACKENDS, CLUSTER, STANDALONE, flush_all

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


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[EmbeddedCluster]:
    """A real 3-primary Redis Cluster for the whole run (the cluster backend), stopped by PID at the end."""
    with tempfile.TemporaryDirectory(prefix="session-store-cluster-") as root:
        cluster = start_cluster(Path(root), 3, appendonly=False)
        try:
            yield cluster
        finally:
            cluster.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_backends` (tests/backends.py) that use a backend run on each."""
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_backends"):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """Which storage backend the test runs on: standalone unless marked `both_backends`."""
    return str(getattr(request, "param", STANDALONE))


@pytest.fixture
def backend_shards(backend: str, request: pytest.FixtureRequest) -> tuple[ShardSettings, ...]:
    """The shared shards of the test's backend (not emptied): the three standalone shards, or the
    Redis Cluster as one `redis+cluster://` entry."""
    if backend == CLUSTER:
        cluster: EmbeddedCluster = request.getfixturevalue("redis_cluster")
        return (ShardSettings(name="cluster", url=cluster.url),)
    shards: tuple[ShardSettings, ...] = request.getfixturevalue("redis_shards")
    return shards


@pytest.fixture
def flushed_shards(backend_shards: tuple[ShardSettings, ...]) -> tuple[ShardSettings, ...]:
    """The shards of the test's backend, emptied before the test."""
    flush_all(backend_shards)
    return backend_shards


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
