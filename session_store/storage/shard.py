"""One Redis shard: its connection pool, its loaded scripts, and typed script calls."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from session_store.errors import ShardUnavailableError
from session_store.storage._errors import translate
from session_store.storage._scripts import load_scripts

log = structlog.get_logger(__name__)

KeyOrArg = str | int | float


class Shard:
    """A connection pool to one Redis server with every script loaded on it.

    Commands are not retried at this level: a script whose reply was lost may have run, and only
    the caller knows whether running it twice is safe.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        max_connections: int = 64,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
    ) -> None:
        """Create the pool (no connection is made until `connect`)."""
        self.name = name
        self.url = url
        # A blocking pool: a burst beyond max_connections waits for a free connection (up to the
        # socket timeout) instead of failing at once with "Too many connections".
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            health_check_interval=0,
        )
        self._pool = pool
        self.redis: Redis = Redis(connection_pool=pool)
        self._scripts = load_scripts()

    async def connect(self, *, attempts: int = 10, delay: float = 0.5) -> None:
        """Ping the shard with bounded retries, then load every script on it.

        Raises:
            ShardUnavailableError: the shard did not answer within the attempts.
        """
        for attempt in range(1, attempts + 1):
            try:
                await self.redis.ping()
                await self.load_scripts()
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                log.warning("shard_not_ready", shard=self.name, attempt=attempt, error=str(exc))
                if attempt == attempts:
                    raise ShardUnavailableError(
                        f"shard {self.name} did not answer after {attempts} attempts"
                    ) from exc
                await asyncio.sleep(delay)
            else:
                return

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every script (idempotent: Redis names them by SHA1)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for script in self._scripts.values():
                pipe.script_load(script.text)
            await pipe.execute()

    async def call(self, script: str, keys: Sequence[str], args: Sequence[KeyOrArg]) -> Any:
        """Run a script by SHA; reload scripts once on NOSCRIPT (a restarted or flushed shard).

        Raises:
            SessionStoreError: a subclass translated from the script's error or a Redis failure.
            RedirectError, StaleHintError: internal signals for the storage layer.
        """
        sha = self._scripts[script].sha
        try:
            try:
                return await self.redis.evalsha(sha, len(keys), *keys, *args)
            except redis_errors.NoScriptError:
                await self.load_scripts()
                return await self.redis.evalsha(sha, len(keys), *keys, *args)
        except redis_errors.RedisError as exc:
            raise translate(exc, self.name) from exc
        except OSError as exc:
            raise translate(exc, self.name) from exc

    async def command(self, *args: KeyOrArg) -> Any:
        """Run one plain read command (no retries), translating failures."""
        try:
            return await self.redis.execute_command(*args)  # type: ignore[no-untyped-call]
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc, self.name) from exc

    async def pipeline(self, commands: Sequence[Sequence[KeyOrArg]]) -> list[Any]:
        """Run plain read commands in one round trip, translating failures."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for cmd in commands:
                    pipe.execute_command(*cmd)
                return list(await pipe.execute())
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc, self.name) from exc

    async def close(self) -> None:
        """Close the client and every pooled connection."""
        await self.redis.aclose()
        await self._pool.disconnect()
