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
partitions between the remaining shards. Those changes are planned on the stored, epoch-numbered map
by `rebalance`, which moves partitions only from shards above their new share to shards below it,
exactly the difference (minimal movement), by the same hash ranking.
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
    """Which shard owns each partition: `owners[p]` is the shard name of partition p.

    `shards` lists the shards in order with their `weights` (same order); `epoch` numbers the map:
    every change of an owner makes a map with a higher epoch, and every node uses the highest it has
    seen.
    """

    owners: tuple[str, ...]
    shards: tuple[str, ...] = field(default=())
    weights: tuple[int, ...] = field(default=())
    epoch: int = 0

    def weight_of(self, shard: str) -> int:
        """A shard's weight (1 when the map has none recorded)."""
        if shard in self.shards and self.weights:
            return self.weights[self.shards.index(shard)]
        return 1

    def with_owner(self, partition: int, shard: str, epoch: int) -> PartitionMap:
        """The same map with one partition on `shard`, numbered `epoch`."""
        owners = list(self.owners)
        owners[partition] = shard
        return PartitionMap(tuple(owners), self.shards, self.weights, epoch)

    def counts(self) -> dict[str, int]:
        """Shard -> how many partitions it owns (every listed shard, 0 included)."""
        counted = dict.fromkeys(self.shards, 0)
        for owner in self.owners:
            counted[owner] = counted.get(owner, 0) + 1
        return counted

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
    return PartitionMap(
        owners=tuple(owners), shards=tuple(names), weights=tuple(weights[n] for n in names), epoch=1
    )


@dataclass(frozen=True)
class Move:
    """One partition to move from one shard to another."""

    partition: int
    source: str
    target: str


def rebalance(current: PartitionMap, weights: Mapping[str, int]) -> PartitionMap:
    """The map after changing the shard set or weights, moving as few partitions as possible.

    Shards keep their order; new shards are appended; a shard left out of `weights` (or given weight
    0) is being removed and gives all its partitions away. Each shard's target share is the
    apportionment of the remaining weights; a shard above its share gives exactly its surplus (the
    partitions it ranks lowest for the receiver, as in `place_partitions`), a shard below it receives
    exactly its deficit, and no other partition moves.

    Args:
        current: the map in force.
        weights: shard name -> weight after the change (0 or absent = remove the shard).

    Returns:
        The new map, numbered like `current` (the mover raises the epoch as it flips partitions);
        removed shards are no longer listed.

    Raises:
        ValueError: no shard left, or a negative weight.
    """
    for name, weight in weights.items():
        if weight < 0:
            raise ValueError(f"shard {name!r} has weight {weight}; weights must be >= 0")
    kept = {n: w for n, w in weights.items() if w > 0}
    if not kept:
        raise ValueError("at least one shard must keep a weight above 0")
    order = [n for n in current.shards if n in kept] + [n for n in kept if n not in current.shards]
    targets = apportion({n: kept[n] for n in order})
    owned: dict[str, list[int]] = {}
    for p, owner in enumerate(current.owners):
        owned.setdefault(owner, []).append(p)
    pool: list[int] = []
    for donor in sorted(owned, key=lambda n: (n not in targets, n)):
        surplus = len(owned[donor]) - targets.get(donor, 0)
        if surplus <= 0:
            continue
        receivers = [n for n in order if len(owned.get(n, [])) < targets[n]]
        # A donor gives the partitions the receivers rank highest, so an added shard takes the same
        # partitions `place_partitions` would have given it.
        ranked = sorted(owned[donor], key=lambda p: max(_rank(r, p) for r in receivers), reverse=True)
        pool.extend(ranked[:surplus])
        owned[donor] = ranked[surplus:]
    owners = list(current.owners)
    for receiver in order:
        deficit = targets[receiver] - len(owned.get(receiver, []))
        if deficit <= 0:
            continue
        pool.sort(key=lambda p: _rank(receiver, p), reverse=True)
        taken, pool = pool[:deficit], pool[deficit:]
        for p in taken:
            owners[p] = receiver
        owned.setdefault(receiver, []).extend(taken)
    return PartitionMap(tuple(owners), tuple(order), tuple(kept[n] for n in order), current.epoch)


def moves_between(old: PartitionMap, new: PartitionMap) -> list[Move]:
    """Every partition whose owner differs between two maps, ascending."""
    return [
        Move(p, before, after)
        for p, (before, after) in enumerate(zip(old.owners, new.owners, strict=True))
        if before != after
    ]
