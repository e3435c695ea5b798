"""Run one scenario: a fresh cluster, the identity nodes' storm with its faults, the final read, the check.

`run_scenario` starts a cluster (test clocks, ``appendfsync always``) under the output directory, sets
the realm policy, starts the watcher and the identity nodes, applies the scenario's faults at their
seconds (one function per fault kind), stops the storm, makes sure every shard and node is back,
reads every user's sessions and the counts (the final read, recorded like any call), drains the
watcher with marker sessions, stops every process it started and checks that none is left, then runs
the checker and writes the report next to the history.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from cluster_tests import checker, report
from cluster_tests.cluster import Cluster, ClusterError, NotAvailableError, is_running
from cluster_tests.history import OK, ClockChange, Fault, HistoryWriter, Meta, read_history
from cluster_tests.scenarios import Scenario, Step
from cluster_tests.workload import (
    CHANNEL_OPTIONS,
    CountingClient,
    IdentityNode,
    Pacer,
    Recorder,
    SessionPool,
    Watcher,
    WorkloadConfig,
    count_summary,
    list_summary,
    new_id,
    session_summary,
)
from session_store import AsyncSessionStoreClient
from session_store.model.policy import RealmPolicy

REALM = "storm"
MARKER_REALM = "storm-markers"
CLIENTS = ("account-console", "web-app", "mobile-app")
USERS = 240
LIMITED_USERS = 12
REALM_LIMIT = 2
IDLE_SECONDS = 1800
MAX_SECONDS = 3600
MAX_REUSE = 1
MARKERS = 64
"""Marker sessions created after the final read: with 3 shards, all miss one shard with p < 1e-7."""
POLICY_SETTLE_SECONDS = 1.5
"""Longer than SESSION_STORE_POLICY_REFRESH_SECONDS: every node sees the policy before the storm."""
STOP_WORKERS_SECONDS = 45.0
DRAIN_SECONDS = 30.0
FINAL_PARALLEL = 16
SCENARIO_SLACK_SECONDS = 150.0
"""A scenario's hard bound is its duration plus this (start-up, faults, final read, drain)."""


@dataclass
class ScenarioResult:
    """What one scenario produced."""

    name: str
    out_dir: Path
    ok: bool = False
    error: str = ""
    check: checker.CheckResult | None = None
    leftovers: list[str] = field(default_factory=list)
    seconds: float = 0.0
    summary: str = ""


