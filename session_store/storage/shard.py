"""One Redis shard: its connections, its loaded scripts, and script calls with errors translated."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from redis import exceptions as redis_errors

from session_store.errors import ShardUnavailableError
from session_store.storage._errors import translate
from session_store.storage._resp import PipelinedClient
from session_store.storage._scripts import load_scripts

log = structlog.get_logger(__name__)

KeyOrArg = str | int | float


class Shard:
    """One Redis server with every script loaded on it, reached through auto-pipelined connections.

    Commands are not retried at this level: a script whose reply was lost may have run, and only
    the caller knows whether running it twice is safe.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        connections: int = 2,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
    ) -> None:
        """Prepare the connections (none is opened until `connect` or the first call)."""
        self.name = name
        self.url = url
        self.client = PipelinedClient(
            url, timeout=socket_timeout, connect_timeout=connect_timeout, connections=connections
        )
        self._scripts = load_scripts()

    async def connect(self, *, attempts: int = 10, delay: float = 0.5) -> None:
        """Ping the shard with bounded retries, then load every script on it.

        Raises:
            ShardUnavailableError: the shard did not answer within the attempts.
        """
        for attempt in range(1, attempts + 1):
            try:
                await self.client.execute("PING")
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
        """SCRIPT LOAD every script (idempotent: Redis names them by SHA1), in one batch."""
        await asyncio.gather(
            *(self.client.execute("SCRIPT", "LOAD", script.text) for script in self._scripts.values())
        )

    async def call(self, script: str, keys: Sequence[str], args: Sequence[KeyOrArg]) -> Any:
        """Run a script by SHA; reload scripts once on NOSCRIPT (a restarted or flushed shard).

        Raises:
            SessionStoreError: a subclass translated from the script's error or a Redis failure.
            RedirectError, StaleHintError: internal signals for the storage layer.
        """
        sha = self._scripts[script].sha
        try:
            try:
                return await self.client.execute("EVALSHA", sha, len(keys), *keys, *args)
            except redis_errors.NoScriptError:
                await self.load_scripts()
                return await self.client.execute("EVALSHA", sha, len(keys), *keys, *args)
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc, self.name) from exc

    async def command(self, *args: KeyOrArg) -> Any:
        """Run one plain read command (no retries), translating failures."""
        try:
            return await self.client.execute(*args)
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc, self.name) from exc

    async def pipeline(self, commands: Sequence[Sequence[KeyOrArg]]) -> list[Any]:
        """Run plain read commands together (they leave in one write), translating failures."""
        try:
            return list(await asyncio.gather(*(self.client.execute(*cmd) for cmd in commands)))
        except (redis_errors.RedisError, OSError) as exc:
            raise translate(exc, self.name) from exc

    async def close(self) -> None:
        """Close every connection."""
        await self.client.close()
