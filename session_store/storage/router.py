"""Routing: which shard serves a partition, from the partition map of the configured shards."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from session_store.model.placement import PartitionMap, place_partitions
from session_store.storage.shard import Shard


class Router:
    """The shards of this service node and the partition map that places partitions on them."""

    def __init__(self, shards: Mapping[str, Shard], weights: Mapping[str, int] | None = None) -> None:
        """Place partitions on `shards` (weights default to 1 each).

        Raises:
            ValueError: no shards, or weights for unknown shards.
        """
        if not shards:
            raise ValueError("at least one shard is needed")
        weights = dict(weights or {})
        unknown = set(weights) - set(shards)
        if unknown:
            raise ValueError(f"weights given for unknown shards: {sorted(unknown)}")
        self.shards = dict(shards)
        self.partition_map: PartitionMap = place_partitions({name: weights.get(name, 1) for name in shards})
        self._by_partition = [self.shards[owner] for owner in self.partition_map.owners]
        self._partitions_by_shard = {name: self.partition_map.partitions_of(name) for name in self.shards}

    def shard_for(self, partition: int) -> Shard:
        """The shard that owns a partition."""
        return self._by_partition[partition]

    def partitions_by_shard(self) -> dict[str, list[int]]:
        """Shard name -> the partitions it owns."""
        return self._partitions_by_shard

    async def connect(self, *, attempts: int = 10, delay: float = 0.5) -> None:
        """Connect every shard (bounded retries each), concurrently.

        Raises:
            ShardUnavailableError: a shard did not answer.
        """
        await asyncio.gather(*(s.connect(attempts=attempts, delay=delay) for s in self.shards.values()))

    async def close(self) -> None:
        """Close every shard's pool."""
        await asyncio.gather(*(s.close() for s in self.shards.values()))
