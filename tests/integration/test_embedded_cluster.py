"""The local Redis Cluster launcher of `session_store.embedded`: formation without redis-cli, slot
migration, failover, crash and restart, passwords, and stopping by PID.

Real processes only, on free loopback ports. One three-master cluster is shared by the tests that
leave it stable (a migrated slot stays where it went; a restarted master is waited for); the others
start a cluster of their own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from session_store.embedded import (
    CLUSTER_SLOTS,
    EmbeddedCluster,
    EmbeddedRedisError,
    RedisProcess,
    pid_alive,
    start_cluster,
)

NO_RETRY = Retry(NoBackoff(), 0)
"""For a client that must fail at once: redis-py retries a refused handshake for about 4 s by default."""
PASSWORD = "s3cret/pw"  # noqa: S105 - a test value; the slash shows the URL percent-encodes it


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    """Three masters without replicas, with AOF (a killed master restarts with its data)."""
    with start_cluster(tmp_path_factory.mktemp("cluster"), 3, appendonly=True) as started:
        yield started


@pytest.fixture
def flushed(cluster: EmbeddedCluster) -> EmbeddedCluster:
    """The shared cluster, stable and emptied before the test."""
    cluster.wait_stable()
    cluster.flushall()
    return cluster


def cluster_client(cluster: EmbeddedCluster) -> redis.RedisCluster:
    """A fresh redis-py cluster client (it learns the slot map from the first master)."""
    return redis.RedisCluster(
        host="127.0.0.1",
        port=cluster.masters[0].port,
        password=cluster.password or None,
        decode_responses=True,
        socket_timeout=2,
    )


def connect(cluster: EmbeddedCluster, node: RedisProcess) -> redis.Redis:
    """A plain connection to one server of the cluster."""
    return redis.Redis(
        host="127.0.0.1",
        port=node.port,
        password=cluster.password or None,
        decode_responses=True,
        socket_timeout=2,
    )


def cluster_info(cluster: EmbeddedCluster, node: RedisProcess) -> dict[str, str]:
    """`CLUSTER INFO` of one server as a dict."""
    with connect(cluster, node) as conn:
        text = str(conn.execute_command("CLUSTER", "INFO"))
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def slot_map(cluster: EmbeddedCluster, node: RedisProcess) -> dict[int, int]:
    """The owner's port of every slot, as one server's `CLUSTER SLOTS` says."""
    with connect(cluster, node) as conn:
        ranges = conn.execute_command("CLUSTER", "SLOTS")
    return {slot: int(owner[1]) for first, last, owner, *_ in ranges for slot in range(first, last + 1)}


class TestStartCluster:
    """A freshly started cluster."""

    def test_every_node_reports_ok(self, flushed: EmbeddedCluster) -> None:
        """Every server says cluster_state:ok with all 16384 slots assigned and three nodes known."""
        expected = [("ok", str(CLUSTER_SLOTS), "3")] * 3
        infos = [cluster_info(flushed, node) for node in flushed.nodes]
        actual = [(i["cluster_state"], i["cluster_slots_ok"], i["cluster_known_nodes"]) for i in infos]
        assert expected == actual

    def test_every_slot_is_covered_and_seen_alike(self, flushed: EmbeddedCluster) -> None:
        """Every slot has an owner among the three masters, the same in every server's view."""
        maps = [slot_map(flushed, node) for node in flushed.nodes]
        assert set(range(CLUSTER_SLOTS)) == set(maps[0])
        assert {m.port for m in flushed.masters} == set(maps[0].values())
        assert [maps[0]] * 3 == maps

    def test_url_lists_the_masters(self, flushed: EmbeddedCluster) -> None:
        """The URL is redis+cluster:// with the three masters' addresses and no password."""
        ports = [m.port for m in flushed.masters]
        expected = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
        assert 3 == len(ports)
        assert expected == flushed.url

    def test_slot_of_matches_the_server(self, flushed: EmbeddedCluster) -> None:
        """slot_of hashes hash tags as the server's CLUSTER KEYSLOT does."""
        keys = ["foo", "{user1000}.following", "user1000", "{}x", "{g}a", "a{b}{c}"]
        with connect(flushed, flushed.masters[0]) as conn:
            expected = [int(conn.execute_command("CLUSTER", "KEYSLOT", k)) for k in keys]
        assert expected == [flushed.slot_of(k) for k in keys]
        assert flushed.slot_of("{user1000}.following") == flushed.slot_of("user1000")


