"""The auto-pipelined Redis connection against a real server: order, errors, stalls, restarts."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import exceptions as redis_errors

from session_store.embedded import RedisProcess, start_redis
from session_store.storage._resp import PipelinedClient


@pytest.fixture
def lone_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A server of this test's own, so it can be stopped, stalled and restarted."""
    proc = start_redis("resp", tmp_path, appendonly=False)
    try:
        yield proc
    finally:
        if proc.process.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        proc.stop()


class TestPipelinedClient:
    """PipelinedClient."""

    async def test_replies_match_callers_under_concurrency(self, lone_redis: RedisProcess) -> None:
        """Thousands of concurrent calls in one loop turn each get their own reply."""
        client = PipelinedClient(lone_redis.url, timeout=5, connect_timeout=1)
        try:
            await asyncio.gather(*(client.execute("SET", f"k{i}", i) for i in range(2000)))
            values = await asyncio.gather(*(client.execute("GET", f"k{i}") for i in range(2000)))
            assert [str(i) for i in range(2000)] == values
        finally:
            await client.close()

    async def test_error_replies(self, lone_redis: RedisProcess) -> None:
        """Error replies become redis-py exceptions (NOSCRIPT its own) and the connection stays usable."""
        client = PipelinedClient(lone_redis.url, timeout=5, connect_timeout=1)
        try:
            with pytest.raises(redis_errors.NoScriptError):
                await client.execute("EVALSHA", "0" * 40, 0)
            with pytest.raises(redis_errors.ResponseError, match=r"^SS_TEST boom"):
                await client.execute("EVAL", "error({err='SS_TEST boom'})", 0)
            assert "PONG" == await client.execute("PING")
        finally:
            await client.close()

    async def test_stalled_server_times_out_then_recovers(self, lone_redis: RedisProcess) -> None:
        """A stalled server fails waiting calls with TimeoutError; after it resumes, calls succeed."""
        client = PipelinedClient(lone_redis.url, timeout=0.3, connect_timeout=1)
        try:
            assert "PONG" == await client.execute("PING")
            os.kill(lone_redis.pid, signal.SIGSTOP)
            with pytest.raises(redis_errors.TimeoutError):
                await client.execute("PING")
            os.kill(lone_redis.pid, signal.SIGCONT)
            assert "PONG" == await client.execute("PING")
        finally:
            await client.close()

    async def test_reconnects_after_restart(self, lone_redis: RedisProcess, tmp_path: Path) -> None:
        """A restarted server is reconnected to on the next call; calls while it is down fail fast."""
        client = PipelinedClient(lone_redis.url, timeout=2, connect_timeout=0.5)
        try:
            await client.execute("SET", "a", "1")
            lone_redis.kill()
            with pytest.raises(redis_errors.ConnectionError):
                await client.execute("GET", "a")
            restarted = start_redis("resp", tmp_path, port=lone_redis.port, appendonly=False)
            try:
                assert "PONG" == await client.execute("PING")
            finally:
                restarted.stop()
        finally:
            await client.close()

    async def test_cancelled_caller_does_not_shift_replies(self, lone_redis: RedisProcess) -> None:
        """A caller cancelled while waiting leaves the next callers' replies in place."""
        client = PipelinedClient(lone_redis.url, timeout=5, connect_timeout=1)
        try:
            await client.execute("SET", "a", "A")
            await client.execute("SET", "b", "B")
            slow = asyncio.create_task(
                client.execute("EVAL", "local x=0 for i=1,3000000 do x=x+i end return x", 0)
            )
            await asyncio.sleep(0.005)
            slow.cancel()
            assert ["A", "B"] == list(
                await asyncio.gather(client.execute("GET", "a"), client.execute("GET", "b"))
            )
        finally:
            await client.close()

    async def test_selects_database(self, lone_redis: RedisProcess) -> None:
        """The /db of the URL is selected on connect."""
        client = PipelinedClient(lone_redis.url.rsplit("/", 1)[0] + "/3", timeout=5, connect_timeout=1)
        try:
            await client.execute("SET", "db3", "x")
            assert [3] == [
                int(x) for x in (await client.execute("CLIENT", "INFO")).split("db=")[1].split(" ")[:1]
            ]
        finally:
            await client.close()
