"""One Redis shard: its connections, its loaded scripts, and script calls with errors translated."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from redis import exceptions as redis_errors

from session_store.errors import ShardUnavailableError
from session_store.storage._errors import translate
from session_store.storage._resp import PipelinedClient
from session_store.storage._scripts import load_scripts

log = structlog.get_logger(__name__)

KeyOrArg = str | int | float

CallObserver = Callable[[str, str, float, str | None], None]
"""Told of every finished shard call: (shard, script or "command"/"pipeline", seconds, error kind).

The error kind is None when the shard answered (a script's own error reply such as SS_NOT_FOUND is an
answer), else a short word: "connection", "timeout", a Redis error code in lower case ("oom",
"readonly", "loading", "masterdown", "busy") or "unexpected". It must not raise or block: it runs
on the event loop after each call. Keeping it a plain callable keeps metrics out of `storage/`.
"""


def error_kind(exc: BaseException) -> str | None:
    """The observer's error kind of a redis-py failure; None for a script's own error reply."""
    if isinstance(exc, redis_errors.TimeoutError):
        return "timeout"
    if isinstance(exc, redis_errors.ConnectionError | OSError):
        return "connection"
    if isinstance(exc, redis_errors.ResponseError):
        code = str(exc).split(" ", 1)[0]
        if code.startswith("SS_"):
            return None
        if code in ("OOM", "READONLY", "LOADING", "MASTERDOWN", "BUSY"):
            return code.lower()
    return "unexpected"


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
        observer: CallObserver | None = None,
    ) -> None:
        """Prepare the connections (none is opened until `connect` or the first call).

        Args:
            observer: told of every finished call (metrics); see `CallObserver`.
        """
        self.name = name
        self.url = url
        self.observer = observer
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
        return await self._observed(script, self._evalsha(sha, keys, args))

    async def _evalsha(self, sha: str, keys: Sequence[str], args: Sequence[KeyOrArg]) -> Any:
        try:
            return await self.client.execute("EVALSHA", sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            await self.load_scripts()
            return await self.client.execute("EVALSHA", sha, len(keys), *keys, *args)

    async def _observed(self, operation: str, call: Awaitable[Any]) -> Any:
        """Await `call`, tell the observer how long it took and how it failed, translate failures."""
        started = time.perf_counter()
        try:
            result = await call
        except (redis_errors.RedisError, OSError) as exc:
            if self.observer is not None:
                self.observer(self.name, operation, time.perf_counter() - started, error_kind(exc))
            raise translate(exc, self.name) from exc
        if self.observer is not None:
            self.observer(self.name, operation, time.perf_counter() - started, None)
        return result

    async def command(self, *args: KeyOrArg) -> Any:
        """Run one plain command (no retries), translating failures."""
        return await self._observed("command", self.client.execute(*args))

    async def pipeline(self, commands: Sequence[Sequence[KeyOrArg]]) -> list[Any]:
        """Run plain commands together (they leave in one write; not a transaction), translating failures."""

        async def together() -> list[Any]:
            return list(await asyncio.gather(*(self.client.execute(*cmd) for cmd in commands)))

        result: list[Any] = await self._observed("pipeline", together())
        return result

    async def close(self) -> None:
        """Close every connection."""
        await self.client.close()
