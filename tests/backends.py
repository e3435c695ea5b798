"""The two storage backends the integration suite runs against: standalone shards and a Redis Cluster.

A test module (or class) opts into both with ``pytestmark = BOTH_BACKENDS``: every test of it that
uses the ``backend`` fixture (through ``flushed_shards``, ``server``, ``client`` ...) runs once per
backend (tests/conftest.py, ``pytest_generate_tests``); its other tests run once. Modules that reach
into the shards' keys directly stay standalone-only.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import pytest
import redis

from session_store.config import ShardSettings, is_cluster_url, parse_cluster_url
from session_store.storage import keys
from session_store.storage.router import Router

STANDALONE = "standalone"
CLUSTER = "cluster"
BACKENDS = (STANDALONE, CLUSTER)
BOTH_BACKENDS = pytest.mark.both_backends
"""Run the tests of a module (or class) that use a backend on both backends."""


def flush_all(shards: Sequence[ShardSettings]) -> None:
    """FLUSHALL every standalone shard, or every primary of a Redis Cluster store."""
    for shard in shards:
        if not is_cluster_url(shard.url):
            with redis.Redis.from_url(shard.url) as conn:
                conn.flushall()
            continue
        target = parse_cluster_url(shard.url)
        host, port = target.nodes[0]
        with redis.RedisCluster(host=host, port=port, password=target.password) as cluster:
            cluster.flushall(target_nodes=redis.RedisCluster.PRIMARIES)


async def partitioned_keys(router: Router, pattern: str = "*") -> list[str]:
    """Every partitioned key of the store, in the standalone layout, that matches an fnmatch
    `pattern` (on either backend: each shard, or each group of a cluster, is scanned for its own)."""
    found: set[str] = set()
    for shard in router.shards.values():
        cursor = "0"
        while True:
            cursor, batch = await shard.command("SCAN", cursor, "MATCH", f"{keys.PREFIX}{{*", "COUNT", 1000)
            found.update(keys.standalone_form(str(k)) for k in batch)
            if str(cursor) == "0":
                break
    return sorted(k for k in found if fnmatch.fnmatchcase(k, pattern))
