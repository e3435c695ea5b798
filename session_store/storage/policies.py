"""Realm policies: stored on every shard, cached in each service node, turned into script args."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

from session_store.errors import ShardUnavailableError, UnavailableError
from session_store.model.limits import MAX_CLIENT_SESSIONS, MAX_NOTES
from session_store.model.policy import (
    BruteForcePolicy,
    BruteForceStrategy,
    ClientPolicy,
    EffectivePolicy,
    RealmPolicy,
    effective_policy,
)
from session_store.storage import keys
from session_store.storage.router import Router

DEFAULT_POLICY_REFRESH_SECONDS = 1.0
READ_GRACE_SECONDS = 0.05
"""How long a policy read waits for the other shards once one answered."""


REALM_MARKER = ""
"""The marker field of a whole realm's removal (no client id can be empty)."""


def policy_args(policy: EffectivePolicy, markers: Mapping[str, int] | None = None) -> tuple[str, ...]:
    """Script ARGV 2..16 for a policy and the realm's removal markers (see scripts/_prelude.lua)."""
    overrides: dict[str, list[int]] = {
        client: [
            c.session_idle_timeout,
            c.session_max_lifespan,
            c.offline_session_idle_timeout,
            c.offline_session_max_lifespan,
        ]
        for client, c in policy.clients.items()
        if any(getattr(c, f.name) for f in fields(c))
    }
    for name, not_before in (markers or {}).items():
        if name == REALM_MARKER:
            overrides[name] = [not_before]
        else:
            overrides.setdefault(name, [0, 0, 0, 0]).append(not_before)
    return (
        str(policy.idle),
        str(policy.lifespan),
        str(policy.idle_remember_me),
        str(policy.lifespan_remember_me),
        "1" if policy.remember_me_allowed else "0",
        str(policy.client_idle),
        str(policy.client_max),
        str(policy.offline_idle),
        str(policy.offline_lifespan),
        "1" if policy.offline_max_enabled else "0",
        str(policy.client_offline_idle),
        str(policy.client_offline_max),
        json.dumps(overrides, separators=(",", ":")) if overrides else "",
        str(MAX_NOTES),
        str(MAX_CLIENT_SESSIONS),
    )


@dataclass(frozen=True)
class CachedPolicy:
    """A realm's policy and removal markers, with what the scripts need precomputed."""

    policy: RealmPolicy
    effective: EffectivePolicy
    args: tuple[str, ...]
    version: int
    markers: Mapping[str, int] = field(default_factory=dict)


def _encode(policy: RealmPolicy, version: int) -> str:
    data = asdict(policy)
    data["clients"] = {k: asdict(v) for k, v in policy.clients.items()}
    data["version"] = version
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _decode(text: str) -> tuple[RealmPolicy, int]:
    data = json.loads(text)
    version = int(data.pop("version"))
    clients = {k: ClientPolicy(**v) for k, v in data.pop("clients").items()}
    brute = data.pop("brute_force", None) or {}
    brute["strategy"] = BruteForceStrategy(brute.get("strategy", 0))
    return RealmPolicy(**data, clients=clients, brute_force=BruteForcePolicy(**brute)), version


def _cached(policy: RealmPolicy, version: int, markers: Mapping[str, int] | None = None) -> CachedPolicy:
    effective = effective_policy(policy)
    markers = dict(markers or {})
    return CachedPolicy(policy, effective, policy_args(effective, markers), version, markers)


