"""The storm scenarios: how long, how many shards and nodes, and which faults at which second.

A scenario whose `pending` is set is listed but never run: it says which capability it waits for
(no fake passes). A scenario with `expect` is a control: its fault really loses data, and it passes
only when the checker reports it. `ci` is the bounded form `.ci/run` runs (under two minutes with start-up and
checking); `make cluster-test` runs `FULL`.
"""

from __future__ import annotations

from dataclasses import dataclass

FAULT_KINDS = (
    "shard-kill",  # SIGKILL a shard, restart it from its AOF on the same port after `seconds`
    "shard-wipe",  # control: SIGKILL a shard, delete its AOF, restart it empty (sessions are lost)
    "shard-stall",  # SIGSTOP a shard for `seconds`, then SIGCONT
    "node-kill",  # SIGKILL a service node, restart it on the same port after `seconds`
    "clock-jump",  # advance every node's test clock by `seconds` together
    "add-shard",  # start a new shard, `session-store cluster add-shard` moves its share to it
    "remove-shard",  # `session-store cluster remove-shard` moves every partition off a shard
    "sentinel-failover",  # SENTINEL FAILOVER of a shard's group (needs replicas and sentinels)
    "slot-migrate",  # cluster mode: move the slots of the partition groups `target` ("3,c": hex) on
    "cluster-failover",  # cluster mode: CLUSTER FAILOVER of the primary `target` (needs replicas)
)


@dataclass(frozen=True)
class Step:
    """One fault: what, on which shard or node, when (seconds into the storm), how long or how far."""

    at: float
    kind: str
    target: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """A storm with its faults."""

    name: str
    description: str
    duration: float
    steps: tuple[Step, ...] = ()
    shards: int = 3
    nodes: int = 3
    replicas: int = 0
    """Replicas per shard (with `sentinels`: every shard a Sentinel group)."""
    sentinels: int = 0
    cluster_mode: bool = False
    """One Redis Cluster of `shards` primaries (with `replicas` each) instead of standalone shards."""
    rate: float = 90.0
    """Actions per second over every identity node (a login is six calls)."""
    pending: str = ""
    """Non-empty: not runnable yet, and why."""
    expect: tuple[str, ...] = ()
    """A control scenario: it passes only when the checker reports these violation kinds (the fault
    really loses data, so a checker that saw nothing would be blind)."""


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("baseline", "the storm alone: no fault", 30),
        Scenario(
            "shard-kill",
            "SIGKILL a shard mid-storm and restart it from its AOF (twice, two shards)",
            45,
            (Step(10, "shard-kill", "s1", 3), Step(28, "shard-kill", "s0", 2)),
        ),
        Scenario(
            "node-kill",
            "SIGKILL a service node mid-storm and restart it on its port (twice, two nodes)",
            45,
            (Step(10, "node-kill", "n1", 2), Step(28, "node-kill", "n0", 2)),
        ),
        Scenario(
            "shard-stall",
            "SIGSTOP a shard past the service's Redis timeout (4 s), later another below it (1.5 s)",
            45,
            (Step(10, "shard-stall", "s2", 4), Step(28, "shard-stall", "s0", 1.5)),
        ),
        Scenario(
            "clock-jump",
            "every node's clock jumps 1000 s five times: sessions idle for two jumps expire, the "
            "oldest reach their maximum lifespan",
            45,
            tuple(Step(at, "clock-jump", "", 1000) for at in (8, 16, 24, 32, 40)),
        ),
        Scenario(
            "ci",
            "bounded CI form: shard kill, node kill, shard stall and two clock jumps in one storm",
            50,
            (
                Step(8, "shard-kill", "s1", 2),
                Step(18, "node-kill", "n1", 1),
                Step(28, "shard-stall", "s2", 3),
                Step(38, "clock-jump", "", 1000),
                Step(44, "clock-jump", "", 1000),
            ),
        ),
        Scenario(
            "control-wipe",
            "control: a shard loses its disk (SIGKILL, AOF deleted, restarted empty); passes only if the "
            "checker reports lost sessions",
            25,
            (Step(12, "shard-wipe", "s1", 1),),
            expect=("lost",),
        ),
        Scenario(
            "add-remove-shard",
            "online resharding mid-storm: a fourth shard added (session-store cluster add-shard), "
            "then s0 drained (remove-shard)",
            60,
            (Step(8, "add-shard"), Step(32, "remove-shard", "s0")),
        ),
        Scenario(
            "sentinel-failover",
            "every shard a Sentinel group (master, replica, 3 sentinels watching all groups); "
            "coordinated failovers (SENTINEL FAILOVER) of two groups mid-storm",
            45,
            (Step(10, "sentinel-failover", "s1"), Step(28, "sentinel-failover", "s0")),
            replicas=1,
            sentinels=3,
        ),
        Scenario(
            "cluster-mode",
            "the storm against a Redis Cluster of 3 primaries: slots of five partition groups migrated "
            "mid-storm (two rounds), a primary SIGKILLed and restarted from its AOF, a node killed",
            45,
            (
                Step(8, "slot-migrate", "3,c"),
                Step(16, "shard-kill", "c1", 2),
                Step(26, "node-kill", "n1", 2),
                Step(34, "slot-migrate", "5,a,e"),
            ),
            cluster_mode=True,
        ),
        Scenario(
            "cluster-failover",
            "the storm against a Redis Cluster of 3 primaries with a replica each: coordinated failovers "
            "(CLUSTER FAILOVER) of two primaries and a slot migration between them",
            45,
            (
                Step(10, "cluster-failover", "c1"),
                Step(20, "slot-migrate", "7"),
                Step(30, "cluster-failover", "c0"),
            ),
            replicas=1,
            cluster_mode=True,
        ),
    )
}

FULL = (
    "baseline",
    "shard-kill",
    "node-kill",
    "shard-stall",
    "clock-jump",
    "add-remove-shard",
    "sentinel-failover",
    "cluster-mode",
    "cluster-failover",
    "control-wipe",
)
"""What `make cluster-test` runs (every scenario that is not pending, except the CI mix)."""
CI = ("ci",)
