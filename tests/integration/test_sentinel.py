"""A shard that is a Redis Sentinel group: the service follows a failover and keeps serving its
partitions, while the partitions of the other shards never notice.

Real processes only: a master, a replica and three sentinels (quorum 2, down after 1 s) started by
`session_store.embedded`, one plain shard beside them, the in-process service, and callers that
create and read sessions throughout. Every process is stopped by PID at teardown.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis import exceptions as redis_errors

from session_store import AsyncSessionStoreClient, ShardUnavailableError, UnavailableError
from session_store.config import RedisSettings, Settings, ShardSettings
from session_store.embedded import (
    EmbeddedShards,
    RedisProcess,
    find_server_binary,
    free_port,
    sentinel_url,
    start_redis,
    start_replica,
    start_sentinel,
    wait_sentinels_ready,
)
from session_store.model.clock import TestClock
from session_store.model.ids import user_partition
from session_store.server import SessionStoreServer
from session_store.storage._resp import PipelinedClient, RedisAccess
from tests.redis_tls import Pki, TlsUnsupportedError, make_pki, start_tls_redis

MASTER_NAME = "ha"
REALM = "r"
# Replicas attach at once instead of after Redis's default 5 s of waiting for more of them.
FAST_SYNC = ("--repl-diskless-sync-delay", "0")
RECOVERY_BOUND_SECONDS = 15.0
"""The promised bound: after a failover starts, the group's partitions are served again within it."""
TRAFFIC_WORKERS = 6


@dataclass
class SentinelGroup:
    """A master, its replica and three sentinels watching them."""

    master: RedisProcess
    replica: RedisProcess
    sentinels: list[RedisProcess]
    password: str = ""

    @property
    def url(self) -> str:
        """The group's shard URL."""
        return sentinel_url(MASTER_NAME, [s.port for s in self.sentinels])

    def role(self, proc: RedisProcess) -> str:
        """The replication role a server reports now."""
        with redis.Redis(
            port=proc.port, password=self.password or None, socket_timeout=1, decode_responses=True
        ) as conn:
            return str(conn.info("replication")["role"])

    def failover(self) -> None:
        """SENTINEL FAILOVER: a coordinated failover to the replica."""
        with redis.Redis(
            port=self.sentinels[0].port, password=self.password or None, socket_timeout=2
        ) as conn:
            conn.sentinel_failover(MASTER_NAME)


@contextlib.contextmanager
def sentinel_group(root: Path, *, password: str = "") -> Iterator[SentinelGroup]:
    """Start a group (servers and sentinels sharing `password`, if any); stop it by PID at the end."""
    started: list[RedisProcess] = []
    try:
        master = start_redis("ha-a", root / "a", appendonly=False, extra_args=FAST_SYNC, password=password)
        started.append(master)
        replica = start_replica(
            "ha-b", root / "b", master.port, appendonly=False, extra_args=FAST_SYNC, password=password
        )
        started.append(replica)
        for i in range(3):
            started.append(
                start_sentinel(
                    f"sentinel-{i}",
                    root / f"sentinel-{i}",
                    master_name=MASTER_NAME,
                    master_port=master.port,
                    quorum=2,
                    down_after_ms=1000,
                    failover_timeout_ms=2000,
                    master_password=password,
                    password=password,
                )
            )
        sentinels = started[2:]
        wait_sentinels_ready([s.port for s in sentinels], MASTER_NAME, replicas=1, password=password)
        yield SentinelGroup(master=master, replica=replica, sentinels=sentinels, password=password)
    finally:
        for proc in started:
            proc.kill()


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A Sentinel group of this test's own (its master can be killed), without passwords."""
    with sentinel_group(tmp_path / "group") as started:
        yield started


@pytest.fixture
def plain_shard(tmp_path: Path) -> Iterator[RedisProcess]:
    """One ordinary shard beside the group."""
    shards = EmbeddedShards(tmp_path / "plain", 1, appendonly=False)
    (proc,) = shards.start()
    try:
        yield proc
    finally:
        shards.stop()


