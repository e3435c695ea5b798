"""The expiry side of the event pipeline in Redis: claiming due partitions, ending their sessions,
trimming the streams, and the per-shard numbers the pipeline's metrics show.

Every script that begins, changes or ends a session keeps its partition's expiry index (see
storage/keys.py and the events section of scripts/_prelude.lua); this module only drives the calls
that end sessions by their deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from session_store.model.clock import Clock
from session_store.storage import keys
from session_store.storage.shard import Shard

SWEEP_BATCH = 256
"""Most sessions one expire_sessions call ends: bounds how long one script call holds its shard."""


@dataclass(frozen=True)
class SweepResult:
    """What one expire_sessions call did: sessions ended, and whether more are due."""

    ended: int
    more: bool


@dataclass(frozen=True)
class ShardEventStats:
    """The pipeline's numbers on one shard.

    Attributes:
        stream_length: entries in the shard's event stream.
        overdue_ms: how long the oldest passed deadline not yet swept has been waiting (0 = none).
        sessions: sessions not yet ended, by (realm, offline).
        events: events appended since the shard's data began, by type.
    """

    stream_length: int
    overdue_ms: int
    sessions: dict[tuple[str, bool], int]
    events: dict[str, int]


class ExpiryRepository:
    """Typed calls of the expiry scripts on a given shard (the caller picked the shard)."""

    def __init__(self, clock: Clock) -> None:
        """Use `clock` for now (a test clock moves deadlines without sleeping)."""
        self._clock = clock

    async def claim_due_partitions(self, shard: Shard, *, lease_ms: int, limit: int) -> list[int]:
        """Claim up to `limit` partitions of `shard` with a passed deadline for `lease_ms`.

        Raises:
            SessionStoreError: the shard failed (UnavailableError for a connection problem).
        """
        reply = await shard.call(
            "claim_due_partitions", [keys.DUE], [self._clock.script_now(), lease_ms, limit]
        )
        return [int(part, 16) for part in reply]

    async def expire_sessions(self, shard: Shard, partition: int, *, limit: int = SWEEP_BATCH) -> SweepResult:
        """End up to `limit` sessions of `partition` whose deadline passed, each with one `expired` event.

        Raises:
            SessionStoreError: the shard failed.
        """
        ended, more = await shard.call(
            "expire_sessions", keys.event_keys(partition), [self._clock.script_now(), limit]
        )
        return SweepResult(int(ended), int(more) == 1)

    async def trim_events(self, shard: Shard, *, max_length: int, max_age_seconds: float) -> None:
        """Cap the shard's stream by length and age (both approximate: whole listpack nodes go).

        Stream ids carry the shard's wall-clock time, so age is measured against wall time, not the
        (possibly test) clock of expiry decisions.

        Raises:
            SessionStoreError: the shard failed.
        """
        min_id = int(time.time() * 1000 - max_age_seconds * 1000)
        await shard.pipeline(
            [
                ("XTRIM", keys.EVENTS, "MAXLEN", "~", max_length),
                ("XTRIM", keys.EVENTS, "MINID", "~", max(min_id, 0)),
            ]
        )

    async def shard_stats(self, shard: Shard) -> ShardEventStats:
        """The shard's stream length, sweeper lag and counters (three reads in one pipeline).

        Raises:
            SessionStoreError: the shard failed.
        """
        length, first_due, counts = await shard.pipeline(
            [
                ("XLEN", keys.EVENTS),
                ("ZRANGE", keys.DUE, 0, 0, "WITHSCORES"),
                ("HGETALL", keys.COUNTS),
            ]
        )
        overdue = 0
        if first_due:
            overdue = max(0, self._clock.approx_now_ms() - int(float(first_due[1])))
        flat = list(counts) if isinstance(counts, list) else [x for kv in counts.items() for x in kv]
        sessions: dict[tuple[str, bool], int] = {}
        events: dict[str, int] = {}
        for i in range(0, len(flat), 2):
            name, value = str(flat[i]), int(flat[i + 1])
            kind, _, rest = name.partition(":")
            if kind == "e":
                events[rest] = value
            elif kind in ("s", "o") and value > 0:
                sessions[(rest, kind == "o")] = value
        return ShardEventStats(int(length), overdue, sessions, events)