class Storm:
    """One scenario's run: the cluster, the history, the identity nodes and the faults."""

    def __init__(self, scenario: Scenario, out_dir: Path, *, rate: float | None, seed: int) -> None:
        """Nothing starts until `run`."""
        self.scenario = scenario
        self.out_dir = out_dir
        self.rate = rate
        self.seed = seed
        self.cluster: Cluster | None = None
        self.writer = HistoryWriter(out_dir / "history.jsonl")
        self.origin = time.monotonic()
        self.recorder = Recorder(self.writer, self.origin)
        self.clock_ms = 0
        users = [f"user-{i}" for i in range(USERS)]
        limited = users[:LIMITED_USERS]
        self.config = WorkloadConfig(
            realm=REALM,
            clients=CLIENTS,
            users=users,
            limits={u: (REALM_LIMIT, "deny" if i % 2 == 0 else "terminate") for i, u in enumerate(limited)},
            rate=rate,
            seed=seed,
        )

    def now(self) -> float:
        """Seconds since the run began."""
        return time.monotonic() - self.origin

    # -- faults: one function per kind --

    async def shard_kill(self, cluster: Cluster, step: Step) -> str:
        """SIGKILL the shard, wait `seconds`, restart it from its AOF on the same port."""
        pid = await asyncio.to_thread(cluster.kill_shard, step.target)
        await asyncio.sleep(step.seconds)
        new = await asyncio.to_thread(cluster.restart_shard, step.target)
        return f"pid {pid} SIGKILL, restarted from its AOF as pid {new}"

    async def shard_wipe(self, cluster: Cluster, step: Step) -> str:
        """Control: SIGKILL the shard, delete its AOF, restart it empty on the same port."""
        pid = await asyncio.to_thread(cluster.kill_shard, step.target)
        deleted = await asyncio.to_thread(cluster.wipe_shard, step.target)
        await asyncio.sleep(step.seconds)
        new = await asyncio.to_thread(cluster.restart_shard, step.target)
        return f"pid {pid} SIGKILL, deleted {len(deleted)} persistence files, restarted empty as pid {new}"

    async def shard_stall(self, cluster: Cluster, step: Step) -> str:
        """SIGSTOP the shard for `seconds`, then SIGCONT."""
        pid = await asyncio.to_thread(cluster.stall_shard, step.target)
        try:
            await asyncio.sleep(step.seconds)
        finally:
            await asyncio.to_thread(cluster.resume_shard, step.target)
        return f"pid {pid} SIGSTOP for {step.seconds:g} s"

    async def node_kill(self, cluster: Cluster, step: Step) -> str:
        """SIGKILL the node, wait `seconds`, restart it on its port and bring its clock in line."""
        pid = await asyncio.to_thread(cluster.kill_node, step.target)
        await asyncio.sleep(step.seconds)
        # From its launch until the sync, the new node's clock starts at the wall clock.
        t0, before = self.now(), self.clock_ms
        low = min(before, int(time.time()) * 1000 - 1000)
        new = await asyncio.to_thread(cluster.restart_node, step.target)
        self.clock_ms = await asyncio.to_thread(cluster.sync_clocks)
        self.writer.clock(
            ClockChange(
                t0=t0,
                t1=self.now(),
                from_ms=before,
                to_ms=self.clock_ms,
                low_ms=low,
                reason=f"{step.target} restarted",
            )
        )
        return f"pid {pid} SIGKILL, restarted as pid {new}"

    async def clock_jump(self, cluster: Cluster, step: Step) -> str:
        """Advance every node's clock by `seconds` (one after the other: the window is recorded)."""
        t0, before = self.now(), self.clock_ms
        self.clock_ms = await asyncio.to_thread(cluster.sync_clocks, step.seconds)
        self.writer.clock(
            ClockChange(
                t0=t0,
                t1=self.now(),
                from_ms=before,
                to_ms=self.clock_ms,
                low_ms=before,
                reason=f"+{step.seconds:g} s",
            )
        )
        return f"+{step.seconds:g} s to {self.clock_ms}"

    async def add_shard(self, cluster: Cluster, step: Step) -> str:
        """Start a new shard and move its share of the partitions to it (session-store cluster add-shard)."""
        record, summary = await asyncio.to_thread(cluster.add_shard)
        return f"{record.name} on port {record.port}: {json.dumps(summary.get('done', summary))}"

    async def remove_shard(self, cluster: Cluster, step: Step) -> str:
        """Move every partition off a shard (session-store cluster remove-shard); it keeps running."""
        summary = await asyncio.to_thread(cluster.remove_shard, step.target)
        return json.dumps(summary.get("done", summary))

    async def sentinel_failover(self, cluster: Cluster, step: Step) -> str:
        """SENTINEL FAILOVER of the shard's group; done when every sentinel names the new master."""
        return await asyncio.to_thread(cluster.failover_shard, step.target)

    async def slot_migrate(self, cluster: Cluster, step: Step) -> str:
        """Move the slots of the partition groups `target` (hex, comma-separated) to other primaries."""
        groups = [int(g, 16) for g in step.target.split(",")]
        return "; ".join(await asyncio.to_thread(cluster.migrate_groups, groups))

    async def cluster_failover(self, cluster: Cluster, step: Step) -> str:
        """CLUSTER FAILOVER of the primary `target`: its replica takes its slots."""
        return await asyncio.to_thread(cluster.failover_primary, step.target)

    def fault_function(self, kind: str) -> Callable[[Cluster, Step], Awaitable[str]]:
        """The function applying one fault kind."""
        return {
            "shard-kill": self.shard_kill,
            "shard-wipe": self.shard_wipe,
            "shard-stall": self.shard_stall,
            "node-kill": self.node_kill,
            "clock-jump": self.clock_jump,
            "add-shard": self.add_shard,
            "remove-shard": self.remove_shard,
            "sentinel-failover": self.sentinel_failover,
            "slot-migrate": self.slot_migrate,
            "cluster-failover": self.cluster_failover,
        }[kind]

    async def _faults(self, cluster: Cluster, start: float) -> None:
        for step in sorted(self.scenario.steps, key=lambda s: s.at):
            await asyncio.sleep(max(0.0, start + step.at - time.monotonic()))
            t0 = self.now()
            detail = await self.fault_function(step.kind)(cluster, step)
            self.writer.fault(Fault(t0=t0, t1=self.now(), kind=step.kind, target=step.target, detail=detail))
            print(f"  [{t0:6.1f} s] {step.kind} {step.target} {detail}", flush=True)

    # -- the run --

    async def run(self) -> None:
        """Start, storm with faults, restore, final read, drain the watcher, in that order (`close`
        stops the processes)."""
        loop_start = time.monotonic()
        cluster = await asyncio.to_thread(
            Cluster.start,
            self.out_dir / "cluster",
            shards=self.scenario.shards,
            nodes=self.scenario.nodes,
            test_clock=True,
            appendfsync="always",
            replicas=self.scenario.replicas,
            sentinels=self.scenario.sentinels,
            cluster_mode=self.scenario.cluster_mode,
            state_path=self.out_dir / "cluster" / "state.json",
        )
        self.cluster = cluster
        print(
            f"  cluster up in {time.monotonic() - loop_start:.1f} s: {cluster.state.redis_urls}", flush=True
        )
        self.clock_ms = max((await asyncio.to_thread(cluster.clocks)).values())
        self.writer.meta(
            Meta(
                scenario=self.scenario.name,
                realm=REALM,
                marker_realm=MARKER_REALM,
                clients=CLIENTS,
                users=tuple(self.config.users),
                idle_s=IDLE_SECONDS,
                max_s=MAX_SECONDS,
                max_reuse=MAX_REUSE,
                limits=dict(self.config.limits),
                initial_clock_ms=self.clock_ms,
                shards=self.scenario.shards,
                nodes=self.scenario.nodes,
                appendfsync=cluster.state.appendfsync,
                expect=self.scenario.expect,
            )
        )
        targets = cluster.state.targets
        async with AsyncSessionStoreClient(targets[0]) as admin:
            await admin.set_realm_policy(
                RealmPolicy(
                    realm=REALM,
                    sso_session_idle_timeout=IDLE_SECONDS,
                    sso_session_max_lifespan=MAX_SECONDS,
                    revoke_refresh_token=True,
                    refresh_token_max_reuse=MAX_REUSE,
                )
            )
        await asyncio.sleep(POLICY_SETTLE_SECONDS)
        watcher = Watcher(targets, [REALM, MARKER_REALM], self.writer, self.origin)
        watcher.start()
        try:
            await self._storm(cluster, targets)
            await self._restore(cluster)
            await self._final_read(targets)
            drained = await self._drain(targets[0], watcher)
        finally:
            await watcher.stop()
        self.writer.note(watch_drained=drained, watch_error=watcher.error, watch_events=watcher.events)

    async def _storm(self, cluster: Cluster, targets: list[str]) -> None:
        pool = SessionPool(random.Random(self.seed))  # noqa: S311 - workload choices, not secrets
        pacer = Pacer(self.config.rate)
        nodes = [
            IdentityNode(i, t, config=self.config, pool=pool, recorder=self.recorder, pacer=pacer)
            for i, t in enumerate(targets)
        ]
        stop = asyncio.Event()
        start = time.monotonic()
        deadline = start + self.scenario.duration
        self.writer.note(storm_start=self.now())
        tasks = [asyncio.create_task(n.run(stop, deadline)) for n in nodes]
        faults = asyncio.create_task(self._faults(cluster, start))
        try:
            await asyncio.wait_for(faults, self.scenario.duration + 60)
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        finally:
            stop.set()
            done, pending = await asyncio.wait(tasks, timeout=STOP_WORKERS_SECONDS)
            for t in pending:
                t.cancel()
            for t in done:
                if t.exception() is not None:
                    raise RuntimeError(f"an identity node crashed: {t.exception()!r}")
        self.writer.note(storm_end=self.now(), actions=sum(n.actions for n in nodes))

    async def _restore(self, cluster: Cluster) -> None:
        """Every shard running (none stalled) and every node SERVING before the final read."""
        for s in cluster.state.shards:
            await asyncio.to_thread(cluster.resume_shard, s.name)
            if not is_running(s.pid, s.start_ticks):
                raise ClusterError(f"shard {s.name} is down after the storm")
        await asyncio.to_thread(cluster.settle)
        for n in cluster.state.nodes:
            await asyncio.to_thread(cluster.wait_node_healthy, n.name, 30.0)

    async def _final_read(self, targets: list[str]) -> None:
        """Every user's sessions, a get of every other session ever created, and the counts on every node."""
        realm, sem = REALM, asyncio.Semaphore(FINAL_PARALLEL)
        async with CountingClient(targets[0], channel_options=CHANNEL_OPTIONS) as store:

            async def listed(user: str) -> None:
                async with sem:
                    await self.recorder.call(
                        "final",
                        0,
                        "list",
                        args={"realm": realm, "user": user},
                        call=store.list_user_sessions(realm, user),
                        summary=list_summary,
                    )

            async def got(sid: str) -> None:
                async with sem:
                    await self.recorder.call(
                        "final",
                        0,
                        "get",
                        args={"realm": realm, "session": sid},
                        call=store.get_user_session(realm, sid),
                        summary=session_summary,
                    )

            await asyncio.gather(*(listed(u) for u in self.config.users))
            live: set[str] = set()
            for op in self.recorder.ops:
                if op.worker == "final" and op.op == "list" and op.outcome == OK:
                    live.update((op.result or {}).get("sessions", {}))
            created = {
                o.args["session"] for o in self.recorder.ops if o.op == "create" and o.args["realm"] == realm
            }
            await asyncio.gather(*(got(sid) for sid in sorted(created - live)))
        for i, target in enumerate(targets):
            async with CountingClient(target, channel_options=CHANNEL_OPTIONS) as store:
                for client in ("", *CLIENTS):
                    await self.recorder.call(
                        "final",
                        i,
                        "count",
                        args={"realm": realm, "client": client},
                        call=store.count_sessions(realm, client),
                        summary=count_summary,
                    )

    async def _drain(self, target: str, watcher: Watcher) -> bool:
        """Create marker sessions on every shard and wait until the watcher saw them: then it saw
        everything before them (each shard's stream is delivered in order)."""
        ids = [new_id() for _ in range(MARKERS)]
        async with CountingClient(target, channel_options=CHANNEL_OPTIONS) as store:
            for i, sid in enumerate(ids):
                await self.recorder.call(
                    "marker",
                    0,
                    "create",
                    args={"realm": MARKER_REALM, "user": f"marker-{i}", "session": sid},
                    call=store.create_user_session(MARKER_REALM, f"marker-{i}", session_id=sid),
                )
        return await watcher.wait_created(ids, DRAIN_SECONDS)

    def close(self) -> list[str]:
        """Stop every process this run started; returns "role name pid outcome" of any that needed
        more than SIGTERM or survived."""
        self.writer.close()
        if self.cluster is None:
            return []
        problems = [
            f"{r} {n} pid {p}: {o}" for r, n, p, o in self.cluster.stop() if o in ("killed", "unkillable")
        ]
        problems += [f"{r} {n} pid {p}: leftover, {o}" for r, n, p, o in self.cluster.kill_leftovers()]
        return problems