@pytest.fixture
async def service(group: SentinelGroup, plain_shard: RedisProcess) -> AsyncIterator[SessionStoreServer]:
    """The service in front of the plain shard and the Sentinel group (named `ha`)."""
    settings = Settings(
        listen="127.0.0.1:0",
        grace_seconds=0.2,
        policy_refresh_seconds=0.001,
        redis=RedisSettings(timeout_seconds=1.0),
    )
    shards = (
        ShardSettings(name=plain_shard.name, url=plain_shard.url),
        ShardSettings(name=MASTER_NAME, url=group.url),
    )
    server = SessionStoreServer(settings, shards, clock=TestClock())
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


def users_on(server: SessionStoreServer, shard: str, count: int) -> list[str]:
    """`count` user ids whose partitions the named shard owns."""
    found = [
        user
        for user in (f"user-{i}" for i in range(20_000))
        if server.router.shard_for(user_partition(REALM, user)).name == shard
    ]
    assert len(found) >= count
    return found[:count]


@dataclass
class Traffic:
    """What callers of one shard's users saw: acknowledged sessions, failures and when."""

    acked: list[str] = field(default_factory=list)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    failed_at: list[float] = field(default_factory=list)
    succeeded_at: list[float] = field(default_factory=list)

    async def drive(self, client: AsyncSessionStoreClient, users: list[str], stop: asyncio.Event) -> None:
        """Create sessions and read back earlier ones until `stop`; only UNAVAILABLE may fail."""
        for n, user in enumerate(itertools.cycle(users)):
            if stop.is_set():
                return
            try:
                if n % 2 and self.acked:
                    await client.get_user_session(REALM, self.acked[n % len(self.acked)])
                else:
                    self.acked.append((await client.create_user_session(REALM, user)).id)
                self.succeeded_at.append(time.monotonic())
            except UnavailableError as exc:
                self.failures[f"{exc.code} {exc.reason}"] += 1
                self.failed_at.append(time.monotonic())
                await asyncio.sleep(0.02)

    def served_after(self, moment: float) -> bool:
        """Whether a call succeeded after `moment` (monotonic)."""
        return bool(self.succeeded_at) and self.succeeded_at[-1] > moment


async def unreadable(client: AsyncSessionStoreClient, ids: list[str]) -> list[str]:
    """The ids among `ids` whose sessions cannot be read (any error)."""
    missing: list[str] = []
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]
        results = await asyncio.gather(
            *(client.get_user_session(REALM, sid) for sid in chunk), return_exceptions=True
        )
        missing += [
            sid for sid, result in zip(chunk, results, strict=True) if isinstance(result, BaseException)
        ]
    return missing


async def run_failover(
    server: SessionStoreServer, group: SentinelGroup, plain_shard: RedisProcess, trigger: str
) -> tuple[Traffic, Traffic, float, float]:
    """Traffic on both shards; after 1 s `trigger` ("failover" or "kill"); traffic until the group's
    partitions have been served for 1 s on the promoted replica.

    Returns:
        The group's traffic, the plain shard's traffic, the trigger moment, and the seconds from the
        trigger until a call on the group's partitions succeeded on the promoted replica.
    """
    ha_users = users_on(server, MASTER_NAME, 50)
    plain_users = users_on(server, plain_shard.name, 50)
    ha, plain = Traffic(), Traffic()
    stop = asyncio.Event()
    async with AsyncSessionStoreClient(f"127.0.0.1:{server.port}", max_attempts=1) as client:
        workers = [asyncio.create_task(ha.drive(client, ha_users, stop)) for _ in range(TRAFFIC_WORKERS)] + [
            asyncio.create_task(plain.drive(client, plain_users, stop)) for _ in range(2)
        ]
        try:
            await asyncio.sleep(1.0)
            triggered = time.monotonic()
            if trigger == "kill":
                group.master.kill()
            else:
                await asyncio.to_thread(group.failover)
            promoted = 0.0
            while time.monotonic() - triggered < RECOVERY_BOUND_SECONDS:
                if not promoted and await asyncio.to_thread(group.role, group.replica) == "master":
                    promoted = time.monotonic()
                if promoted and ha.served_after(max(promoted, *ha.failed_at[-1:])):
                    break
                await asyncio.sleep(0.01)
            recovered = max(promoted, *ha.failed_at[-1:])
            served = next((t for t in ha.succeeded_at if t > recovered), 0.0)
            assert served, f"the group's partitions were not served within {RECOVERY_BOUND_SECONDS} s"
            await asyncio.sleep(1.0)  # keep serving on the new master for a while
        finally:
            stop.set()
            await asyncio.gather(*workers)
        return ha, plain, triggered, served - triggered


