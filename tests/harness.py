"""A service for hypothesis state machines: they are synchronous, so the in-process server, its test
clock and an async client run on a private event loop in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import structlog

from session_store import AsyncSessionStoreClient, RealmPolicy, SessionStoreClient, SessionStoreError
from session_store.config import Settings, ShardSettings
from session_store.model.clock import TestClock
from session_store.server import SessionStoreServer
from tests.backends import flush_all

T = TypeVar("T")
CALL_TIMEOUT_SECONDS = 30.0


class BackgroundService:
    """The in-process server, its frozen clock and clients, on a private event loop in a thread."""

    def __init__(self, shards: tuple[ShardSettings, ...], policies: Sequence[RealmPolicy] = ()) -> None:
        """Start the loop, the server on a free port, and connect an async client."""
        self.shards = shards
        self.policies = tuple(policies)
        self.clock = TestClock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stateful-service", daemon=True)
        self._thread.start()
        self.server, self.client = self.run(self._start())
        self._sync_client: SessionStoreClient | None = None

    async def _start(self) -> tuple[SessionStoreServer, AsyncSessionStoreClient]:
        # grpc.aio binds servers and channels to the loop they are created on: create them here.
        server = SessionStoreServer(
            Settings(listen="127.0.0.1:0", grace_seconds=0.5, policy_refresh_seconds=0.001),
            self.shards,
            clock=self.clock,
        )
        port = await server.start()
        return server, AsyncSessionStoreClient(f"127.0.0.1:{port}", max_attempts=1)

    @property
    def sync_client(self) -> SessionStoreClient:
        """A blocking client of the same server (its calls are served by the background loop)."""
        if self._sync_client is None:
            self._sync_client = SessionStoreClient(f"127.0.0.1:{self.server.port}", max_attempts=1)
        return self._sync_client

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the service loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_SECONDS)

    def outcome(self, coro: Coroutine[Any, Any, T]) -> T | SessionStoreError:
        """The result, or the SessionStoreError the call raised."""

        async def catch() -> T | SessionStoreError:
            try:
                return await coro
            except SessionStoreError as exc:
                return exc

        return self.run(catch())

    def reset(self) -> None:
        """Empty every shard and store the realm policies again."""
        flush_all(self.shards)
        for policy in self.policies:
            self.run(self.client.set_realm_policy(policy))

    def close(self) -> None:
        """Close the clients, stop the server, stop and close the loop."""
        if self._sync_client is not None:
            self._sync_client.close()
        self.run(self.client.close())
        self.run(self.server.stop(grace=0))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CALL_TIMEOUT_SECONDS)
        self._loop.close()


@contextlib.contextmanager
def background_service(
    shards: tuple[ShardSettings, ...], policies: Sequence[RealmPolicy] = ()
) -> Iterator[BackgroundService]:
    """A BackgroundService for the duration of the block.

    Per-RPC debug lines are filtered out meanwhile: thousands of steps would spend much of their time
    rendering them.
    """
    config = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    svc = BackgroundService(shards, policies)
    try:
        yield svc
    finally:
        svc.close()
        structlog.configure(**config)
