"""Graceful rollout: two service processes behind one round-robin client, SIGTERM to one under load.

The numbers this test prints (calls, retries, max latency around the SIGTERM) are recorded in
docs/operations.md ("Rolling restarts").
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from session_store.client import AsyncSessionStoreClient
from session_store.client._base import backoff
from session_store.config import ShardSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

GRACE_SECONDS = 5
SHUTDOWN_DELAY_SECONDS = 1
SERVICE_CONFIG = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
)
"""Round robin over the two services, skipping a backend whose health is not SERVING."""
LOAD_SECONDS = 5.0
SIGTERM_AFTER_SECONDS = 2.0
WORKERS = 16
REALM = "rollout"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_serving(port: int, proc: subprocess.Popen[bytes], deadline_seconds: float = 15.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"service on {port} exited with {proc.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)  # type: ignore[attr-defined]  # the stubs lack the generated methods
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"service on {port} not SERVING within {deadline_seconds} s")


@pytest.fixture
def two_services(
    flushed_shards: tuple[ShardSettings, ...], tmp_path: Path
) -> Iterator[tuple[list[int], list[subprocess.Popen[bytes]]]]:
    """Two `python -m session_store serve` processes on free loopback ports, stopped by PID at the end."""
    ports = [_free_port(), _free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, port in enumerate(ports):
            env = {
                **os.environ,
                "SESSION_STORE_REDIS_URLS": ",".join(f"{s.name}={s.url}" for s in flushed_shards),
                "SESSION_STORE_LISTEN": f"127.0.0.1:{port}",
                "SESSION_STORE_GRACE_SECONDS": str(GRACE_SECONDS),
                "SESSION_STORE_SHUTDOWN_DELAY_SECONDS": str(SHUTDOWN_DELAY_SECONDS),
                "SESSION_STORE_LOG_JSON": "true",
                "SESSION_STORE_LOG_LEVEL": "info",
            }
            log = (tmp_path / f"service-{i}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "session_store", "serve"], env=env, stdout=log, stderr=log
                )
            )
            log.close()
        for port, proc in zip(ports, procs, strict=True):
            _wait_serving(port, proc)
        yield ports, procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=GRACE_SECONDS + 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@dataclass
class LoadRecord:
    """What the load loop saw."""

    calls: dict[str, int] = field(default_factory=lambda: {"create": 0, "touch": 0, "get": 0})
    failures: list[tuple[str, str]] = field(default_factory=list)
    latencies_after_sigterm: list[float] = field(default_factory=list)
    max_latency: float = 0.0


class TestGracefulRollout:
    async def test_sigterm_to_one_of_two_services_under_load_fails_no_call(
        self,
        two_services: tuple[list[int], list[subprocess.Popen[bytes]]],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Every touch and get succeeds while one of two services drains and exits on SIGTERM."""
        ports, procs = two_services
        retries = 0

        def counting_backoff(attempt: int) -> float:
            nonlocal retries
            retries += 1  # the client calls backoff exactly once before each retry
            return backoff(attempt)

        monkeypatch.setattr("session_store.client.aio.backoff", counting_backoff)
        record = LoadRecord()
        target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
        async with AsyncSessionStoreClient(
            target, channel_options=[("grpc.service_config", SERVICE_CONFIG)]
        ) as store:
            sessions = [(await store.create_user_session(REALM, f"seed-{i}")).id for i in range(WORKERS)]
            loop = asyncio.get_running_loop()
            start = loop.time()
            stop_at = start + LOAD_SECONDS
            sigterm_at = start + SIGTERM_AFTER_SECONDS

            async def worker(n: int) -> None:
                step = 0
                while loop.time() < stop_at:
                    step += 1
                    kind = "create" if step % 5 == 0 else ("touch" if step % 2 else "get")
                    began = loop.time()
                    try:
                        if kind == "create":
                            sessions[n] = (await store.create_user_session(REALM, f"user-{n}-{step}")).id
                        elif kind == "touch":
                            await store.touch_user_session(REALM, sessions[n])
                        else:
                            await store.get_user_session(REALM, sessions[n])
                    except Exception as exc:
                        record.failures.append((kind, repr(exc)))
                    ended = loop.time()
                    record.calls[kind] += 1
                    record.max_latency = max(record.max_latency, ended - began)
                    if began >= sigterm_at:
                        record.latencies_after_sigterm.append(ended - began)

            async def terminate() -> None:
                await asyncio.sleep(SIGTERM_AFTER_SECONDS)
                procs[0].send_signal(signal.SIGTERM)

            await asyncio.gather(terminate(), *(worker(n) for n in range(WORKERS)))
        exit_code = await asyncio.to_thread(procs[0].wait, GRACE_SECONDS + 5)
        after = sorted(record.latencies_after_sigterm)
        print(  # the numbers docs/operations.md quotes
            f"\nrollout: calls={record.calls} total={sum(record.calls.values())} retries={retries} "
            f"failures={len(record.failures)} max_latency_ms={record.max_latency * 1000:.1f} "
            f"after_sigterm_calls={len(after)} "
            f"after_sigterm_p99_ms={after[int(len(after) * 0.99)] * 1000 if after else 0:.1f} "
            f"exit_code={exit_code}"
        )
        # Creates are not retried (not idempotent), so they pass only because no call reaches the
        # stopping node once it stops accepting: the client's health checking moved every new call
        # to the other node during the shutdown delay.
        assert [] == record.failures
        assert 0 == exit_code
        assert procs[1].poll() is None  # the survivor served every call after the SIGTERM
        assert len(after) > 100
