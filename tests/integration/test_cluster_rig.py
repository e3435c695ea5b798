"""The storm rig in cluster mode (`cluster_tests/cluster.py`): a Redis Cluster and a service node on
loopback, its faults (a primary killed and restarted, group slots migrated, a coordinated
failover), and a stop that leaves no process behind.

The storms themselves run in `make cluster-test`; this checks the rig's cluster-mode parts on their
own, with one service node.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster_tests.cluster import Cluster, ClusterError, is_running
from session_store import SessionStoreClient
from session_store.embedded import EmbeddedCluster
from session_store.model.ids import user_partition
from session_store.storage import keys

pytestmark = pytest.mark.timeout(180)

REALM = "rig"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 primaries with a replica each and one service node, stopped by PID at the end."""
    root = tmp_path_factory.mktemp("cluster-rig")
    cluster = Cluster.start(root, shards=3, nodes=1, replicas=1, cluster_mode=True, appendfsync="always")
    try:
        yield cluster
    finally:
        cluster.stop()


def user_in_group(group: int) -> str:
    """A user id whose partition is in `group` (of 16)."""
    return next(f"u{i}" for i in range(10_000) if keys.group_of(user_partition(REALM, f"u{i}"), 16) == group)


def group_owner(rig: Cluster, group: int) -> int:
    """The port of the primary serving the group's slot now."""
    backend = rig._require_backend()
    return backend.node_for_slot(EmbeddedCluster.slot_of(keys.group_tag(group, 16))).port


class TestClusterMode:
    """What the storm scenarios `cluster-mode` and `cluster-failover` rely on."""

    def test_state_names_every_server_and_one_cluster_url(self, rig: Cluster) -> None:
        """Primaries c0-c2, replicas c3-c5, every one running; the nodes get one redis+cluster:// URL."""
        state = rig.state
        assert (["c0", "c1", "c2"], ["c3", "c4", "c5"]) == (
            [s.name for s in state.shards],
            [s.name for s in state.replicas],
        )
        assert all(is_running(s.pid, s.start_ticks) for s in [*state.shards, *state.replicas])
        assert state.redis_urls.startswith("redis+cluster://")
        assert 6 == len(state.redis_urls.split(","))
        assert {"master"} == {rig.shard_info(s.name)["role"] for s in state.shards}

    def test_a_killed_primary_comes_back_with_its_sessions(self, rig: Cluster) -> None:
        """SIGKILL of the primary of a user's group, restart from its AOF: the session is still there."""
        user = user_in_group(0x4)
        port = group_owner(rig, 0x4)
        name = next(s.name for s in [*rig.state.shards, *rig.state.replicas] if s.port == port)
        with SessionStoreClient(rig.state.targets[0]) as store:
            session = store.create_user_session(REALM, user)
            old = rig.kill_shard(name)
            new = rig.restart_shard(name)
            rig.settle()
            got = store.get_user_session(REALM, session.id)

        assert old != new
        assert user == got.user_id
        assert 1 == rig.shard(name).restarts

    def test_migrated_groups_keep_their_sessions(self, rig: Cluster) -> None:
        """migrate_groups moves each group's slot to another primary; its sessions follow it."""
        users = {g: user_in_group(g) for g in (0x2, 0xB)}
        with SessionStoreClient(rig.state.targets[0]) as store:
            sessions = {g: store.create_user_session(REALM, u) for g, u in users.items()}
            before = {g: group_owner(rig, g) for g in users}
            lines = rig.migrate_groups(users)
            after = {g: group_owner(rig, g) for g in users}
            got = {g: store.get_user_session(REALM, s.id).user_id for g, s in sessions.items()}

        assert 2 == len(lines)
        assert all(before[g] != after[g] for g in users)
        assert users == got

    def test_failover_promotes_the_replica(self, rig: Cluster) -> None:
        """failover_primary makes a replica of the named primary serve its slots; sessions stay."""
        user = user_in_group(0x9)
        port = group_owner(rig, 0x9)
        name = next(s.name for s in [*rig.state.shards, *rig.state.replicas] if s.port == port)
        with SessionStoreClient(rig.state.targets[0]) as store:
            session = store.create_user_session(REALM, user)
            rig.failover_primary(name)
            got = store.get_user_session(REALM, session.id)

        assert port != group_owner(rig, 0x9)
        assert user == got.user_id

    def test_resharding_commands_are_refused(self, rig: Cluster) -> None:
        """add-shard and remove-shard are the cluster's business in cluster mode."""
        with pytest.raises(ClusterError, match="places partitions itself"):
            rig.add_shard()
        with pytest.raises(ClusterError, match="places partitions itself"):
            rig.remove_shard("c0")


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    """A cluster-mode rig stopped by PID leaves none of its servers or nodes running."""
    cluster = Cluster.start(tmp_path, shards=1, nodes=1, cluster_mode=True)
    pids = [(pid, ticks) for _, _, pid, ticks in cluster.state.processes()]
    outcomes = cluster.stop(grace=5)

    assert 2 == len(pids)
    assert not any(is_running(pid, ticks) for pid, ticks in pids)
    assert {"exited"} == {o for *_, o in outcomes}
    assert [] == cluster.leftovers()
