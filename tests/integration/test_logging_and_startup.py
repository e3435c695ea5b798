"""Logs name each RPC and never carry note values; startup fails clearly when a shard is missing."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from session_store import AsyncSessionStoreClient, SessionNotFoundError, ShardUnavailableError
from session_store.config import RedisSettings, Settings, ShardSettings
from session_store.embedded import free_port
from session_store.server import SessionStoreServer


class TestRpcLogs:
    """One debug line per RPC, with its code, and nothing secret."""

    async def test_one_line_per_rpc_without_note_values(self, client: AsyncSessionStoreClient) -> None:
        """Each RPC logs its name and code; note values never appear."""
        secret = "refresh-token-value-9f2c"  # noqa: S105 - a marker value, not a credential
        with capture_logs() as logs:
            created = await client.create_user_session("r", "u", notes={"token": secret})
            await client.update_user_session("r", created.id, set_notes={"other": secret})
            with pytest.raises(SessionNotFoundError):
                await client.get_user_session("r", "missing-session")
        rpc_lines = [entry for entry in logs if entry["event"] == "rpc"]
        assert [
            ("CreateUserSession", "OK"),
            ("UpdateUserSession", "OK"),
            ("GetUserSession", "NOT_FOUND"),
        ] == [(entry["method"], entry["code"]) for entry in rpc_lines]
        assert secret not in repr(logs)


class TestStartup:
    """Startup waits for every shard with bounded retries."""

    async def test_missing_shard_fails_with_a_clear_message(
        self, redis_shards: tuple[ShardSettings, ...]
    ) -> None:
        """A shard that never answers fails start() after the configured attempts, naming the shard."""
        missing = ShardSettings(name="ghost", url=f"redis://127.0.0.1:{free_port()}/0")
        settings = Settings(
            listen="127.0.0.1:0", redis=RedisSettings(startup_attempts=2, timeout_seconds=0.2)
        )
        server = SessionStoreServer(settings, (*redis_shards, missing))
        with pytest.raises(ShardUnavailableError, match="ghost"):
            await server.start()
        await server.router.close()