class TestSentinelShard:
    """A shard given as redis+sentinel:// follows its group's master."""

    async def test_serves_through_a_coordinated_failover(
        self, service: SessionStoreServer, group: SentinelGroup, plain_shard: RedisProcess
    ) -> None:
        """SENTINEL FAILOVER mid-traffic: UNAVAILABLE only on the group's partitions and only for the
        failover's short window, served again on the promoted replica within the bound, and every
        session acknowledged before or during the failover is still there."""
        ha, plain, triggered, recovery = await run_failover(service, group, plain_shard, "failover")
        window = [t - triggered for t in ha.failed_at]
        print(  # the numbers docs/operations.md quotes (run with -s)
            f"\ncoordinated failover: served again after {recovery:.2f} s; "
            f"{sum(ha.failures.values())} failed calls {dict(ha.failures)} "
            f"between {min(window, default=0):.2f} and {max(window, default=0):.2f} s; "
            f"{len(ha.acked)} sessions acknowledged"
        )
        assert "master" == group.role(group.replica)
        assert recovery < RECOVERY_BOUND_SECONDS
        assert set(ha.failures) <= {"UNAVAILABLE SHARD_UNAVAILABLE"}
        assert not plain.failures  # the other shard never noticed
        assert plain.served_after(triggered + 1)
        async with AsyncSessionStoreClient(f"127.0.0.1:{service.port}", max_attempts=1) as client:
            assert [] == await unreadable(client, ha.acked)

    async def test_recovers_after_the_master_is_killed(
        self, service: SessionStoreServer, group: SentinelGroup, plain_shard: RedisProcess
    ) -> None:
        """SIGKILL of the master: its partitions answer UNAVAILABLE until Sentinel promotes the
        replica, then are served again within the bound (writes acknowledged in the last moments
        before the crash may be lost: replication is asynchronous), and the other shard never
        noticed."""
        ha, plain, _, recovery = await run_failover(service, group, plain_shard, "kill")
        async with AsyncSessionStoreClient(f"127.0.0.1:{service.port}", max_attempts=1) as client:
            lost = await unreadable(client, ha.acked)
            print(
                f"\nmaster killed: served again after {recovery:.2f} s; "
                f"{sum(ha.failures.values())} failed calls {dict(ha.failures)}; "
                f"{len(lost)} of {len(ha.acked)} acknowledged sessions lost"
            )
            assert "master" == group.role(group.replica)
            assert recovery < RECOVERY_BOUND_SECONDS
            assert set(ha.failures) <= {"UNAVAILABLE SHARD_UNAVAILABLE"}
            assert not plain.failures
            # Serving again means reading and writing: a new session on the group reads back.
            user = users_on(service, MASTER_NAME, 1)[0]
            created = await client.create_user_session(REALM, user)
            assert user == (await client.get_user_session(REALM, created.id)).user_id

    async def test_startup_finds_the_master_through_the_sentinels(
        self, service: SessionStoreServer, group: SentinelGroup
    ) -> None:
        """The service connects to whichever server the sentinels name, and writes land there."""
        user = users_on(service, MASTER_NAME, 1)[0]
        async with AsyncSessionStoreClient(f"127.0.0.1:{service.port}", max_attempts=1) as client:
            created = await client.create_user_session(REALM, user)
        with redis.Redis(port=group.master.port, decode_responses=True) as conn:
            assert 1 == sum(1 for _ in conn.scan_iter(match=f"*:s:{created.id}"))


