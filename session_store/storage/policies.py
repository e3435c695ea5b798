"""Realm policies: stored on every shard, cached in each service node, turned into script args."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, fields

from session_store.errors import ShardUnavailableError, UnavailableError
from session_store.model.limits import MAX_CLIENT_SESSIONS, MAX_NOTES
from session_store.model.policy import ClientPolicy, EffectivePolicy, RealmPolicy, effective_policy
from session_store.storage import keys
from session_store.storage.router import Router

DEFAULT_POLICY_REFRESH_SECONDS = 1.0


def policy_args(policy: EffectivePolicy) -> tuple[str, ...]:
    """Script ARGV 2..16 for a policy (see the header of scripts/_prelude.lua)."""
    overrides = {
        client: [
            c.session_idle_timeout,
            c.session_max_lifespan,
            c.offline_session_idle_timeout,
            c.offline_session_max_lifespan,
        ]
        for client, c in policy.clients.items()
        if any(getattr(c, f.name) for f in fields(c))
    }
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
    """A realm's policy with what the scripts need precomputed."""

    policy: RealmPolicy
    effective: EffectivePolicy
    args: tuple[str, ...]
    version: int


def _encode(policy: RealmPolicy, version: int) -> str:
    data = asdict(policy)
    data["clients"] = {k: asdict(v) for k, v in policy.clients.items()}
    data["version"] = version
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _decode(text: str) -> tuple[RealmPolicy, int]:
    data = json.loads(text)
    version = int(data.pop("version"))
    clients = {k: ClientPolicy(**v) for k, v in data.pop("clients").items()}
    return RealmPolicy(**data, clients=clients), version


def _cached(policy: RealmPolicy, version: int) -> CachedPolicy:
    effective = effective_policy(policy)
    return CachedPolicy(policy, effective, policy_args(effective), version)


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

    async def _read(self, realm: str) -> CachedPolicy:
        key = keys.realm_policy(realm)
        results = await asyncio.gather(
            *(s.command("GET", key) for s in self._router.shards.values()), return_exceptions=True
        )
        best: tuple[RealmPolicy, int] | None = None
        answered = False
        for result in results:
            if isinstance(result, BaseException):
                continue
            answered = True
            if result is not None:
                decoded = _decode(result)
                if best is None or decoded[1] > best[1]:
                    best = decoded
        if not answered:
            raise ShardUnavailableError("no shard answered to read the realm policy")
        if best is None:
            return _cached(RealmPolicy(realm=realm), 0)
        return _cached(*best)

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
        cached = _cached(policy, version)
        self._cache[policy.realm] = (time.monotonic(), cached)
        if failed:
            raise ShardUnavailableError(
                f"realm policy written to {len(results) - len(failed)} of {len(results)} shards; retry"
            )
        return cached
