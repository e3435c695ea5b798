"""The memory guard and the eviction-policy check against real redis-server processes.

A shard with a small `maxmemory` (16 MiB, `noeviction`) is filled with real creates until the guard
trips: creates then answer RESOURCE_EXHAUSTED `STORE_MEMORY_LOW`, while touches, updates, logouts,
revocations, replay markers and login-failure counts keep working, and Redis itself never answered
OOM (its `errorstat_OOM` stays absent). At start, `allkeys-*` is refused, `volatile-*` warns, and
the policy is read from INFO where CONFIG is not allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from session_store import (
    AsyncSessionStoreClient,
    PreconditionFailedError,
    StoreMemoryLowError,
    UserSession,
)
from session_store.config import RedisSettings, Settings, ShardSettings
from session_store.embedded import RedisProcess, start_redis
from session_store.model.clock import TestClock
from session_store.server import SessionStoreServer

pytestmark = pytest.mark.timeout(120)

MAX_MEMORY = 16 * 1024 * 1024
GUARD_PERCENT = 80.0
# What the filler leaves below the guard's threshold for the creates to fill: a few hundred sessions.
CREATE_ROOM_BYTES = 300_000
FILLER_PIECE_BYTES = 64 * 1024
HOLD_PIECES = 8
MAX_CREATES = 20_000
WAIT_SECONDS = 10.0
REALM = "mem"


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A server of this test's own with a 16 MiB maxmemory and noeviction."""
    proc = start_redis(
        "small",
        tmp_path,
        appendonly=False,
        extra_args=("--maxmemory", str(MAX_MEMORY), "--maxmemory-policy", "noeviction"),
    )
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def admin(small_redis: RedisProcess) -> Iterator[redis.Redis]:
    """A plain connection of the test (to fill, inspect and reconfigure the server)."""
    with redis.Redis.from_url(small_redis.url, decode_responses=True) as conn:
        yield conn


def guarded_settings(**redis_overrides: object) -> Settings:
    """Service settings with a fast memory poll (the guard reacts within 0.05 s)."""
    values: dict[str, object] = {
        "memory_guard_percent": GUARD_PERCENT,
        "memory_poll_seconds": 0.05,
        "startup_attempts": 1,
    }
    values.update(redis_overrides)
    return Settings(
        listen="127.0.0.1:0",
        grace_seconds=0.5,
        policy_refresh_seconds=0.001,
        redis=RedisSettings(**values),  # type: ignore[arg-type]  # values typed per field above
    )