async def _run(storm: Storm) -> None:
    await asyncio.wait_for(storm.run(), storm.scenario.duration + SCENARIO_SLACK_SECONDS)


def run_scenario(
    scenario: Scenario, out_dir: Path, *, rate: float | None = None, seed: int = 1
) -> ScenarioResult:
    """Run one scenario end to end; never leaves a process behind.

    Args:
        scenario: what to run (must not be pending).
        out_dir: where the cluster's data, the history, the report and the PNG go.
        rate: actions per second (None: the scenario's).
        seed: the workload's random choices.

    Returns:
        The result: ok only with no violation, no error and no leftover process.
    """
    result = ScenarioResult(scenario.name, out_dir)
    if scenario.pending:
        result.error = f"pending: {scenario.pending}"
        return result
    if out_dir.exists() and any(out_dir.iterdir()):
        # A previous run's shards would reload their AOF: every run starts from empty shards.
        result.error = f"{out_dir} is not empty: give each run a new output directory"
        return result
    started = time.monotonic()
    storm = Storm(scenario, out_dir, rate=rate or scenario.rate, seed=seed)
    try:
        asyncio.run(_run(storm))
    except (ClusterError, NotAvailableError, RuntimeError, TimeoutError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.leftovers = storm.close()
        for line in result.leftovers:
            print(f"  had to stop: {line}", file=sys.stderr, flush=True)
    result.seconds = time.monotonic() - started
    history_path = out_dir / "history.jsonl"
    if history_path.exists():
        try:
            history = read_history(history_path)
        except ValueError as exc:
            result.error = result.error or f"history unreadable: {exc}"
        else:
            result.check = checker.check(history)
            result.summary = report.write_report(
                history,
                result.check,
                out_dir,
                seconds=result.seconds,
                error=result.error,
                leftovers=result.leftovers,
            )
    clean_run = not result.error and not result.leftovers and result.check is not None
    if scenario.expect:
        found = set(result.check.by_kind()) if result.check is not None else set()
        result.ok = clean_run and set(scenario.expect) <= found
    else:
        result.ok = clean_run and result.check is not None and result.check.ok
    return result
