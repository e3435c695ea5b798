"""The clock expiry decisions use: the shard's own TIME in production, a frozen test clock in tests.

Every script takes "now" as its first argument: an empty string makes it read the shard's `TIME`
(one clock per session: a session lives on one shard, so every service node gets the same answer),
a number makes it use that instead. Only :class:`TestClock` passes a number, and only a server
started with ``--test-clock`` (or a test) constructs one.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What storage needs from a clock."""

    def script_now(self) -> str:
        """The first argument of every script: "" for the shard's TIME, or epoch ms."""
        ...

    def approx_now_ms(self) -> int:
        """This process's idea of now in epoch ms, for TTLs of hints that allow slack."""
        ...


class SystemClock:
    """Production clock: scripts use the shard's TIME."""

    def script_now(self) -> str:
        """Let the shard decide."""
        return ""

    def approx_now_ms(self) -> int:
        """Wall-clock ms of this process."""
        return time.time_ns() // 1_000_000


class TestClock:
    """A frozen clock that tests move forward explicitly; it never moves by itself."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, start_ms: int | None = None) -> None:
        """Start at `start_ms`, default the current wall-clock second."""
        self._now_ms = start_ms if start_ms is not None else (time.time_ns() // 1_000_000_000) * 1000

    def script_now(self) -> str:
        """The frozen time, as scripts take it."""
        return str(self._now_ms)

    def approx_now_ms(self) -> int:
        """The frozen time."""
        return self._now_ms

    @property
    def now_ms(self) -> int:
        """The frozen time in epoch ms."""
        return self._now_ms

    def advance(self, seconds: float) -> int:
        """Move the clock forward (never back); returns the new time in ms.

        Raises:
            ValueError: seconds is negative.
        """
        if seconds < 0:
            raise ValueError("the test clock only moves forward")
        self._now_ms += round(seconds * 1000)
        return self._now_ms