@contextlib.asynccontextmanager
async def running(url: str, settings: Settings) -> AsyncIterator[SessionStoreServer]:
    """A started service on the one shard at `url`, stopped at the end."""
    server = SessionStoreServer(settings, (ShardSettings(name="small", url=url),), clock=TestClock())
    try:
        await server.start()
        yield server
    finally:
        await server.stop(grace=0)


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    """Poll `predicate()` until true, failing after WAIT_SECONDS."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class TestMemoryGuard:
    """Creates stop before Redis is full; everything that ends or refreshes a session keeps working."""

    async def test_creates_are_refused_before_maxmemory_while_refresh_and_logout_work(
        self, small_redis: RedisProcess, admin: redis.Redis
    ) -> None:
        """Filled by real creates until the guard trips: further creates get STORE_MEMORY_LOW; touch,
        update, logout, revocation, replay marker and login-failure count still succeed; Redis never
        answered OOM; once memory is freed, creates work again."""
        async with (
            running(small_redis.url, guarded_settings()) as server,
            AsyncSessionStoreClient(f"127.0.0.1:{server.port}", max_attempts=1) as client,
        ):
            guard = server.router.shards["small"].guard
            assert guard is not None
            # Made before the shard fills: a login in progress (its root) and an OAuth code.
            root = await client.get_or_create_root_authentication_session(REALM)
            await client.put_single_use_object(REALM, "code-before", 60)
            # Most of the room goes to filler values (in small pieces: a big one would sit in the query
            # buffer and count twice), so that a few hundred creates reach the threshold.
            fill_to = MAX_MEMORY * GUARD_PERCENT / 100 - CREATE_ROOM_BYTES
            pieces = 0
            while int(admin.info("memory")["used_memory"]) + FILLER_PIECE_BYTES < fill_to:
                admin.set(f"filler:{pieces}", "x" * FILLER_PIECE_BYTES)
                pieces += 1

            created: list[UserSession] = []
            refused: StoreMemoryLowError | None = None
            for i in range(MAX_CREATES):
                try:
                    created.append(
                        await client.create_user_session(
                            REALM, f"user-{i}", login_username=f"user-{i}", notes={"n": "v" * 500}
                        )
                    )
                except StoreMemoryLowError as exc:
                    refused = exc
                    break

            assert refused is not None, "the guard never tripped"
            assert len(created) >= 10, "the filler alone tripped the guard: the creates filled nothing"
            assert ("RESOURCE_EXHAUSTED", "STORE_MEMORY_LOW") == (refused.code, refused.reason)
            assert "maxmemory" in refused.message
            # Well above the threshold from here on, so that no poll clears the guard mid-test.
            for extra in range(pieces, pieces + HOLD_PIECES):
                admin.set(f"filler:{extra}", "x" * FILLER_PIECE_BYTES)
            pieces += HOLD_PIECES
            assert guard.low

            # Every kind of create is refused now.
            with pytest.raises(StoreMemoryLowError):
                await client.create_user_session(REALM, "late-user")
            with pytest.raises(StoreMemoryLowError):
                await client.attach_client_session(REALM, created[0].id, "new-client")
            with pytest.raises(StoreMemoryLowError):
                await client.create_offline_session(REALM, created[0].id)
            with pytest.raises(StoreMemoryLowError):
                await client.get_or_create_root_authentication_session(REALM)
            with pytest.raises(StoreMemoryLowError):
                await client.get_or_create_root_authentication_session(REALM, "never-seen-root-id")
            with pytest.raises(StoreMemoryLowError):
                await client.create_authentication_session(REALM, root.id, "account")
            with pytest.raises(StoreMemoryLowError):
                await client.put_single_use_object(REALM, "code-after", 60)

            # What refreshes, uses or ends state keeps working.
            again = await client.get_or_create_root_authentication_session(REALM, root.id)
            await client.put_single_use_object(REALM, "token-1.revoked", 60)
            assert await client.put_single_use_object_if_absent(REALM, "action-token-1", 60)
            assert (await client.take_single_use_object(REALM, "code-before")) is not None
            failure = await client.record_login_failure(REALM, "user-0", ip_address="10.0.0.1")
            for session in created:
                await client.touch_user_session(REALM, session.id)
            updated = await client.update_user_session(REALM, created[0].id, set_notes={"n": "w"})
            removed = [await client.remove_user_session(REALM, session.id) for session in created]

            assert root.id == again.id
            assert 1 == failure.num_failures
            assert {"n": "w"} == updated.notes
            assert all(removed)
            assert "errorstat_OOM" not in admin.info("errorstats")

            # Freed memory lets creates in again, within a poll or two.
            admin.delete(*(f"filler:{i}" for i in range(pieces)))
            await wait_for(lambda: not guard.low, "the guard to clear")
            assert (await client.create_user_session(REALM, "after-free")).id


class TestEvictionPolicyAtStart:
    """Each shard's maxmemory-policy is checked before the service starts serving."""

    async def test_allkeys_policy_refuses_to_start(
        self, small_redis: RedisProcess, admin: redis.Redis
    ) -> None:
        """allkeys-lru: start() raises FAILED_PRECONDITION naming the shard, the policy and the way out."""
        admin.config_set("maxmemory-policy", "allkeys-lru")
        server = SessionStoreServer(
            guarded_settings(), (ShardSettings(name="small", url=small_redis.url),), clock=TestClock()
        )
        try:
            with pytest.raises(PreconditionFailedError, match="shard small has maxmemory-policy allkeys-lru"):
                await server.start()
        finally:
            await server.router.close()

    async def test_allkeys_policy_starts_when_allowed_with_a_warning(
        self, small_redis: RedisProcess, admin: redis.Redis
    ) -> None:
        """With SESSION_STORE_REDIS_ALLOW_EVICTION the service starts, logging a warning."""
        admin.config_set("maxmemory-policy", "allkeys-lfu")
        with capture_logs() as logs:
            async with running(small_redis.url, guarded_settings(allow_eviction=True)):
                pass

        assert [("warning", "allkeys-lfu")] == [
            (e["log_level"], e["policy"]) for e in logs if e["event"] == "eviction_policy_allowed"
        ]

    async def test_volatile_policy_starts_with_a_warning(
        self, small_redis: RedisProcess, admin: redis.Redis
    ) -> None:
        """volatile-ttl starts, with a warning that sessions (which have TTLs) may be evicted."""
        admin.config_set("maxmemory-policy", "volatile-ttl")
        with capture_logs() as logs:
            async with running(small_redis.url, guarded_settings()):
                pass

        assert ["volatile-ttl"] == [e["policy"] for e in logs if e["event"] == "eviction_policy_risky"]

    async def test_policy_comes_from_info_where_config_is_refused(
        self, small_redis: RedisProcess, admin: redis.Redis
    ) -> None:
        """An ACL user without CONFIG still gets allkeys-* refused: the policy is read from INFO memory."""
        admin.config_set("maxmemory-policy", "allkeys-random")
        admin.acl_setuser(
            "no-config",
            enabled=True,
            passwords=["+pw"],
            keys=["*"],
            channels=["*"],
            commands=["+@all", "-config"],
        )
        url = f"redis://no-config:pw@127.0.0.1:{small_redis.port}/0"
        server = SessionStoreServer(
            guarded_settings(), (ShardSettings(name="small", url=url),), clock=TestClock()
        )
        try:
            with pytest.raises(PreconditionFailedError, match="allkeys-random"):
                await server.start()
        finally:
            await server.router.close()

    async def test_unknown_policy_starts_with_warnings_and_no_guard(
        self, small_redis: RedisProcess, admin: redis.Redis
    ) -> None:
        """Where neither CONFIG nor INFO is allowed, the service starts, saying what it could not check."""
        admin.acl_setuser(
            "locked",
            enabled=True,
            passwords=["+pw"],
            keys=["*"],
            channels=["*"],
            commands=["+@all", "-@dangerous"],
        )
        url = f"redis://locked:pw@127.0.0.1:{small_redis.port}/0"
        with capture_logs() as logs:
            async with running(url, guarded_settings()) as server:
                guard = server.router.shards["small"].guard

        assert guard is not None
        assert guard.reading is None
        assert {"eviction_policy_unknown", "memory_guard_off"} <= {e["event"] for e in logs}
