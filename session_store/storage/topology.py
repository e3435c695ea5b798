"""The stored partition map: its JSON form, and reading and seeding it on a shard.

Every shard holds the newest map a mover wrote to it (``ss:topology``: epoch and JSON) and its own
ownership string (``ss:own``, read by every script's guard). The JSON lists the shards in order with
URL and weight, and the owner of every partition as an index into that list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from session_store.model.ids import PARTITION_COUNT
from session_store.model.placement import PartitionMap
from session_store.storage import keys
from session_store.storage.shard import Shard


@dataclass(frozen=True)
class Topology:
    """A partition map and how to reach each of its shards."""

    map: PartitionMap
    urls: dict[str, str]

    @property
    def epoch(self) -> int:
        """The map's epoch."""
        return self.map.epoch


def public_url(url: str) -> str:
    """A URL without its credentials: what the stored map and the admin API show. Nodes reach such a
    shard with their own Redis access settings (user, password file, TLS files)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"


def encode_topology(topology: Topology) -> str:
    """The JSON stored in ``ss:topology`` (URLs without credentials)."""
    names = list(topology.map.shards)
    index = {name: i for i, name in enumerate(names)}
    return json.dumps(
        {
            "epoch": topology.map.epoch,
            "shards": [
                {"name": n, "url": public_url(topology.urls.get(n, "")), "weight": topology.map.weight_of(n)}
                for n in names
            ],
            "owners": [index[o] for o in topology.map.owners],
        },
        separators=(",", ":"),
    )


def decode_topology(text: str) -> Topology:
    """The inverse of `encode_topology`.

    Raises:
        ValueError: the text is not a complete map.
    """
    try:
        data: dict[str, Any] = json.loads(text)
        shards = [(str(s["name"]), str(s["url"]), int(s["weight"])) for s in data["shards"]]
        names = [s[0] for s in shards]
        owners = tuple(names[int(i)] for i in data["owners"])
        epoch = int(data["epoch"])
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"stored partition map is unreadable: {exc}") from exc
    if len(owners) != PARTITION_COUNT:
        raise ValueError(f"stored partition map has {len(owners)} partitions, not {PARTITION_COUNT}")
    return Topology(
        PartitionMap(owners, tuple(names), tuple(s[2] for s in shards), epoch),
        {name: url for name, url, _ in shards},
    )


def ownership_bytes(partition_map: PartitionMap, shard: str) -> str:
    """The ownership string of a shard under a map: '1' for its partitions, '0' for the others."""
    return "".join("1" if owner == shard else "0" for owner in partition_map.owners)


async def read_topology(shard: Shard) -> Topology | None:
    """The map a shard holds, or None when it holds none.

    Raises:
        SessionStoreError: the shard failed, or its map is unreadable (a ValueError's message).
    """
    text = await shard.command("HGET", keys.TOPOLOGY, "map")
    if not text:
        return None
    return decode_topology(str(text))


async def read_epoch(shard: Shard) -> int:
    """The epoch of the map a shard holds (0 for none).

    Raises:
        SessionStoreError: the shard failed.
    """
    epoch = await shard.command("HGET", keys.TOPOLOGY, "epoch")
    return int(epoch) if epoch else 0


async def seed_topology(shard: Shard, topology: Topology, *, ownership: bool) -> bool:
    """Store `topology` on a shard if newer than its own; with `ownership`, also give the shard its
    ownership string under that map when it has none.

    Returns:
        Whether the ownership string was written.

    Raises:
        SessionStoreError: the shard failed.
    """
    own = ownership_bytes(topology.map, shard.name) if ownership else ""
    seeded, _held = await shard.call(
        "seed_topology",
        [keys.OWNERSHIP, keys.TOPOLOGY],
        [own, topology.epoch, encode_topology(topology)],
    )
    return int(seeded) == 1
