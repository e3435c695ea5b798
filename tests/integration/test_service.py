"""The service's shape: health, reflection, the sync client, and the real `serve` process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from session_store import SessionNotFoundError, SessionStoreClient
from session_store.embedded import free_port, pid_alive
from session_store.server import SERVICE_NAME, SessionStoreServer
from session_store.v1 import test_clock_pb2, test_clock_pb2_grpc


class TestServiceShape:
    """Standard gRPC health and reflection are served."""

    async def test_health_serving(self, server: SessionStoreServer) -> None:
        """Health reports SERVING for the server and for the SessionStore service."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for name in ("", SERVICE_NAME):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))  # type: ignore[attr-defined]  # the stubs lack the generated methods
                assert health_pb2.HealthCheckResponse.SERVING == reply.status

    async def test_reflection_lists_services(self, server: SessionStoreServer) -> None:
        """Reflection lists SessionStore, health and (with a test clock) TestClock."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]  # aio channels work; stubs say sync only
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            names: set[str] = set()
            async for reply in stub.ServerReflectionInfo(iter([request])):  # type: ignore[operator]  # untyped in the stubs
                names |= {s.name for s in reply.list_services_response.service}
        assert {SERVICE_NAME, "grpc.health.v1.Health", "session_store.v1.TestClock"} <= names

    async def test_sync_client(self, server: SessionStoreServer) -> None:
        """The blocking client does what the async one does and raises the same errors."""

        def flow() -> None:  # blocking calls run in a thread: the server needs this event loop
            with SessionStoreClient(f"127.0.0.1:{server.port}") as sync_client:
                created = sync_client.create_user_session("r", "u", notes={"a": "b"})
                assert created == sync_client.get_user_session("r", created.id)
                assert sync_client.remove_user_session("r", created.id) is True
                with pytest.raises(SessionNotFoundError):
                    sync_client.get_user_session("r", created.id)

        await asyncio.to_thread(flow)


def _serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "session_store", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=sink
        )


def _wait_serving(port: int, proc: subprocess.Popen[bytes], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited early"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)  # type: ignore[attr-defined]  # missing in the stubs
            except grpc.RpcError:
                time.sleep(0.1)
                continue
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
    raise AssertionError("server did not become healthy")


@pytest.mark.slow
class TestServeProcess:
    """`python -m session_store serve`, as `make run` starts it."""

    def test_embedded_shards_persist_and_stop_cleanly(self, tmp_path: Path) -> None:
        """The server starts its own shards, exits 0 on SIGTERM and stops them, and a restart finds
        the sessions of the first run."""
        port = free_port()
        env = {
            **os.environ,
            "SESSION_STORE_LISTEN": f"127.0.0.1:{port}",
            "SESSION_STORE_DATA_DIR": str(tmp_path / "data"),
            "SESSION_STORE_GRACE_SECONDS": "1",
            "SESSION_STORE_LOG_JSON": "true",
        }
        env.pop("SESSION_STORE_REDIS_URLS", None)
        log_path = tmp_path / "serve.log"
        first = _serve(env, log_path)
        try:
            _wait_serving(port, first)
            with SessionStoreClient(f"127.0.0.1:{port}") as client:
                session_id = client.create_user_session("r", "u").id
            first.send_signal(signal.SIGTERM)
            assert 0 == first.wait(30)
        finally:
            if first.poll() is None:
                first.kill()
        log = log_path.read_text()
        assert "server_stopped" in log
        pids = [int(p) for p in log.split('"pids": [', 1)[1].split("]", 1)[0].split(",")]
        assert not any(pid_alive(p) for p in pids)

        second = _serve(env, log_path)
        try:
            _wait_serving(port, second)
            with SessionStoreClient(f"127.0.0.1:{port}") as client:
                assert "u" == client.get_user_session("r", session_id).user_id
        finally:
            second.send_signal(signal.SIGINT)
            assert 0 == second.wait(30)

    def test_test_clock_only_with_flag(self, tmp_path: Path) -> None:
        """Without --test-clock the TestClock service does not exist, whatever the environment says."""
        port = free_port()
        env = {
            **os.environ,
            "SESSION_STORE_LISTEN": f"127.0.0.1:{port}",
            "SESSION_STORE_DATA_DIR": str(tmp_path / "data"),
            "SESSION_STORE_EMBEDDED_SHARDS": "1",
            "SESSION_STORE_TEST_CLOCK": "true",
        }
        proc = _serve(env, tmp_path / "serve.log")
        try:
            _wait_serving(port, proc)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = test_clock_pb2_grpc.TestClockStub(channel)
                with pytest.raises(grpc.RpcError) as caught:
                    stub.AdvanceClock(test_clock_pb2.AdvanceClockRequest(seconds=5), timeout=5)
                assert grpc.StatusCode.UNIMPLEMENTED == caught.value.code()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert 0 == proc.wait(30)
