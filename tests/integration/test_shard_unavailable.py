"""What a caller sees of a shard that is down: UNAVAILABLE with google.rpc.RetryInfo (and the reason
SHARD_UNAVAILABLE) on that shard's partitions only, while calls on the other shards keep succeeding,
whether the shard crashed (SIGKILL) or hangs (SIGSTOP)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from session_store import AsyncSessionStoreClient, ShardUnavailableError
from session_store.config import RedisSettings, Settings, ShardSettings
from session_store.embedded import EmbeddedShards, RedisProcess
from session_store.model.clock import TestClock
from session_store.model.ids import user_partition
from session_store.server import SessionStoreServer
from session_store.v1 import session_store_pb2 as pb
from session_store.v1 import session_store_pb2_grpc as pb_grpc

REALM = "r"
SOCKET_TIMEOUT_SECONDS = 0.5


@pytest.fixture
def own_shards(tmp_path: Path) -> Iterator[list[RedisProcess]]:
    """Three shards of this test's own, so one can be killed or stopped; resumed and stopped by PID."""
    shards = EmbeddedShards(tmp_path, 3, appendonly=False)
    started = shards.start()
    try:
        yield started
    finally:
        for proc in started:
            if proc.process.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        shards.stop()


@pytest.fixture
async def service(own_shards: list[RedisProcess]) -> AsyncIterator[SessionStoreServer]:
    """The service in front of the three shards, with a short Redis timeout (and the default policy
    cache: a realm policy is read from every shard, so a refresh waits for a hung one)."""
    settings = Settings(
        listen="127.0.0.1:0",
        grace_seconds=0.2,
        policy_refresh_seconds=0.05,  # refreshes fall inside the hang: they must not wait for it
        redis=RedisSettings(timeout_seconds=SOCKET_TIMEOUT_SECONDS),
    )
    shards = tuple(ShardSettings(name=p.name, url=p.url) for p in own_shards)
    server = SessionStoreServer(settings, shards, clock=TestClock())
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


def _user_on(server: SessionStoreServer, shard: str) -> str:
    """A user id whose partition the named shard owns."""
    for i in range(10_000):
        user = f"user-{i}"
        if server.router.shard_for(user_partition(REALM, user)).name == shard:
            return user
    raise AssertionError("no user found for the shard")  # pragma: no cover


async def _raw_status(port: int, session_id: str) -> tuple[grpc.StatusCode, list[str], float]:
    """GetUserSession over a bare stub: the status code, the detail types, the RetryInfo delay (s)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.SessionStoreStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetUserSession(pb.GetUserSessionRequest(realm=REALM, session_id=session_id))
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]  # AioRpcError is a Call at run time
    assert status is not None
    kinds: list[str] = []
    delay = 0.0
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            kinds.append(f"ErrorInfo {info.reason}")
        elif detail.Unpack(retry):
            kinds.append("RetryInfo")
            delay = retry.retry_delay.ToTimedelta().total_seconds()
    return caught.value.code(), kinds, delay


class TestShardDownStatus:
    """A down shard's partitions answer UNAVAILABLE with retry information; the others serve."""

    async def test_crashed_shard(self, service: SessionStoreServer, own_shards: list[RedisProcess]) -> None:
        """After SIGKILL, its partitions get UNAVAILABLE, SHARD_UNAVAILABLE and a RetryInfo delay at
        once (the connection is refused); the other shards' partitions keep serving."""
        victim = own_shards[1]
        async with AsyncSessionStoreClient(f"127.0.0.1:{service.port}", max_attempts=1) as client:
            doomed = await client.create_user_session(REALM, _user_on(service, victim.name))
            healthy = [
                await client.create_user_session(REALM, _user_on(service, p.name))
                for p in own_shards
                if p is not victim
            ]
            victim.kill()
            code, details, delay = await _raw_status(service.port, doomed.id)
            assert grpc.StatusCode.UNAVAILABLE == code
            assert ["ErrorInfo SHARD_UNAVAILABLE", "RetryInfo"] == details
            assert 0 < delay <= 1
            with pytest.raises(ShardUnavailableError):
                await client.touch_user_session(REALM, doomed.id)
            for session in healthy:
                assert session.id == (await client.touch_user_session(REALM, session.id)).id
                assert session.user_id == (await client.get_user_session(REALM, session.id)).user_id

    async def test_hung_shard(self, service: SessionStoreServer, own_shards: list[RedisProcess]) -> None:
        """While a shard hangs (SIGSTOP), its calls fail UNAVAILABLE within about the Redis timeout,
        and calls on the other shards, made while those hang, keep succeeding quickly."""
        victim = own_shards[2]
        async with AsyncSessionStoreClient(f"127.0.0.1:{service.port}", max_attempts=1) as client:
            doomed = await client.create_user_session(REALM, _user_on(service, victim.name))
            healthy = [
                await client.create_user_session(REALM, _user_on(service, p.name))
                for p in own_shards
                if p is not victim
            ]
            os.kill(victim.pid, signal.SIGSTOP)
            started = time.monotonic()
            hanging = asyncio.create_task(_raw_status(service.port, doomed.id))
            served: list[float] = []
            while not hanging.done():
                call = time.monotonic()
                for session in healthy:
                    assert session.id == (await client.touch_user_session(REALM, session.id)).id
                served.append(time.monotonic() - call)
                await asyncio.sleep(0.01)
            code, details, delay = await hanging
            waited = time.monotonic() - started
            assert grpc.StatusCode.UNAVAILABLE == code
            assert ["ErrorInfo SHARD_UNAVAILABLE", "RetryInfo"] == details
            assert 0 < delay <= 1
            # The watchdog notices a late reply within 1.25 timeouts; the rest is slack for a busy host.
            assert SOCKET_TIMEOUT_SECONDS <= waited < 4 * SOCKET_TIMEOUT_SECONDS
            assert len(served) >= 3  # the other shards answered many times while the victim hung
            # Typically in milliseconds; a realm-policy refresh that falls in the hang does not wait
            # for the hung shard beyond READ_GRACE_SECONDS, so no call waits anything like a timeout.
            assert sorted(served)[len(served) // 2] < SOCKET_TIMEOUT_SECONDS / 5
            assert max(served) < SOCKET_TIMEOUT_SECONDS * 0.8
            os.kill(victim.pid, signal.SIGCONT)
            assert doomed.id == (await client.touch_user_session(REALM, doomed.id)).id
