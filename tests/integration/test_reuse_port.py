"""SESSION_STORE_REUSE_PORT: several service processes on one port only when asked for."""

from __future__ import annotations

import dataclasses

import pytest

from session_store import AsyncSessionStoreClient
from session_store.config import Settings, ShardSettings
from session_store.model.clock import TestClock
from session_store.server import SessionStoreServer


def _settings(*, reuse_port: bool) -> Settings:
    return Settings(listen="127.0.0.1:0", grace_seconds=0.1, reuse_port=reuse_port)


class TestReusePort:
    """Port sharing between servers."""

    async def test_off_a_second_server_cannot_take_the_port(
        self, flushed_shards: tuple[ShardSettings, ...]
    ) -> None:
        """By default a second server on a taken port fails to start instead of sharing it silently."""
        first = SessionStoreServer(_settings(reuse_port=False), flushed_shards, clock=TestClock())
        port = await first.start()
        second = SessionStoreServer(_settings(reuse_port=False), flushed_shards, clock=TestClock())
        try:
            with pytest.raises(RuntimeError, match="bind"):
                await second.start(f"127.0.0.1:{port}")
        finally:
            await second.stop(0)
            await first.stop(0)

    async def test_on_two_servers_share_the_port_and_both_serve(
        self, flushed_shards: tuple[ShardSettings, ...]
    ) -> None:
        """With reuse_port both bind; calls through the port reach a server either way."""
        settings = _settings(reuse_port=True)
        first = SessionStoreServer(settings, flushed_shards, clock=TestClock())
        port = await first.start()
        second = SessionStoreServer(dataclasses.replace(settings), flushed_shards, clock=TestClock())
        try:
            assert port == await second.start(f"127.0.0.1:{port}")
            async with AsyncSessionStoreClient(f"127.0.0.1:{port}") as client:
                created = await client.create_user_session("r", "u")
                assert created.id == (await client.get_user_session("r", created.id)).id
        finally:
            await second.stop(0)
            await first.stop(0)
