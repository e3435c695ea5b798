"""Placement of partitions on shards: weighted apportionment over the ordered shard list.

The shards form an ordered list (the configuration order; new shards are appended). The first shard
starts with every partition; each next shard then takes exactly its weighted share of the partitions,
drawn from the shards before it in proportion to their surplus over their own new share. Which of a
donor's partitions move is decided by a hash of (new shard name, partition), so every node computes
the same map.

Why not a hash ring: with 4096 partitions, any scheme that places each partition by an independent
hash (a ring with many virtual nodes, rendezvous, jump hashing) leaves a shard's count binomial, a
standard deviation of sqrt((N-1)/4096) of the mean: 6 % at 16 shards, so some shard is routinely
10-20 % off. Apportionment is exact to one partition, and appending a shard still moves only
partitions *to* the new shard, exactly its share (about 1/(N+1) at equal weights).

Removing a shard or changing a weight is not an append: recomputing the map would also move
partitions between the remaining shards. Those changes are done on the stored, epoch-numbered map
(online resharding), which hands the removed shard's partitions out by the same surplus rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from session_store.model.ids import PARTITION_COUNT


def _rank(shard: str, partition: int) -> bytes:
    """The order in which a donor gives its partitions to `shard` (highest first)."""
    return hashlib.blake2b(f"{shard}#{partition}".encode(), digest_size=8).digest()


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


def apportion(weights: Mapping[str, int], total: int = PARTITION_COUNT) -> dict[str, int]:
    """Split `total` by weight with the largest-remainder method (ties to the earlier shard)."""
    weight_sum = sum(weights.values())
    exact = {name: total * w / weight_sum for name, w in weights.items()}
    shares = {name: int(q) for name, q in exact.items()}
    order = sorted(weights, key=lambda n: (-(exact[n] - shares[n]), list(weights).index(n)))
    for name in order[: total - sum(shares.values())]:
        shares[name] += 1
    return shares


def place_partitions(weights: Mapping[str, int]) -> PartitionMap:
    """Place every partition on the ordered, weighted shards.

    Args:
        weights: shard name -> positive integer weight, in configuration order (append new shards).

    Returns:
        The partition map; the same for the same ordered input on every node.

    Raises:
        ValueError: no shards, or a weight below 1.
    """
    if not weights:
        raise ValueError("at least one shard is needed")
    for name, weight in weights.items():
        if weight < 1:
            raise ValueError(f"shard {name!r} has weight {weight}; weights must be >= 1")
    names = list(weights)
    owners = [names[0]] * PARTITION_COUNT
    owned: dict[str, list[int]] = {names[0]: list(range(PARTITION_COUNT))}
    for k in range(1, len(names)):
        new = names[k]
        targets = apportion({n: weights[n] for n in names[: k + 1]})
        taken: list[int] = []
        for donor in names[:k]:
            surplus = len(owned[donor]) - targets[donor]
            if surplus <= 0:
                continue
            ranked = sorted(owned[donor], key=lambda p: _rank(new, p), reverse=True)
            give, keep = ranked[:surplus], ranked[surplus:]
            owned[donor] = sorted(keep)
            taken.extend(give)
        for p in taken:
            owners[p] = new
        owned[new] = sorted(taken)
    return PartitionMap(owners=tuple(owners), shards=tuple(names))