class PolicyStore:
    """Realm policies, written to every shard and cached here for `refresh_seconds`.

    A policy set on one service node is seen by the others within `refresh_seconds`. Writes go to
    every shard with a version (epoch ms), and reads take the newest version any shard has, so a
    shard that missed a write while down does not roll a policy back.
    """

    def __init__(self, router: Router, refresh_seconds: float = DEFAULT_POLICY_REFRESH_SECONDS) -> None:
        """Cache nothing yet."""
        self._router = router
        self._refresh = refresh_seconds
        self._cache: dict[str, tuple[float, CachedPolicy]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, realm: str) -> CachedPolicy:
        """The realm's policy (Keycloak's defaults when none was set), from cache when fresh.

        Raises:
            ShardUnavailableError: no shard could be read and nothing is cached.
        """
        hit = self._cache.get(realm)
        if hit is not None and time.monotonic() - hit[0] < self._refresh:
            return hit[1]
        lock = self._locks.setdefault(realm, asyncio.Lock())
        async with lock:
            hit = self._cache.get(realm)
            if hit is not None and time.monotonic() - hit[0] < self._refresh:
                return hit[1]
            try:
                cached = await self._read(realm)
            except UnavailableError:
                if hit is not None:  # serve the last known policy while shards are down
                    return hit[1]
                raise
            self._cache[realm] = (time.monotonic(), cached)
            return cached

    def recent_realms(self, within_seconds: float) -> list[str]:
        """Realms whose policy this node fetched in the last `within_seconds`, most recent first.

        A policy is fetched again on first use after `refresh_seconds`, so for a refresh much shorter
        than `within_seconds` this is "realms served recently" (the metrics count their sessions).
        """
        now = time.monotonic()
        recent = [(at, realm) for realm, (at, _) in self._cache.items() if now - at < within_seconds]
        return [realm for _, realm in sorted(recent, reverse=True)]

    async def _read(self, realm: str) -> CachedPolicy:
        commands = [("GET", keys.realm_policy(realm)), ("HGETALL", keys.realm_markers(realm))]
        tasks = [asyncio.ensure_future(s.pipeline(commands)) for s in self._router.shards.values()]
        # Every write reaches every shard (or fails and is retried), so the answers in hand suffice:
        # once one shard answered, a hung one is not waited for beyond READ_GRACE_SECONDS (it would
        # stall every realm's calls on the healthy shards for a socket timeout at each refresh).
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if pending and any(t.exception() is None for t in done):
            _, pending = await asyncio.wait(pending, timeout=READ_GRACE_SECONDS)
        elif pending:
            _, pending = await asyncio.wait(pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        results = [
            t.exception() or t.result() if not t.cancelled() else UnavailableError("late") for t in tasks
        ]
        best: tuple[RealmPolicy, int] | None = None
        markers: dict[str, int] = {}
        answered = False
        for result in results:
            if isinstance(result, BaseException):
                continue
            answered = True
            text, flat = result
            if text is not None:
                decoded = _decode(text)
                if best is None or decoded[1] > best[1]:
                    best = decoded
            for i in range(0, len(flat), 2):  # a shard that missed a marker write cannot lower it
                markers[flat[i]] = max(markers.get(flat[i], 0), int(flat[i + 1]))
        if not answered:
            raise ShardUnavailableError("no shard answered to read the realm policy")
        if best is None:
            return _cached(RealmPolicy(realm=realm), 0, markers)
        return _cached(*best, markers)

    async def set(self, policy: RealmPolicy) -> CachedPolicy:
        """Store a policy on every shard and cache it here.

        Raises:
            ShardUnavailableError: a shard could not be written (the others were; retry to heal).
        """
        previous = await self._read(policy.realm)
        version = max(time.time_ns() // 1_000_000, previous.version + 1)
        text = _encode(policy, version)
        key = keys.realm_policy(policy.realm)
        results = await asyncio.gather(
            *(s.command("SET", key, text) for s in self._router.shards.values()),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        cached = _cached(policy, version, previous.markers)
        self._cache[policy.realm] = (time.monotonic(), cached)
        if failed:
            raise ShardUnavailableError(
                f"realm policy written to {len(results) - len(failed)} of {len(results)} shards; retry"
            )
        return cached

    async def mark_removed(self, realm: str, client_id: str, not_before: int) -> CachedPolicy:
        """Record on every shard that sessions (of `client_id`, or all with "") started before
        `not_before` (epoch s) are removed; markers only ever move forward.

        Raises:
            ShardUnavailableError: a shard could not be written (nothing is removed then; retry).
        """
        key = keys.realm_markers(realm)
        field_name = client_id or REALM_MARKER
        results = await asyncio.gather(
            *(
                s.call("raise_removal_marker", [key], ["", field_name, str(not_before)])
                for s in self._router.shards.values()
            ),
            return_exceptions=True,
        )
        if any(isinstance(r, BaseException) for r in results):
            raise ShardUnavailableError("the removal marker could not be written to every shard; retry")
        self._cache.pop(realm, None)
        return await self.get(realm)