class TestMigrateSlot:
    """migrate_slot moves one slot's keys with the MIGRATING/IMPORTING protocol."""

    def test_moves_every_key_and_keeps_ttls(self, flushed: EmbeddedCluster) -> None:
        """All 500 keys of the slot are readable from the target afterwards, TTLs kept, others untouched."""
        with cluster_client(flushed) as client:
            for i in range(500):
                client.set(f"{{g}}{i}", str(i), ex=300 if i % 5 == 0 else None)
            others = {f"{{o}}{i}": str(i) for i in range(20)}
            for key, value in others.items():
                client.set(key, value)
        slot = flushed.slot_of("{g}")
        source = flushed.node_for_slot(slot)
        target = next(m for m in flushed.masters if m.port != source.port)
        before = slot_map(flushed, flushed.masters[0])
        progress: list[int] = []

        moved = flushed.migrate_slot(slot, target, batch=64, on_batch=progress.append)
        flushed.wait_stable()

        assert 500 == moved
        assert [min(64 * n, 500) for n in range(1, 9)] == progress
        assert target.port == flushed.node_for_slot(slot).port
        after = slot_map(flushed, flushed.masters[0])
        assert {s: p for s, p in before.items() if s != slot} == {s: p for s, p in after.items() if s != slot}
        with connect(flushed, source) as src, connect(flushed, target) as tgt:
            counts = [int(c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) for c in (src, tgt)]
        assert [0, 500] == counts
        with cluster_client(flushed) as client:
            assert {f"{{g}}{i}": str(i) for i in range(500)} == {
                f"{{g}}{i}": client.get(f"{{g}}{i}") for i in range(500)
            }
            ttls = [int(client.ttl(f"{{g}}{i}")) for i in range(500)]
            assert others == {key: client.get(key) for key in others}
        assert [] == [(i, t) for i, t in enumerate(ttls) if i % 5 == 0 and not 270 <= t <= 300]
        assert [] == [(i, t) for i, t in enumerate(ttls) if i % 5 != 0 and t != -1]

    def test_to_its_owner_moves_nothing(self, flushed: EmbeddedCluster) -> None:
        """A slot migrated to the master that owns it stays put and no key is moved."""
        slot = flushed.slot_of("{same}")
        owner = flushed.node_for_slot(slot)
        with cluster_client(flushed) as client:
            client.set("{same}k", "v")
        assert 0 == flushed.migrate_slot(slot, owner)
        assert owner.port == flushed.node_for_slot(slot).port


class TestRestart:
    """A killed master restarted on its port and data directory."""

    def test_comes_back_with_its_identity_and_data(self, flushed: EmbeddedCluster) -> None:
        """After SIGKILL and restart the cluster is stable, the node has its old id and the key it held."""
        master = flushed.node_for_slot(flushed.slot_of("{r}"))
        node_id = flushed.node_id(master)
        with connect(flushed, master) as conn:
            # start_redis fsyncs the AOF every second: make this write durable before the crash.
            conn.config_set("appendfsync", "always")
            conn.set("{r}k", "before the crash")
        old_pid = master.pid
        others = [m for m in flushed.masters if m.port != master.port]

        flushed.kill(master)
        deadline = time.monotonic() + 15
        while cluster_info(flushed, others[0])["cluster_state"] != "fail":
            assert time.monotonic() < deadline, "the cluster never noticed the killed master"
            time.sleep(0.1)
        restarted = flushed.restart(master)
        flushed.wait_stable()

        assert not pid_alive(old_pid)
        assert (master.port, node_id) == (restarted.port, flushed.node_id(restarted))
        assert restarted in flushed.masters
        assert [] == [n.name for n in flushed.nodes if cluster_info(flushed, n)["cluster_state"] != "ok"]
        with cluster_client(flushed) as client:
            assert "before the crash" == client.get("{r}k")


