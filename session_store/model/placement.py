"""Placement of partitions on shards by consistent hashing: a ring with weighted virtual nodes.

Partitions sit at evenly spaced points of a 64-bit ring; each shard owns `weight * VNODES_PER_WEIGHT`
pseudo-random points, and a partition belongs to the first shard point at or after it (wrapping).
Evenly spaced partitions remove the sampling noise of hashing them, so balance depends only on the
number of virtual nodes (relative deviation about 1/sqrt(vnodes)). Adding a shard only inserts
points, so partitions move only to the new shard, about 1/(N+1) of them.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from session_store.model.ids import PARTITION_COUNT

VNODES_PER_WEIGHT = 4096
_RING = 1 << 64


def _point(shard: str, index: int) -> int:
    """The ring position of one virtual node of a shard."""
    return int.from_bytes(hashlib.blake2b(f"{shard}#{index}".encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class PartitionMap:
    """Which shard owns each partition: `owners[p]` is the shard name of partition p."""

    owners: tuple[str, ...]
    shards: tuple[str, ...] = field(default=())

    def owner(self, partition: int) -> str:
        """The shard that owns a partition."""
        return self.owners[partition]

    def partitions_of(self, shard: str) -> list[int]:
        """Every partition a shard owns, ascending."""
        return [p for p, owner in enumerate(self.owners) if owner == shard]


def place_partitions(weights: Mapping[str, int]) -> PartitionMap:
    """Place every partition on one of the weighted shards.

    Args:
        weights: shard name -> positive integer weight.

    Returns:
        The partition map; the same for the same input on every node.

    Raises:
        ValueError: no shards, or a weight below 1.
    """
    if not weights:
        raise ValueError("at least one shard is needed")
    points: list[tuple[int, str]] = []
    for name, weight in weights.items():
        if weight < 1:
            raise ValueError(f"shard {name!r} has weight {weight}; weights must be >= 1")
        points.extend((_point(name, i), name) for i in range(weight * VNODES_PER_WEIGHT))
    points.sort()
    positions = [pos for pos, _ in points]
    owners: list[str] = []
    step = _RING // PARTITION_COUNT
    for partition in range(PARTITION_COUNT):
        index = bisect.bisect_left(positions, partition * step)
        owners.append(points[index % len(points)][1])
    return PartitionMap(owners=tuple(owners), shards=tuple(sorted(weights)))
