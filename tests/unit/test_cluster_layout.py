"""The Redis Cluster backend without a cluster: the grouped key layout (storage/keys.py), the key
positions of the commands sent to a group (storage/cluster.py), the cluster URL and the placement of
partitions on groups."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from session_store.config import (
    EventSettings,
    RedisSettings,
    Settings,
    SettingsError,
    ShardSettings,
    parse_cluster_url,
    parse_shards,
)
from session_store.model.ids import PARTITION_COUNT
from session_store.storage import keys
from session_store.storage.access import build_shards
from session_store.storage.cluster import group_command, group_names, group_partitions
from session_store.storage.router import Router
from tests.unit.test_keys import Ids, all_partition_keys, any_ids

partitions = st.integers(0, PARTITION_COUNT - 1)
group_counts = st.sampled_from(keys.GROUP_COUNTS)
CLUSTER_URL = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"


def slot(key: str) -> int:
    """The Redis Cluster hash slot of a key."""
    return key_slot(key.encode())


class TestGroupedLayout:
    @given(partition=partitions, ids=any_ids, groups=group_counts)
    def test_every_key_of_a_group_is_in_the_groups_slot(self, partition: int, ids: Ids, groups: int) -> None:
        """A partition's keys and its group's per-shard keys, grouped, all hash to the group's slot."""
        group = keys.group_of(partition, groups)
        per_shard = [
            *keys.SHARD_KEYS,
            *keys.GUARD_KEYS,
            keys.SHARD_IDENTITY,
            keys.TOPOLOGY,
            keys.realm_policy(ids.realm),
            keys.realm_markers(ids.realm),
        ]
        grouped = [keys.in_group(k, group, groups) for k in (*all_partition_keys(partition, ids), *per_shard)]

        assert {slot(keys.group_tag(group, groups))} == {slot(k) for k in grouped}

    @given(partition=partitions, ids=any_ids, groups=group_counts)
    def test_grouping_keeps_the_partition_and_is_undone_by_standalone_form(
        self, partition: int, ids: Ids, groups: int
    ) -> None:
        """A grouped partition key names its partition, keeps its length, and maps back exactly."""
        group = keys.group_of(partition, groups)
        for key in all_partition_keys(partition, ids):
            grouped = keys.in_group(key, group, groups)
            assert partition == keys.partition_of(grouped)
            assert len(key) == len(grouped)
            assert key == keys.standalone_form(grouped)
            assert grouped == keys.in_group(grouped, group, groups)

    @given(groups=group_counts, first=partitions, second=partitions)
    def test_groups_split_the_partitions_evenly_and_in_order(
        self, groups: int, first: int, second: int
    ) -> None:
        """Every group holds 4096/groups consecutive partitions; group order follows partition order."""
        assert (first <= second) <= (keys.group_of(first, groups) <= keys.group_of(second, groups))
        assert first in group_partitions(keys.group_of(first, groups), groups)
        assert PARTITION_COUNT // groups == len(group_partitions(0, groups))

    def test_grouped_forms(self) -> None:
        """The braces move into the partition's digits; a per-shard key gets the group's tag."""
        assert "ss:{a}bc:s:x" == keys.in_group("ss:{abc}:s:x", 0xA, 16)
        assert "ss:{ab}c:s:x" == keys.in_group("ss:{abc}:s:x", 0xAB, 256)
        assert "ss:{a}:events" == keys.in_group("ss:events", 0xA, 16)
        assert "ss:{0f}:policy:r" == keys.in_group("ss:policy:r", 0x0F, 256)

    def test_per_shard_keys_of_groups_are_no_partition_keys(self) -> None:
        """A group's own keys (``ss:{a}:events``) are not mistaken for a partition's."""
        with pytest.raises(ValueError, match="not a partitioned key"):
            keys.partition_of(keys.in_group(keys.EVENTS, 0xA, 16))
        with pytest.raises(ValueError, match="not a partitioned key"):
            keys.partition_of(keys.in_group(keys.EVENTS, 0xAB, 256))

    @pytest.mark.parametrize("groups", [0, 1, 15, 17, 4096])
    def test_other_group_counts_are_refused(self, groups: int) -> None:
        """Only 16 and 256 groups exist (a tag of one or two hex digits)."""
        with pytest.raises(ValueError, match="groups must be one of"):
            keys.group_width(groups)

    def test_foreign_keys_and_patterns_are_refused(self) -> None:
        """A key that is not ours, or a SCAN pattern other than all partition keys, has no grouped form."""
        with pytest.raises(ValueError, match="not a session-store key"):
            keys.in_group("other:key", 0, 16)
        with pytest.raises(ValueError, match="no grouped form"):
            keys.pattern_in_group("ss:*", 0, 16)
        assert "ss:{3}*" == keys.pattern_in_group("ss:{*", 3, 16)


