"""Moving partitions between shards while serving: add a shard, remove one, finish an interrupted move.

One partition moves in five steps (docs/architecture.md, "Resharding"):

1. **copying**: the source marks it '3'; its scripts still run, and the ownership guard journals
   every key they touch. The mover copies every key of the partition (SCAN, DUMP, PTTL, RESTORE
   REPLACE) to the target, which does not own it yet, so nothing reads the copy.
2. **frozen**: the source marks it '2'; its scripts answer SS_FROZEN (callers retry in ms). The
   mover copies again the keys the journal names (deleting those gone).
3. **accepted**: the source marks it '4' (handed over), then the target marks it '1' under a map
   with a higher epoch.
4. **released**: the source marks it '0'; its scripts answer SS_MOVED and callers follow the map.
5. **cleaned**: the source's copy is deleted.

The plan (every move, the map to reach) is stored on every shard before the first move, and a lease
names the one mover working on it. A mover that stops at any step leaves each partition in a state
that `recover` can read from the two ownership bytes: before step 3 the source still owns it (the
move is rolled back or done again), from step 3 on the target does (the move is finished). With the
target down, a source byte '2' or '3' still proves the target never accepted (rolled back at once);
only a '4' must wait for the target. Callers
never see a partition owned by no shard or by two.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from session_store.errors import (
    PreconditionFailedError,
    SessionStoreError,
    ShardUnavailableError,
    UnavailableError,
)
from session_store.model.placement import Move, PartitionMap, moves_between, rebalance
from session_store.storage import keys
from session_store.storage.router import Router
from session_store.storage.shard import Shard
from session_store.storage.topology import Topology, decode_topology, encode_topology, seed_topology

log = structlog.get_logger(__name__)

LEASE_SECONDS = 10.0
"""How long the mover's lease lasts without renewal: how soon another mover (or a starting service
node) may take over the plan of one that died."""
COPY_BATCH = 256
"""Keys dumped and restored per round trip."""
SCAN_COUNT = 2000
"""SCAN's COUNT hint when listing a source's keys."""
DEFAULT_PARTITIONS_PER_SECOND = 100.0
"""Default rate limit of partition flips (foreground latency stays flat; docs/benchmarks.md)."""

StepHook = Callable[[str, int], Awaitable[None]]
"""Called after each step of each partition: (step name, partition). Tests stop the mover here."""
ProgressHook = Callable[["MoveProgress"], None]
"""Told after every partition moved."""

STEPS = ("copying", "copied", "frozen", "accepted", "released", "cleaned")
"""The step names `StepHook` receives, in order."""


@dataclass(frozen=True)
class MovePlan:
    """A stored resharding: the moves still to make and the map they lead to."""

    id: str
    target: Topology
    moves: tuple[Move, ...]
    lock_shard: str

    def encode(self) -> str:
        """The JSON stored in ``ss:rebalance``."""
        return json.dumps(
            {
                "id": self.id,
                "target": json.loads(encode_topology(self.target)),
                "moves": [[m.partition, m.source, m.target] for m in self.moves],
                "lock": self.lock_shard,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str) -> MovePlan:
        """The inverse of `encode`.

        Raises:
            ValueError: not a plan.
        """
        try:
            data = json.loads(text)
            return cls(
                id=str(data["id"]),
                target=decode_topology(json.dumps(data["target"])),
                moves=tuple(Move(int(p), str(s), str(t)) for p, s, t in data["moves"]),
                lock_shard=str(data["lock"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"stored move plan is unreadable: {exc}") from exc


@dataclass
class MoveProgress:
    """How far a resharding is (also its final report)."""

    total: int
    moved: int = 0
    keys_copied: int = 0
    started: float = field(default_factory=time.monotonic)
    pauses_ms: list[float] = field(default_factory=list)
    epoch: int = 0

    @property
    def elapsed(self) -> float:
        """Seconds since the mover started."""
        return time.monotonic() - self.started

    @property
    def keys_per_second(self) -> float:
        """Keys copied per second so far."""
        return self.keys_copied / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float:
        """Seconds left at the rate so far (0 when done or nothing moved yet)."""
        if not self.moved or self.moved >= self.total:
            return 0.0
        return self.elapsed / self.moved * (self.total - self.moved)

    def summary(self) -> dict[str, Any]:
        """The numbers, for logs and the CLI."""
        pauses = sorted(self.pauses_ms)
        p99 = pauses[min(len(pauses) - 1, int(len(pauses) * 0.99))] if pauses else 0.0
        return {
            "moved": self.moved,
            "total": self.total,
            "keys_copied": self.keys_copied,
            "keys_per_second": round(self.keys_per_second),
            "elapsed_s": round(self.elapsed, 2),
            "eta_s": round(self.eta_seconds, 1),
            "pause_p99_ms": round(p99, 2),
            "pause_max_ms": round(pauses[-1], 2) if pauses else 0.0,
            "epoch": self.epoch,
        }


@dataclass(frozen=True)
class ShardStatus:
    """One shard in `Rebalancer.status`."""

    name: str
    url: str
    weight: int
    partitions: int
    keys: int | None
    """DBSIZE, or None when the shard did not answer."""


@dataclass(frozen=True)
class ClusterStatus:
    """The map in force, the shards and any move plan in progress."""

    epoch: int
    shards: tuple[ShardStatus, ...]
    plan_moves: int
    plan_done: int
    plan_id: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Rebalancer:
    """Plans and runs partition moves through a `Router` whose shards include source and target."""

    def __init__(
        self,
        router: Router,
        *,
        partitions_per_second: float = DEFAULT_PARTITIONS_PER_SECOND,
        lease_seconds: float = LEASE_SECONDS,
        on_step: StepHook | None = None,
        on_progress: ProgressHook | None = None,
    ) -> None:
        """Move through `router` (it adopts each new map as partitions flip).

        Args:
            partitions_per_second: at most this many partitions flip per second (> 0).
            lease_seconds: the mover's lease; a dead mover's plan waits this long for a new one.
            on_step: called after every step of every partition (tests).
            on_progress: told after every partition moved.
        """
        if partitions_per_second <= 0:
            raise ValueError("partitions_per_second must be > 0")
        self._router = router
        self._interval = 1.0 / partitions_per_second
        self._lease_ms = int(lease_seconds * 1000)
        self._on_step = on_step
        self._on_progress = on_progress
        self._token = secrets.token_hex(8)
        self._map: PartitionMap = router.partition_map
        self._urls: dict[str, str] = {}
        self._lock_shard = ""

    # -- public operations -------------------------------------------------------------------

    async def add_shard(self, name: str, shard: Shard, *, weight: int = 1) -> MoveProgress:
        """Add a shard and move to it the partitions of its share (only to it, only those).

        Raises:
            PreconditionFailedError: the name is taken, or another mover holds the lease.
            SessionStoreError: a shard failed (the move stops where it is; `recover` finishes it).
        """
        self._refuse_fixed()
        await self._router.refresh()
        if name in self._router.partition_map.shards:
            raise PreconditionFailedError(f"shard {name} is already in the partition map")
        await self._router.add_shard(name, shard)
        await self._copy_shared_keys(shard)
        weights = self._weights()
        weights[name] = weight
        return await self._plan_and_run(weights)

    async def remove_shard(self, name: str) -> MoveProgress:
        """Move every partition of a shard to the others (each to the shard below its new share).

        Raises:
            PreconditionFailedError: unknown shard, the last shard, or another mover holds the lease.
            SessionStoreError: a shard failed (the move stops where it is; `recover` finishes it).
        """
        self._refuse_fixed()
        await self._router.refresh()
        if name not in self._router.partition_map.shards:
            raise PreconditionFailedError(f"shard {name} is not in the partition map")
        if len(self._router.partition_map.shards) == 1:
            raise PreconditionFailedError("cannot remove the last shard")
        weights = self._weights()
        weights.pop(name)
        return await self._plan_and_run(weights)

    async def recover(self, *, resume: bool = True) -> MoveProgress | None:
        """Finish or roll back what a stopped mover left, if any plan is stored and its lease lapsed.

        Every partition the stopped mover was moving ends on exactly one shard: moved if its target
        had accepted it, else back on its source (or moved again, with `resume`). With `resume` the
        rest of the plan is then carried out; without it (a starting service node) the plan stays
        for `session-store cluster resume`.

        Returns:
            The progress of the resumed plan, or None when there was nothing to do or another
            mover holds the lease.

        Raises:
            SessionStoreError: a shard failed.
        """
        await self._router.refresh()
        plan = await self._read_plan()
        if plan is None:
            return None
        if not await self._lease(plan.lock_shard, self._lease_ms):
            return None
        try:
            await self._adopt_plan_shards(plan)
            pending = await self._repair(plan, resume=resume)
            if not resume:
                return None
            progress = MoveProgress(total=len(plan.moves), moved=len(plan.moves) - len(pending))
            await self._run(plan, pending, progress)
            return progress
        finally:
            await self._lease(plan.lock_shard, 0)

    async def status(self) -> ClusterStatus:
        """The map in force, each shard's partitions and keys, and the plan in progress (if any).

        Raises:
            SessionStoreError: no shard answered.
        """
        await self._router.refresh()
        pmap = self._router.partition_map
        counts = pmap.counts()
        names = list(self._router.shards)
        sizes = await asyncio.gather(
            *(self._router.shards[n].command("DBSIZE") for n in names), return_exceptions=True
        )
        shards = tuple(
            ShardStatus(
                name=n,
                url=self._router.shards[n].url,
                weight=pmap.weight_of(n) if n in pmap.shards else 0,
                partitions=counts.get(n, 0),
                keys=int(size) if isinstance(size, int) else None,
            )
            for n, size in zip(names, sizes, strict=True)
        )
        plan = await self._read_plan()
        done = 0
        if plan is not None:
            done = sum(1 for m in plan.moves if pmap.owner(m.partition) == m.target)
        return ClusterStatus(
            epoch=pmap.epoch,
            shards=shards,
            plan_moves=len(plan.moves) if plan else 0,
            plan_done=done,
            plan_id=plan.id if plan else "",
        )

    def _refuse_fixed(self) -> None:
        if self._router.fixed:
            raise PreconditionFailedError(
                "the store is a Redis Cluster: its slots are placed and moved by the cluster "
                "(redis-cli --cluster reshard / add-node / del-node), not by session-store"
            )

    # -- planning ----------------------------------------------------------------------------

    def _weights(self) -> dict[str, int]:
        pmap = self._router.partition_map
        return {n: pmap.weight_of(n) for n in pmap.shards if pmap.weight_of(n) > 0}

    async def _plan_and_run(self, weights: dict[str, int]) -> MoveProgress:
        current = self._router.partition_map
        lock_shard = current.shards[0]
        if not await self._lease(lock_shard, self._lease_ms):
            raise PreconditionFailedError("another mover holds the lease; see `session-store cluster status`")
        try:
            if await self._read_plan() is not None:
                raise PreconditionFailedError(
                    "a move plan is in progress: run `session-store cluster resume`"
                )
            target = rebalance(current, weights)
            moves = tuple(moves_between(current, target))
            urls = {n: s.url for n, s in self._router.shards.items()}
            plan = MovePlan(secrets.token_hex(6), Topology(target, urls), moves, lock_shard)
            await self._write_plan(plan)
            log.info("move_plan_started", plan=plan.id, moves=len(moves), epoch=current.epoch)
            progress = MoveProgress(total=len(moves))
            await self._run(plan, list(moves), progress)
            return progress
        finally:
            await self._lease(lock_shard, 0)

    def _union_map(self, plan: MovePlan) -> PartitionMap:
        """The router's map listing the plan's shards too (a removed shard keeps weight 0)."""
        pmap = self._router.partition_map
        names = list(pmap.shards) + [n for n in plan.target.map.shards if n not in pmap.shards]
        weights = tuple(plan.target.map.weight_of(n) if n in plan.target.map.shards else 0 for n in names)
        return PartitionMap(pmap.owners, tuple(names), weights, pmap.epoch)

    # -- running -----------------------------------------------------------------------------

    async def _run(self, plan: MovePlan, moves: Sequence[Move], progress: MoveProgress) -> None:
        self._map = self._union_map(plan)
        self._urls = dict(plan.target.urls)
        groups: dict[tuple[str, str, int], list[Move]] = {}
        for move in moves:
            groups.setdefault((move.source, move.target, move.partition >> 8), []).append(move)
        for (source_name, target_name, digit), group in sorted(groups.items(), key=lambda g: g[0][2]):
            source = self._router.shards[source_name]
            target = self._router.shards[target_name]
            await self._move_group(source, target, digit, group, progress)
        # The last flip's map still lists removed shards with weight 0: store the plan's own map.
        final = Topology(
            PartitionMap(
                self._map.owners, plan.target.map.shards, plan.target.map.weights, self._map.epoch + 1
            ),
            dict(plan.target.urls),
        )
        if final.map.owners != plan.target.map.owners:
            raise SessionStoreError("moves finished but the map differs from the plan's; run recover")
        await self._publish(final)
        await self._router.refresh()
        await self._clear_plan()
        progress.epoch = final.epoch
        log.info("move_plan_finished", plan=plan.id, **progress.summary())

    async def _move_group(
        self, source: Shard, target: Shard, digit: int, group: list[Move], progress: MoveProgress
    ) -> None:
        partitions = [m.partition for m in group]
        await self._renew()
        # Keys the target holds of partitions it does not own are leftovers of an interrupted copy.
        await self._delete_keys(target, await self._scan(target, digit, set(partitions)))
        await source.call("set_partition_state", [keys.OWNERSHIP], ["13", "3", *partitions])
        await self._step("copying", partitions[0])
        found = await self._scan(source, digit, set(partitions))
        src, dst = await self._raw(source), await self._raw(target)
        try:
            for move in group:
                progress.keys_copied += await self._copy(src, dst, found.get(move.partition, []))
            await self._step("copied", partitions[0])
            for move in group:
                await self._flip(
                    move,
                    shards=(source, target),
                    raw=(src, dst),
                    copied=found.get(move.partition, []),
                    progress=progress,
                )
        finally:
            src.close()
            dst.close()

    async def _flip(
        self,
        move: Move,
        *,
        shards: tuple[Shard, Shard],
        raw: tuple[Any, Any],
        copied: list[str],
        progress: MoveProgress,
    ) -> None:
        """Steps 2 to 5 of one partition already copied once (`copied`: the keys of that copy)."""
        source, target = shards
        src, dst = raw
        p = move.partition
        await self._renew()
        prepared = self._prepare(move)  # the next map's JSON is built before the pause, not in it
        began = time.perf_counter()
        changed = [
            _text(k)
            for k in await source.call("freeze_partition", [keys.OWNERSHIP, keys.JOURNAL], [p, keys.tag(p)])
        ]
        await self._step("frozen", p)
        copied_now, summary = await asyncio.gather(self._copy(src, dst, changed), self._summary(source, p))
        progress.keys_copied += copied_now
        released = await self._accept_and_release(move, source, target, summary, prepared)
        progress.pauses_ms.append((released - began) * 1000)
        await self._announce(move, prepared)
        await self._delete_keys(source, {p: [*copied, *changed]})
        await self._step("cleaned", p)
        progress.moved += 1
        progress.epoch = self._map.epoch
        if self._on_progress is not None:
            self._on_progress(progress)
        if progress.moved % 50 == 0:
            log.info("move_progress", **progress.summary())
        await asyncio.sleep(max(0.0, self._interval - (time.perf_counter() - began)))

    def _prepare(self, move: Move) -> tuple[Topology, str]:
        """The map after flipping `move` (epoch + 1) and its stored JSON."""
        pmap = self._map.with_owner(move.partition, move.target, max(self._map.epoch, self._router.epoch) + 1)
        topology = Topology(pmap, self._urls)
        return topology, encode_topology(topology)

    async def _accept_and_release(
        self,
        move: Move,
        source: Shard,
        target: Shard,
        summary: tuple[dict[str, int], str],
        prepared: tuple[Topology, str],
    ) -> float:
        """Steps 3 and 4 of a partition frozen on its source with its keys on the target; returns
        when (perf_counter) the source released it: the end of the pause callers see."""
        p = move.partition
        deltas, earliest = summary
        topology, text = prepared
        # '4' on the source records that the target may accept from now on: recovery may roll back a
        # partition still '2' or '3' without asking the target (which may be down), never a '4'.
        await source.call("set_partition_state", [keys.OWNERSHIP], ["24", "4", p])
        await target.call(
            "accept_partition",
            [keys.OWNERSHIP, keys.TOPOLOGY, keys.DUE, keys.COUNTS],
            [p, topology.epoch, text, json.dumps(deltas), earliest],
        )
        self._map = topology.map
        await self._step("accepted", p)
        await source.call(
            "release_partition",
            [keys.OWNERSHIP, keys.TOPOLOGY, keys.DUE, keys.COUNTS],
            [p, topology.epoch, text, json.dumps(deltas)],
        )
        released = time.perf_counter()
        await self._step("released", p)
        return released

    async def _announce(self, move: Move, prepared: tuple[Topology, str]) -> None:
        """This node and the shards other than source and target learn the map (best effort: nodes
        also read the epoch of source and target)."""
        topology = prepared[0]
        await self._router.use(topology)
        others = [s for n, s in self._router.shards.items() if n not in (move.source, move.target)]
        await asyncio.gather(
            *(seed_topology(s, topology, ownership=False) for s in others), return_exceptions=True
        )

    async def _summary(self, source: Shard, partition: int) -> tuple[dict[str, int], str]:
        """The partition's sessions per counter field and its earliest deadline (read while frozen)."""
        meta, first = await source.pipeline(
            [
                ("HGETALL", keys.expiry_meta(partition)),
                ("ZRANGE", keys.expiry_index(partition), 0, 0, "WITHSCORES"),
            ]
        )
        flat = list(meta) if isinstance(meta, list) else [x for kv in meta.items() for x in kv]
        deltas: dict[str, int] = {}
        for i in range(0, len(flat), 2):
            kind = str(flat[i]).split(" ", 1)[0]
            realm = json.loads(flat[i + 1]).get("r", "")
            field_name = f"{kind}:{realm}"
            deltas[field_name] = deltas.get(field_name, 0) + 1
        earliest = str(int(float(first[1]))) if first else ""
        return deltas, earliest

    async def _copy_shared_keys(self, shard: Shard) -> None:
        """Give a new shard the realm policies and removal markers every shard holds."""
        dst = await self._raw(shard)
        try:
            for name, other in self._router.shards.items():
                if other is shard:
                    continue
                found: list[str] = []
                for pattern in (keys.realm_policy("*"), keys.realm_markers("*")):
                    cursor = "0"
                    for _ in range(1_000_000):
                        cursor, names = await other.command(
                            "SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT
                        )
                        found.extend(str(n) for n in names)
                        if str(cursor) == "0":
                            break
                src = await self._raw(other)
                try:
                    await self._copy(src, dst, found)
                finally:
                    src.close()
                log.info("shared_keys_copied", source=name, target=shard.name, keys=len(found))
        finally:
            dst.close()

    # -- recovery ----------------------------------------------------------------------------

    async def _repair(self, plan: MovePlan, *, resume: bool) -> list[Move]:
        """Bring every partition of the plan to one owner; returns the moves still to make."""
        self._map = self._union_map(plan)
        self._urls = dict(plan.target.urls)
        pending: list[Move] = []
        fixed = 0
        for move in plan.moves:
            source = self._router.shards[move.source]
            target = self._router.shards.get(move.target)
            s_state = await self._state(source, move.partition)
            t_state = await self._state_or_none(target, move.partition)
            if t_state == "1":
                if s_state in ("2", "4"):  # accepted, not released: finish the flip
                    assert target is not None  # noqa: S101 - it answered
                    prepared = self._prepare(move)
                    summary = await self._summary(source, move.partition)
                    await self._accept_and_release(move, source, target, summary, prepared)
                    await self._announce(move, prepared)
                    fixed += 1
                if s_state in ("0", "2", "4"):
                    await self._delete_keys(
                        source, await self._scan(source, move.partition >> 8, {move.partition})
                    )
                    continue
            if s_state in ("2", "3") or (s_state == "4" and t_state == "0"):
                # Not accepted: the source still owns it. Unfreeze; the copy on the target is
                # deleted before the partition is copied again.
                await source.call("set_partition_state", [keys.OWNERSHIP], ["234", "1", move.partition])
                fixed += 1
                if not resume and target is not None and t_state is not None:
                    await self._delete_keys(
                        target, await self._scan(target, move.partition >> 8, {move.partition})
                    )
            elif s_state == "4":
                # Handed over to a target that cannot be asked: it may own the partition now, so
                # the source must not take it back; it stays frozen until the target answers again.
                log.warning("partition_waits_for_target", partition=move.partition, target=move.target)
            pending.append(move)
        await self._publish(Topology(self._map, self._urls))
        log.info("move_plan_repaired", plan=plan.id, fixed=fixed, pending=len(pending), resume=resume)
        return pending

    async def _state(self, shard: Shard, partition: int) -> str:
        return str(await shard.command("GETRANGE", keys.OWNERSHIP, partition, partition))

    async def _state_or_none(self, shard: Shard | None, partition: int) -> str | None:
        """The partition's byte on a shard, or None when the shard cannot be asked."""
        if shard is None:
            return None
        try:
            return await self._state(shard, partition)
        except UnavailableError:
            return None

    async def _adopt_plan_shards(self, plan: MovePlan) -> None:
        for name in plan.target.map.shards:
            if name not in self._router.shards:
                try:
                    await self._router.connect_shard(name, plan.target.urls[name])
                except UnavailableError as exc:  # repaired without it where that is safe
                    log.warning("move_target_unreachable", shard=name, error=exc.message)

    # -- plumbing ----------------------------------------------------------------------------

    async def _step(self, step: str, partition: int) -> None:
        if self._on_step is not None:
            await self._on_step(step, partition)

    async def _lease(self, shard_name: str, lease_ms: int) -> bool:
        shard = self._router.shards[shard_name]
        return int(await shard.call("lease_lock", [keys.REBALANCE_LOCK], [self._token, lease_ms])) == 1

    async def _renew(self) -> None:
        if self._lock_shard and not await self._lease(self._lock_shard, self._lease_ms):
            raise PreconditionFailedError("the mover lost its lease to another mover; stopping")

    async def _read_plan(self) -> MovePlan | None:
        texts = await asyncio.gather(
            *(s.command("GET", keys.REBALANCE) for s in self._router.shards.values()), return_exceptions=True
        )
        for text in texts:
            if isinstance(text, str) and text:
                plan = MovePlan.decode(text)
                self._lock_shard = plan.lock_shard
                return plan
        return None

    async def _write_plan(self, plan: MovePlan) -> None:
        self._lock_shard = plan.lock_shard
        text = plan.encode()
        await asyncio.gather(*(s.command("SET", keys.REBALANCE, text) for s in self._router.shards.values()))

    async def _clear_plan(self) -> None:
        await asyncio.gather(
            *(s.command("DEL", keys.REBALANCE) for s in self._router.shards.values()), return_exceptions=True
        )

    async def _publish(self, topology: Topology) -> None:
        await asyncio.gather(
            *(seed_topology(s, topology, ownership=False) for s in self._router.shards.values()),
            return_exceptions=True,
        )

    async def _scan(self, shard: Shard, digit: int, partitions: set[int]) -> dict[int, list[str]]:
        """The keys of some partitions (all starting with hex digit `digit`) on a shard."""
        found: dict[int, list[str]] = {}
        cursor = "0"
        pattern = keys.partition_pattern(digit)
        for _ in range(10_000_000):
            cursor, names = await shard.command("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)
            for name in names:
                p = keys.partition_of(str(name))
                if p in partitions:
                    found.setdefault(p, []).append(str(name))
            if str(cursor) == "0":
                break
        return found

    async def _raw(self, shard: Shard) -> Any:
        try:
            return await shard.client.dedicated(reply_timeout=30.0, raw=True)
        except Exception as exc:
            raise ShardUnavailableError(f"shard {shard.name} is unavailable for the move") from exc

    async def _copy(self, src: Any, dst: Any, names: Iterable[str]) -> int:
        """Copy keys with their remaining TTLs (DUMP/PTTL/RESTORE REPLACE); delete those gone."""
        unique = list(dict.fromkeys(names))
        copied = 0
        for start in range(0, len(unique), COPY_BATCH):
            chunk = unique[start : start + COPY_BATCH]
            replies = await asyncio.gather(
                *(src.execute("DUMP", k) for k in chunk), *(src.execute("PTTL", k) for k in chunk)
            )
            payloads, ttls = replies[: len(chunk)], replies[len(chunk) :]
            writes = []
            for name, payload, ttl in zip(chunk, payloads, ttls, strict=True):
                if payload is None or int(ttl) == -2:
                    writes.append(dst.execute("DEL", name))
                else:
                    writes.append(dst.execute("RESTORE", name, max(int(ttl), 0), payload, "REPLACE"))
                    copied += 1
            await asyncio.gather(*writes)
        return copied

    async def _delete_keys(self, shard: Shard, by_partition: dict[int, list[str]]) -> None:
        names = list(dict.fromkeys(k for ks in by_partition.values() for k in ks))
        for start in range(0, len(names), COPY_BATCH):
            await shard.command("UNLINK", *names[start : start + COPY_BATCH])