class TestFailover:
    """failover promotes a replica of a cluster with one replica per master."""

    def test_promotes_the_replica_and_keeps_the_data(self, tmp_path: Path) -> None:
        """The replica becomes the master of its old master's slots and every key is still readable."""
        with start_cluster(tmp_path, 3, replicas=1, appendonly=False) as replicated:
            with cluster_client(replicated) as client:
                values = {f"k{i}": str(i) for i in range(200)}
                for key, value in values.items():
                    client.set(key, value)
            replica = replicated.replicas[0]
            with connect(replicated, replica) as conn:
                master_port = int(conn.info("replication")["master_port"])
            old_slots = {s for s, p in slot_map(replicated, replica).items() if p == master_port}

            replicated.failover(replica)

            assert replica in replicated.masters
            assert master_port in {r.port for r in replicated.replicas}
            assert {replica.port} == {
                replicated.node_for_slot(s).port for s in (min(old_slots), max(old_slots))
            }
            with connect(replicated, replica) as conn:
                assert "master" == conn.role()[0]
            with cluster_client(replicated) as client:
                assert values == {key: client.get(key) for key in values}


class TestPasswordCluster:
    """A cluster whose servers require a password."""

    def test_url_carries_the_password_and_servers_require_it(self, tmp_path: Path) -> None:
        """The URL holds the password, percent-encoded; servers refuse clients without it; MIGRATE uses it."""
        with start_cluster(tmp_path, 3, password=PASSWORD, appendonly=False) as secured:
            hosts = ",".join(f"127.0.0.1:{m.port}" for m in secured.masters)
            assert f"redis+cluster://:s3cret%2Fpw@{hosts}" == secured.url
            with (
                redis.Redis(
                    host="127.0.0.1", port=secured.masters[0].port, socket_timeout=2, retry=NO_RETRY
                ) as anonymous,
                pytest.raises(redis.AuthenticationError),
            ):
                anonymous.ping()
            with cluster_client(secured) as client:
                for i in range(30):
                    client.set(f"{{p}}{i}", str(i))
            slot = secured.slot_of("{p}")
            target = next(m for m in secured.masters if m.port != secured.node_for_slot(slot).port)
            assert 30 == secured.migrate_slot(slot, target)
            secured.wait_stable()
            with cluster_client(secured) as client:
                assert [str(i) for i in range(30)] == [client.get(f"{{p}}{i}") for i in range(30)]


class TestStop:
    """stop ends every server by PID."""

    def test_leaves_no_process_and_is_idempotent(self, tmp_path: Path) -> None:
        """After stop no server PID is alive, and a second stop is harmless."""
        started = start_cluster(tmp_path, 2, appendonly=False)
        pids = started.pids()
        started.stop()
        started.stop()
        assert 2 == len(pids)
        assert [] == [pid for pid in pids if pid_alive(pid)]
        assert [] == started.pids()

    def test_a_cluster_that_cannot_form_stops_what_it_started(self, tmp_path: Path) -> None:
        """When formation times out the error says so and no server is left running."""
        with pytest.raises(EmbeddedRedisError, match="not stable"):
            start_cluster(tmp_path, 2, appendonly=False, wait_seconds=0.5)
        assert [] == servers_in(tmp_path)
        assert 2 == len(list(tmp_path.glob("c*/nodes.conf")))

    def test_a_directory_of_an_earlier_cluster_is_refused(self, tmp_path: Path) -> None:
        """A nodes.conf left in the root is refused before any server starts."""
        (tmp_path / "c1").mkdir()
        (tmp_path / "c1" / "nodes.conf").write_text("", encoding="utf-8")
        with pytest.raises(EmbeddedRedisError, match="earlier cluster"):
            start_cluster(tmp_path, 2, appendonly=False)
        assert [] == servers_in(tmp_path)


def servers_in(root: Path) -> list[int]:
    """PIDs of the processes whose working directory is under `root` (a server chdirs to its --dir)."""
    pids: list[int] = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cwd = (proc / "cwd").resolve(strict=True)
            except OSError:
                continue
            if cwd.is_relative_to(root.resolve()):
                pids.append(int(proc.name))
    return pids