class TestGroupCommand:
    def test_script_keys_are_mapped_and_arguments_are_not(self) -> None:
        """EVALSHA maps exactly its KEYS; an argument that looks like a key stays as it is."""
        args = ("EVALSHA", "sha", 2, "ss:{abc}:s:x", "ss:events", "ss:{abc}:s:x", "ss:counts")
        assert ("EVALSHA", "sha", 2, "ss:{a}bc:s:x", "ss:{a}:events", "ss:{abc}:s:x", "ss:counts") == (
            group_command(args, 0xA, 16)
        )

    def test_commands_of_each_shape(self) -> None:
        """First-argument, all-argument, XINFO, XREAD, SCAN, DBSIZE and keyless commands."""
        assert ("HGET", "ss:{1}:topology", "epoch") == group_command(("HGET", "ss:topology", "epoch"), 1, 16)
        assert ("EXISTS", "ss:{1}:events", "ss:{1}23:x") == group_command(
            ("EXISTS", "ss:events", "ss:{123}:x"), 1, 16
        )
        assert ("XINFO", "STREAM", "ss:{1}:events") == group_command(("XINFO", "STREAM", "ss:events"), 1, 16)
        assert ("XREAD", "COUNT", 5, "BLOCK", 10, "STREAMS", "ss:{1}:events", "0-0") == group_command(
            ("XREAD", "COUNT", 5, "BLOCK", 10, "STREAMS", "ss:events", "0-0"), 1, 16
        )
        assert ("SCAN", "0", "MATCH", "ss:{1}*", "COUNT", 10) == group_command(
            ("SCAN", "0", "MATCH", "ss:{*", "COUNT", 10), 1, 16
        )
        assert ("CLUSTER", "COUNTKEYSINSLOT", slot("{1}")) == group_command(("DBSIZE",), 1, 16)
        assert ("INFO", "memory") == group_command(("INFO", "memory"), 1, 16)

    def test_a_command_of_unknown_shape_is_refused(self) -> None:
        """A command whose keys this backend cannot find fails loudly instead of going to a wrong slot."""
        with pytest.raises(ValueError, match="does not know the keys of KEYS"):
            group_command(("KEYS", "ss:*"), 0, 16)


class TestClusterURL:
    def test_hosts_groups_credentials_and_tls(self) -> None:
        """The URL gives some nodes, the group count, the credentials and TLS."""
        parsed = parse_cluster_url("rediss+cluster://app:p%40ss@10.0.0.1:7000,[::1]:7001?groups=256")
        assert ((("10.0.0.1", 7000), ("::1", 7001)), 256, "app", "p@ss", True) == (
            parsed.nodes,
            parsed.groups,
            parsed.username,
            parsed.password,
            parsed.tls,
        )
        assert 16 == parse_cluster_url(CLUSTER_URL).groups

    @pytest.mark.parametrize(
        "url",
        [
            "redis+cluster://127.0.0.1",
            "redis+cluster://127.0.0.1:7000/1",
            "redis+cluster://127.0.0.1:7000?groups=32",
            "redis+cluster://127.0.0.1:7000?db=0",
            "redis+cluster://:secret@127.0.0.1:99999",
            "redis+cluster://",
        ],
    )
    def test_malformed_urls_are_refused_without_the_password(self, url: str) -> None:
        """A bad cluster URL is a SettingsError that never shows the password."""
        with pytest.raises(SettingsError) as raised:
            parse_cluster_url(url)
        assert "secret" not in str(raised.value)

    def test_the_cluster_is_the_only_entry(self) -> None:
        """Its host list is one entry, named `cluster`; standalone shards beside it are refused."""
        assert (ShardSettings(name="cluster", url=CLUSTER_URL),) == parse_shards(CLUSTER_URL)
        with pytest.raises(SettingsError, match="the only entry"):
            parse_shards(f"{CLUSTER_URL}/0,redis://127.0.0.1:6379/0")

    def test_keyspace_notifications_are_refused_with_a_cluster(self) -> None:
        """Notifications are per node while groups move between nodes: the setting is refused."""
        with pytest.raises(SettingsError, match="NOTIFICATIONS"):
            Settings(
                redis=RedisSettings(shards=parse_shards(CLUSTER_URL)),
                events=EventSettings(notifications=True),
            )


class TestGroupPlacement:
    @pytest.mark.parametrize("groups", keys.GROUP_COUNTS)
    def test_each_group_is_a_shard_owning_its_partitions_for_good(self, groups: int) -> None:
        """A cluster store is one shard per group, each owning its consecutive partitions; the router
        places by them (not by apportionment) and knows that placement is the cluster's."""
        shards = build_shards(
            RedisSettings(), [ShardSettings(name="c", url=f"{CLUSTER_URL}?groups={groups}")]
        )
        router = Router(shards)

        assert group_names("c", groups) == list(shards)
        assert router.fixed
        for partition in (0, 1, 255, 256, 4095):
            assert (
                f"c/{keys.group_of(partition, groups):0{keys.group_width(groups)}x}"
                == router.shard_for(partition).name
            )

    def test_standalone_shards_are_not_fixed(self) -> None:
        """Shards of redis:// URLs are placed by the stored map and moved by session-store."""
        router = Router(
            build_shards(RedisSettings(), parse_shards("redis://127.0.0.1:1/0,redis://127.0.0.1:2/0"))
        )
        assert not router.fixed

    def test_groups_cannot_be_mixed_with_standalone_shards(self) -> None:
        """A router over a cluster's groups and a standalone shard is refused."""
        shards = build_shards(RedisSettings(), [ShardSettings(name="c", url=CLUSTER_URL)])
        shards.update(build_shards(RedisSettings(), parse_shards("redis://127.0.0.1:1/0")))
        with pytest.raises(ValueError, match="cannot be mixed"):
            Router(shards)
