"""The memory guard of one shard: its eviction policy checked at start, creates refused near `maxmemory`.

An evicted key is a session (or a pointer, hint, index or policy) that silently disappears, so at
start every shard's `maxmemory-policy` is read (CONFIG GET, or INFO memory where CONFIG is refused):
`noeviction` is what we want; `volatile-*` starts with a warning (almost every key we write has a
TTL, sessions included, so it is nearly as able to drop sessions as `allkeys-*`, but it spares the
realm policies, counters and the event stream); `allkeys-*` refuses to start unless explicitly allowed.

With `noeviction` a full shard answers OOM to every write that could grow it, touches and logouts
included. The guard keeps headroom instead: a background task reads `INFO memory` every
`poll_seconds` and, once `used_memory` reaches `percent` of `maxmemory`, `check` refuses creates with
`StoreMemoryLowError` (no round trip on the call path: one attribute read) until it falls
`CLEAR_MARGIN_PERCENT` points below. Refreshes,
updates and removals are not checked and keep the headroom for themselves. `maxmemory` 0 (no limit)
or `percent` 0 turns the guard off.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from redis import exceptions as redis_errors

from session_store.errors import PreconditionFailedError, StoreMemoryLowError

log = structlog.get_logger(__name__)

DEFAULT_GUARD_PERCENT = 90.0
DEFAULT_POLL_SECONDS = 1.0
CLEAR_MARGIN_PERCENT = 2.0
"""A tripped guard clears only this many points below its threshold: no flapping on every poll."""
SAFE_POLICY = "noeviction"

Execute = Callable[..., Awaitable[Any]]
"""Runs one Redis command and returns its reply (the shard's `PipelinedClient.execute`)."""


@dataclass(frozen=True)
class MemoryReading:
    """What `INFO memory` said: bytes in use, the limit (0: none) and the eviction policy."""

    used_bytes: int
    max_bytes: int
    policy: str

    def share(self) -> float:
        """`used_bytes` as a percentage of `max_bytes` (0 when there is no limit)."""
        return 100.0 * self.used_bytes / self.max_bytes if self.max_bytes else 0.0


def parse_memory_info(text: str) -> MemoryReading:
    """Parse the reply of `INFO memory`.

    Raises:
        ValueError: `used_memory` or `maxmemory` is missing or not a number.
    """
    fields = dict(
        line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#")
    )
    try:
        return MemoryReading(
            used_bytes=int(fields["used_memory"]),
            max_bytes=int(fields["maxmemory"]),
            policy=fields.get("maxmemory_policy", "").strip(),
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"INFO memory without used_memory/maxmemory: {exc}") from None


def check_eviction_policy(shard: str, policy: str, *, allow_eviction: bool) -> None:
    """Refuse a policy that may evict keys without a TTL; warn about one that evicts keys with one.

    Raises:
        PreconditionFailedError: an `allkeys-*` policy and `allow_eviction` is off.
    """
    if policy == SAFE_POLICY:
        return
    if policy.startswith("allkeys-"):
        if not allow_eviction:
            raise PreconditionFailedError(
                f"shard {shard} has maxmemory-policy {policy}: Redis may evict any key, so sessions, "
                "realm policies and indexes could vanish silently. Set maxmemory-policy noeviction, "
                "or SESSION_STORE_REDIS_ALLOW_EVICTION=true to accept that risk"
            )
        log.warning(
            "eviction_policy_allowed",
            shard=shard,
            policy=policy,
            detail="Redis may evict any key, sessions and realm policies included: use noeviction",
        )
        return
    log.warning(
        "eviction_policy_risky",
        shard=shard,
        policy=policy,
        detail="keys with a TTL (sessions, pointers, hints, indexes) may be evicted at maxmemory: "
        "use noeviction; the memory guard keeps the shard below maxmemory meanwhile",
    )


class MemoryGuard:
    """One shard's eviction-policy check and the cached memory reading that gates creates."""

    def __init__(
        self,
        *,
        percent: float = DEFAULT_GUARD_PERCENT,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        allow_eviction: bool = False,
    ) -> None:
        """Configure; nothing is read until `start`.

        Args:
            percent: refuse creates at or above this share of `maxmemory` (0 < percent < 100; 0: off).
            poll_seconds: how often `INFO memory` is read.
            allow_eviction: start even with an `allkeys-*` eviction policy (with a warning).

        Raises:
            ValueError: a value out of range.
        """
        if not (percent == 0 or 0 < percent < 100) or poll_seconds <= 0:
            raise ValueError("percent must be 0 or between 0 and 100, poll_seconds > 0")
        self.percent = percent
        self.poll_seconds = poll_seconds
        self.allow_eviction = allow_eviction
        self.reading: MemoryReading | None = None
        self.low = False
        self._shard = ""
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def check(self) -> None:
        """Refuse a create while the last reading was at or above the threshold.

        Raises:
            StoreMemoryLowError: the shard is short of memory.
        """
        if self.low:
            reading = self.reading
            share = f"{reading.share():.0f} %" if reading else "most"
            raise StoreMemoryLowError(
                f"shard {self._shard} uses {share} of its maxmemory (limit for creates: "
                f"{self.percent:g} %): new sessions are refused until memory is freed; refresh, "
                "update and logout still work"
            )

    async def start(self, shard: str, execute: Execute) -> None:
        """Check the eviction policy, take a first reading, then poll in the background.

        Where neither CONFIG GET nor INFO is allowed, the policy cannot be checked and the guard stays
        off: both are logged.

        Raises:
            PreconditionFailedError: the eviction policy may drop sessions (see `check_eviction_policy`).
            redis.exceptions.RedisError: the shard failed (a connection problem; retried by the caller).
        """
        self._shard = shard
        reading = await self._read(execute)
        policy = await self._policy(execute, reading)
        if policy is None:
            log.warning(
                "eviction_policy_unknown",
                shard=shard,
                detail="neither CONFIG GET nor INFO is allowed: make sure maxmemory-policy is noeviction",
            )
        else:
            check_eviction_policy(shard, policy, allow_eviction=self.allow_eviction)
        if reading is None:
            log.warning("memory_guard_off", shard=shard, detail="INFO memory is not allowed")
            return
        self.update(reading)
        log.info(
            "shard_memory",
            shard=shard,
            policy=policy,
            used_bytes=reading.used_bytes,
            max_bytes=reading.max_bytes,
            guard_percent=self.percent if reading.max_bytes and self.percent else None,
        )
        # A start still running when `stop` came (another shard failed the startup) starts no poll.
        if self._task is None and not self._stopped:
            self._task = asyncio.create_task(self._poll(execute), name=f"memory-guard-{shard}")

    async def stop(self) -> None:
        """Stop polling, for good."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _read(self, execute: Execute) -> MemoryReading | None:
        """`INFO memory` parsed; None where INFO is refused (an ACL, a renamed command) or incomplete."""
        try:
            return parse_memory_info(str(await execute("INFO", "memory")))
        except (redis_errors.ResponseError, ValueError):
            return None

    async def _policy(self, execute: Execute, reading: MemoryReading | None) -> str | None:
        """CONFIG GET maxmemory-policy; where CONFIG is refused, what INFO memory said."""
        try:
            reply = await execute("CONFIG", "GET", "maxmemory-policy")
        except redis_errors.ResponseError:
            reply = None
        if isinstance(reply, list) and len(reply) == 2:
            return str(reply[1])
        return reading.policy if reading is not None and reading.policy else None

    def update(self, reading: MemoryReading) -> None:
        """Keep a reading (the poll passes each one) and decide from it whether creates are refused.

        Logs when the guard trips or clears, and an eviction policy that changed since the last reading.
        """
        before = self.reading
        self.reading = reading
        threshold = self.percent - CLEAR_MARGIN_PERCENT if self.low else self.percent
        low = bool(self.percent and reading.max_bytes and reading.share() >= threshold)
        if low != self.low:
            self.low = low
            fields = {"shard": self._shard, "used_bytes": reading.used_bytes, "max_bytes": reading.max_bytes}
            if low:
                log.warning("memory_guard_tripped", percent=self.percent, **fields)
            else:
                log.info("memory_guard_cleared", **fields)
        if before is not None and reading.policy != before.policy:
            log.warning("eviction_policy_changed", shard=self._shard, policy=reading.policy)

    async def _poll(self, execute: Execute) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                reading = await self._read(execute)
            except (redis_errors.RedisError, OSError) as exc:
                # The last reading stays: calls to a shard that does not answer fail anyway.
                if not failing:
                    log.warning("memory_poll_failed", shard=self._shard, error=str(exc))
                failing = True
                continue
            failing = False
            if reading is not None:
                self.update(reading)