class TestSentinelUnreachable:
    """A group whose sentinels cannot name a master is unavailable, never silently elsewhere."""

    async def test_no_sentinel_answers(self, plain_shard: RedisProcess, tmp_path: Path) -> None:
        """With every sentinel gone, calls on the group's partitions fail UNAVAILABLE fast."""
        dead = [start_redis("gone", tmp_path / "gone", appendonly=False)]
        url = sentinel_url(MASTER_NAME, [dead[0].port])
        dead[0].kill()
        settings = Settings(
            listen="127.0.0.1:0",
            grace_seconds=0.2,
            redis=RedisSettings(timeout_seconds=0.5, startup_attempts=2),
        )
        shards = (ShardSettings(name=plain_shard.name, url=plain_shard.url), ShardSettings(name="x", url=url))
        server = SessionStoreServer(settings, shards, clock=TestClock())
        try:
            with pytest.raises(ShardUnavailableError, match="shard x did not answer"):
                await server.start()  # startup pings every shard: a group without a master stops it
        finally:
            await server.stop(grace=0)


class TestSentinelClient:
    """The Redis client under a Sentinel shard (storage/_resp.py), seen directly."""

    async def test_failover_closes_blocking_connections(self, group: SentinelGroup) -> None:
        """A blocking read on the old master ends with ConnectionError as soon as a failover starts,
        and the next connection goes to the promoted replica."""
        client = PipelinedClient(group.url, timeout=2, connect_timeout=1)
        try:
            reader = await client.dedicated(reply_timeout=30)
            blocked = asyncio.create_task(reader.execute("XREAD", "BLOCK", 20_000, "STREAMS", "s", "$"))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await asyncio.to_thread(group.failover)
            with pytest.raises(redis_errors.ConnectionError):
                await blocked
            assert time.monotonic() - started < 1.0
            deadline = time.monotonic() + RECOVERY_BOUND_SECONDS
            while True:
                try:
                    after = await client.dedicated(reply_timeout=2)
                    break
                except redis_errors.ConnectionError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            assert f"tcp_port:{group.replica.port}" in await after.execute("INFO", "server")
            after.close()
        finally:
            await client.close()

    async def test_same_password_for_the_sentinels(self, tmp_path: Path) -> None:
        """With `sentinel_auth=same` the URL's password also opens the sentinels; without it a
        password-protected group's sentinels refuse us, and the client says so (never the password)."""
        password = "group-secret"  # noqa: S105 - a test value
        with sentinel_group(tmp_path / "locked", password=password) as locked:
            ports = ",".join(f"127.0.0.1:{s.port}" for s in locked.sentinels)
            good = PipelinedClient(
                f"redis+sentinel://:{password}@{ports}/{MASTER_NAME}/0?sentinel_auth=same",
                timeout=2,
                connect_timeout=1,
            )
            refused = PipelinedClient(
                f"redis+sentinel://:{password}@{ports}/{MASTER_NAME}/0", timeout=2, connect_timeout=1
            )
            try:
                assert "OK" == await good.execute("SET", "k", "v")
                assert "v" == await good.execute("GET", "k")
                with pytest.raises(redis_errors.ConnectionError) as caught:
                    await refused.execute("PING")
                assert "no sentinel of 'ha' answered: " in str(caught.value)
                assert "authenticate" in str(caught.value)
                assert password not in str(caught.value)
            finally:
                await good.close()
                await refused.close()


