"""One Redis shard: its connections, its loaded scripts, and script calls with errors translated."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog
from redis import exceptions as redis_errors

from session_store.errors import ShardUnavailableError
from session_store.model.single_use import REVOKED_KEY_SUFFIX
from session_store.storage._errors import translate
from session_store.storage._resp import Arg, PipelinedClient, RedisAccess
from session_store.storage._scripts import load_scripts
from session_store.storage.keys import GUARD_KEYS
from session_store.storage.memory import MemoryGuard

log = structlog.get_logger(__name__)

KeyOrArg = str | int | float

_NOT_READY_YET = ("LOADING", "BUSY", "MASTERDOWN")
"""Error replies at startup that go away by themselves (loading the AOF, a long script, a failover)."""

GUARDED_SCRIPTS = frozenset(
    {
        "create_user_session",
        "claim_session_id",
        "add_lookup_hint",
        "create_offline_session",
        "attach_client_session",
        "get_or_create_root_auth_session",
        "create_auth_session",
        "put_single_use_object",
    }
)
"""The creates: scripts that start a login or store new data for one, refused by the memory guard on a
shard short of memory (docs/security.md, "Redis access"). One exception: `put_single_use_object` of a
revoked-token marker (Keycloak's `.revoked` keys), since a revocation must work like a logout. A
refused get-or-create of a root authentication session falls back to reading it (repository)."""

CallObserver = Callable[[str, str, float, str | None], None]
"""Told of every finished shard call: (shard, script or "command"/"pipeline", seconds, error kind).

The error kind is None when the shard answered (a script's own error reply such as SS_NOT_FOUND is an
answer), else a short word: "connection", "timeout", a Redis error code in lower case ("oom",
"readonly", "loading", "masterdown", "busy", "noauth", "noperm") or "unexpected". It must not raise
or block: it runs on the event loop after each call. Keeping it a plain callable keeps metrics out
of `storage/`.
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
        if code in (
            "OOM", "READONLY", "LOADING", "MASTERDOWN", "BUSY", "NOAUTH", "NOPERM",
            "TRYAGAIN", "MOVED", "ASK", "CLUSTERDOWN",
        ):  # fmt: skip
            return code.lower()
    return "unexpected"


class DedicatedLink(Protocol):
    """A connection of one caller alone (blocking reads): `_resp.DedicatedConnection` or a group's."""

    @property
    def closed(self) -> bool:
        """Whether it was closed."""

    async def execute(self, *args: Arg) -> Any:
        """Send one command and await its reply."""

    def close(self) -> None:
        """Close it."""


class ShardLink(Protocol):
    """How a shard reaches its server: a `PipelinedClient`, or a Redis Cluster group's `GroupClient`."""

    @property
    def db(self) -> int:
        """The database number."""

    async def execute(self, *args: Arg) -> Any:
        """Send one command (auto-pipelined) and await its reply."""

    async def dedicated(self, *, reply_timeout: float, raw: bool = False) -> DedicatedLink:
        """A connection of its own."""

    def subscribe(self, channel: str) -> AsyncGenerator[str, None]:
        """Messages of a channel, on a connection of its own."""

    async def close(self) -> None:
        """Close every connection."""


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
        access: RedisAccess | None = None,
        guard: MemoryGuard | None = None,
        link: ShardLink | None = None,
        partitions: Sequence[int] | None = None,
    ) -> None:
        """Prepare the connections (none is opened until `connect` or the first call).

        Args:
            observer: told of every finished call (metrics); see `CallObserver`.
            access: TLS and credentials of every connection to the shard.
            guard: checks the eviction policy at `connect` and refuses creates near `maxmemory`;
                None checks neither.
            link: how to reach the server, instead of auto-pipelined connections to `url` (a
                Redis Cluster group: storage/cluster.py).
            partitions: the partitions this shard owns by construction, never moved by us (a Redis
                Cluster group); None for a shard placed by the stored partition map.
        """
        self.name = name
        self.url = url
        self.observer = observer
        self.guard = guard
        self.client: ShardLink = link or PipelinedClient(
            url,
            timeout=socket_timeout,
            connect_timeout=connect_timeout,
            connections=connections,
            access=access,
        )
        self.fixed_partitions = tuple(partitions) if partitions is not None else None
        self._scripts = load_scripts()

    async def connect(self, *, attempts: int = 10, delay: float = 0.5) -> None:
        """Ping the shard with bounded retries, load every script on it, and start its memory guard.

        Raises:
            ShardUnavailableError: the shard did not answer within the attempts, refused our
                credentials, or refused a command we need (an ACL without it).
            PreconditionFailedError: the shard's eviction policy may drop sessions (see `MemoryGuard`).
        """
        for attempt in range(1, attempts + 1):
            error: Exception
            try:
                await self.client.execute("PING")
                await self.load_scripts()
                if self.guard is not None:
                    await self.guard.start(self.name, self.client.execute)
            except redis_errors.AuthenticationError as exc:
                # Retrying cannot help; the message names the user, never the password.
                raise ShardUnavailableError(f"shard {self.name}: {exc}") from exc
            except redis_errors.ResponseError as exc:
                if not str(exc).startswith(_NOT_READY_YET):
                    raise ShardUnavailableError(
                        f"shard {self.name} refused a startup command: {exc}"
                    ) from exc
                error = exc
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                error = exc
            else:
                return
            log.warning("shard_not_ready", shard=self.name, attempt=attempt, error=str(error))
            if attempt == attempts:
                raise ShardUnavailableError(
                    f"shard {self.name} did not answer after {attempts} attempts: {error}"
                ) from error
            await asyncio.sleep(delay)

    def ensure_room(self) -> None:
        """Refuse a create while the memory guard finds the shard short of memory (no I/O).

        Raises:
            StoreMemoryLowError: at or above the guard's share of `maxmemory` at the last reading.
        """
        if self.guard is not None:
            self.guard.check()

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every script (idempotent: Redis names them by SHA1), in one batch."""
        await asyncio.gather(
            *(self.client.execute("SCRIPT", "LOAD", script.text) for script in self._scripts.values())
        )

    async def call(self, script: str, keys: Sequence[str], args: Sequence[KeyOrArg]) -> Any:
        """Run a script by SHA; reload scripts once on NOSCRIPT (a restarted or flushed shard).

        Raises:
            SessionStoreError: a subclass translated from the script's error or a Redis failure;
                PartitionMovedError / PartitionFrozenError from the ownership guard.
            RedirectError, StaleHintError, NoMapError: internal signals for the storage layer.
        """
        if script in GUARDED_SCRIPTS and not (
            script == "put_single_use_object" and keys[0].endswith(REVOKED_KEY_SUFFIX)
        ):
            self.ensure_room()
        sha = self._scripts[script].sha
        # The prelude's ownership guard takes these two back off KEYS (see _prelude.lua).
        return await self._observed(script, self._evalsha(sha, [*keys, *GUARD_KEYS], args))

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
        """Stop the memory guard and close every connection."""
        if self.guard is not None:
            await self.guard.stop()
        await self.client.close()
