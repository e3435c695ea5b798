"""The health-only port (SESSION_STORE_HEALTH_LISTEN): Health alone, sharing the API's health state."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from session_store.config import Settings, ShardSettings
from session_store.model.clock import TestClock
from session_store.server import SERVICE_NAME, SessionStoreServer
from session_store.v1 import session_store_pb2, session_store_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def health_server(
    flushed_shards: tuple[ShardSettings, ...], clock: TestClock, settings: Settings
) -> AsyncIterator[SessionStoreServer]:
    """An in-process service with its health-only port on a free loopback port (stopped by the test)."""
    srv = SessionStoreServer(
        dataclasses.replace(settings, health_listen="127.0.0.1:0"), flushed_shards, clock=clock
    )
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(grace=0)  # a second stop after the test's own is harmless


async def check(port: int, service: str = "") -> health_pb2.HealthCheckResponse:
    """One Health.Check on 127.0.0.1:`port`, with a short deadline."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply: health_pb2.HealthCheckResponse = await stub.Check(  # type: ignore[attr-defined]  # the stubs lack the generated methods
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return reply


async def read_until_closed(
    watch: grpc.aio.UnaryStreamCall[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse],
    seen: list[int],
) -> bool:
    """Append each status a Health.Watch stream sends; True when it ends with an error (port closed)."""
    for _ in range(10):  # bounded: a stopped server ends the stream after at most a couple of replies
        try:
            reply = await asyncio.wait_for(watch.read(), timeout=5)
        except grpc.aio.AioRpcError:
            return True
        if not isinstance(reply, health_pb2.HealthCheckResponse):  # grpc.aio.EOF: ended cleanly
            return False
        seen.append(reply.status)
    return False


class TestHealthPort:
    """A separate port serves only grpc.health.v1.Health, from the API's own health servicer."""

    async def test_health_port_is_separate_and_serving(self, health_server: SessionStoreServer) -> None:
        """The health port is bound apart from the API port and reports SERVING for the server and API."""
        assert 0 != health_server.health_port
        assert health_server.port != health_server.health_port
        for name in ("", SERVICE_NAME):
            assert SERVING == (await check(health_server.health_port, name)).status

    async def test_session_store_rpcs_are_not_served(self, health_server: SessionStoreServer) -> None:
        """A SessionStore RPC sent to the health port is UNIMPLEMENTED; the API port answers it."""
        request = session_store_pb2.GetUserSessionRequest(realm="r", session_id="missing")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_server.health_port}") as channel:
            stub = session_store_pb2_grpc.SessionStoreStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetUserSession(request, timeout=2)
        assert grpc.StatusCode.UNIMPLEMENTED == caught.value.code()

        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_server.port}") as channel:
            stub = session_store_pb2_grpc.SessionStoreStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetUserSession(request, timeout=2)
        assert grpc.StatusCode.NOT_FOUND == caught.value.code()

    async def test_stop_reports_not_serving_then_closes_the_port(
        self, health_server: SessionStoreServer
    ) -> None:
        """On stop a watcher of the health port sees NOT_SERVING, then the port refuses calls."""
        port = health_server.health_port
        seen: list[int] = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)  # type: ignore[attr-defined]  # the stubs lack the generated methods
            first = await watch.read()
            seen.append(first.status)

            await health_server.stop(grace=0)
            ended = await read_until_closed(watch, seen)

        assert ([SERVING, NOT_SERVING], True) == (seen, ended)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await check(port)
        assert grpc.StatusCode.UNAVAILABLE == caught.value.code()

    async def test_no_health_port_by_default(self, server: SessionStoreServer) -> None:
        """Without SESSION_STORE_HEALTH_LISTEN no second server exists; health stays on the API port."""
        assert (None, 0) == (server.health_server, server.health_port)
        assert SERVING == (await check(server.port)).status