class TestDemotedServer:
    """A connection whose server became a replica is not kept (any URL, Sentinel or not)."""

    async def test_readonly_reply_reconnects(self, tmp_path: Path) -> None:
        """The READONLY reply reaches its caller, the connection closes, and the next call opens a
        new one (which finds the server writable again once it is a master)."""
        first = start_redis("first", tmp_path / "first", appendonly=False)
        second = start_redis("second", tmp_path / "second", appendonly=False)
        client = PipelinedClient(first.url, timeout=2, connect_timeout=1, connections=1)
        try:
            before = await client.execute("CLIENT", "ID")
            with redis.Redis(port=first.port) as admin:
                admin.replicaof("127.0.0.1", second.port)
                with pytest.raises(redis_errors.ResponseError, match=r"^READONLY"):
                    await client.execute("SET", "k", "v")
                admin.replicaof("NO", "ONE")
            assert "OK" == await client.execute("SET", "k", "v")
            assert before != await client.execute("CLIENT", "ID")
        finally:
            await client.close()
            first.kill()
            second.kill()


def start_tls_sentinel(directory: Path, pki: Pki, master_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """A sentinel that speaks TLS only (client certificates required) and monitors a TLS master.

    Returns:
        The process (stop it by PID) and its TLS port.
    """
    directory.mkdir()
    port = free_port()
    config = directory / "sentinel.conf"
    config.write_text(
        "\n".join(
            [
                "port 0",
                f"tls-port {port}",
                "bind 127.0.0.1",
                f'dir "{directory}"',
                "logfile sentinel.log",
                f"tls-cert-file {pki.server_cert}",
                f"tls-key-file {pki.server_key}",
                f"tls-client-cert-file {pki.client_cert}",
                f"tls-client-key-file {pki.client_key}",
                f"tls-ca-cert-file {pki.ca}",
                "tls-auth-clients yes",
                "tls-replication yes",  # in a sentinel: speak TLS to the monitored servers
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    process = subprocess.Popen(  # noqa: S603 - our own argv
        [find_server_binary(), str(config), "--sentinel"], start_new_session=True
    )
    return process, port


class TestSentinelOverTLS:
    """rediss+sentinel://: TLS with the one configured context to the sentinels and the master."""

    async def test_tls_group(self, tmp_path: Path) -> None:
        """A TLS-only master and sentinel (client certificates required) are reached and used; a
        context that does not trust their CA reaches neither."""
        pki = make_pki(tmp_path / "pki")
        try:
            master = start_tls_redis(tmp_path / "master", pki)
        except TlsUnsupportedError as exc:
            pytest.skip(f"{exc}: TLS tests need a redis-server built with TLS (CI installs Debian's)")
        sentinel_dir = tmp_path / "sentinel"
        try:
            sentinel, port = start_tls_sentinel(sentinel_dir, pki, master.port)
        except BaseException:
            master.kill()
            raise
        trusted = ssl.create_default_context(cafile=str(pki.ca))
        trusted.load_cert_chain(pki.client_cert, pki.client_key)
        stranger = ssl.create_default_context(cafile=str(pki.other_ca))
        stranger.load_cert_chain(pki.client_cert, pki.client_key)
        url = f"rediss+sentinel://127.0.0.1:{port}/{MASTER_NAME}/0"
        client = PipelinedClient(url, timeout=2, connect_timeout=1, access=RedisAccess(tls=trusted))
        refused = PipelinedClient(url, timeout=2, connect_timeout=1, access=RedisAccess(tls=stranger))
        try:
            deadline = time.monotonic() + 10
            while True:  # the sentinel needs a moment to start and see the master up
                try:
                    assert "OK" == await client.execute("SET", "k", "over-tls")
                    break
                except redis_errors.ConnectionError:
                    assert time.monotonic() < deadline, (sentinel_dir / "sentinel.log").read_text()
                    await asyncio.sleep(0.1)
            assert client.sentinel is not None
            assert ("127.0.0.1", master.port) == client.sentinel.address
            assert "over-tls" == await client.execute("GET", "k")
            with pytest.raises(redis_errors.ConnectionError, match="certificate verify failed"):
                await refused.execute("PING")
        finally:
            await client.close()
            await refused.close()
            sentinel.kill()
            sentinel.wait(5)
            master.kill()
