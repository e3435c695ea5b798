"""Typed operations on login-failure records (Keycloak's UserLoginFailureProvider): one per script.

A user's record lives in the user's partition (next to the user's sessions), and each partition
keeps a per-realm set of the user ids that have a record there, so a realm's records can be found
and removed partition by partition. Recording a failure runs the brute-force rules inside the script
with the realm's settings (model/brute_force.py states them); the lock flags of a reply are computed
here from the stored counters, the realm's settings and the script's now.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from session_store.model.brute_force import EffectiveBruteForce, FailureCounters, effective_brute_force
from session_store.model.clock import Clock
from session_store.model.ids import user_partition
from session_store.model.login_failure import LoginFailure
from session_store.model.policy import BruteForcePolicy
from session_store.storage import keys
from session_store.storage.policies import PolicyStore
from session_store.storage.router import Router

INDEX_READ_BATCH = 256
"""Partitions whose realm index is read in one pipelined batch by RemoveRealmLoginFailures."""
REMOVE_BATCH = 500
"""Records deleted by one script call of RemoveRealmLoginFailures."""


@lru_cache(maxsize=256)
def _settings(policy: BruteForcePolicy) -> tuple[EffectiveBruteForce, tuple[str, ...]]:
    """The effective settings and the script ARGV 4..13 they make (see record_login_failure.lua)."""
    eff = effective_brute_force(policy)
    return eff, (
        "1" if eff.enabled else "0",
        "1" if eff.permanent_lockout else "0",
        str(eff.max_temporary_lockouts),
        str(int(eff.strategy)),
        str(eff.failure_factor),
        str(eff.wait_increment_seconds),
        str(eff.quick_login_check_milliseconds),
        str(eff.minimum_quick_login_wait_seconds),
        str(eff.max_failure_wait_seconds),
        str(eff.max_delta_time_seconds),
    )


def _decode(reply: Sequence[Any]) -> tuple[FailureCounters, int]:
    failures, lockouts, last_ms, ip, not_before, now_ms = reply
    counters = FailureCounters(
        num_failures=int(failures),
        num_temporary_lockouts=int(lockouts),
        last_failure_ms=int(last_ms),
        last_ip_failure=str(ip),
        failed_login_not_before=int(not_before),
    )
    return counters, int(now_ms)


class LoginFailureRepository:
    """Login-failure records on the shards of a router."""

    def __init__(self, router: Router, policies: PolicyStore, clock: Clock) -> None:
        """Use `router` for placement, `policies` for the realm's brute-force settings, `clock` for now."""
        self._router = router
        self._policies = policies
        self._clock = clock

    async def _call(self, partition: int, script: str, keys_: Sequence[str], args: Sequence[str]) -> Any:
        return await self._router.call(partition, script, keys_, args)

    def _keys(self, realm: str, user_id: str) -> tuple[int, list[str]]:
        partition = user_partition(realm, user_id)
        return partition, [
            keys.login_failure(partition, realm, user_id),
            keys.login_failure_index(partition, realm),
        ]

    async def record_login_failure(self, realm: str, user_id: str, ip_address: str) -> LoginFailure:
        """Count one failed login now and apply the realm's brute-force rules, in one atomic call.

        Raises:
            UnavailableError: the user's shard is unavailable.
        """
        cached = await self._policies.get(realm)
        eff, args = _settings(cached.policy.brute_force)
        partition, keys_ = self._keys(realm, user_id)
        reply = await self._call(
            partition, "record_login_failure", keys_, [self._clock.script_now(), user_id, ip_address, *args]
        )
        counters, now_ms = _decode(reply)
        return LoginFailure.of(realm, user_id, counters, eff, now_ms)

    async def get_login_failure(self, realm: str, user_id: str) -> LoginFailure:
        """The user's record, with its lock flags under the realm's current settings.

        Raises:
            SessionNotFoundError: the user has no record.
        """
        cached = await self._policies.get(realm)
        eff, _ = _settings(cached.policy.brute_force)
        partition, keys_ = self._keys(realm, user_id)
        reply = await self._call(partition, "get_login_failure", keys_[:1], [self._clock.script_now()])
        counters, now_ms = _decode(reply)
        return LoginFailure.of(realm, user_id, counters, eff, now_ms)

    async def remove_login_failure(self, realm: str, user_id: str) -> bool:
        """Delete the user's record (a successful login, or the user removed); True when one existed."""
        partition, keys_ = self._keys(realm, user_id)
        reply = await self._call(
            partition, "remove_login_failure", keys_, [self._clock.script_now(), user_id]
        )
        return int(reply) == 1

    async def remove_realm_login_failures(self, realm: str) -> int:
        """Delete every record of a realm, partition by partition in batches; returns how many.

        Not atomic across partitions: a failure recorded in a partition after its index was read
        survives the call.

        Raises:
            UnavailableError: a shard is unavailable (the records of the others are still removed;
                calling again finishes the job).
        """
        results = await asyncio.gather(
            *(
                self._remove_on_shard(partitions, realm)
                for partitions in self._router.partitions_by_shard().values()
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(r for r in results if isinstance(r, int))

    async def _remove_on_shard(self, partitions: Sequence[int], realm: str) -> int:
        """Remove a realm's records from a shard's partitions, a chunk of partitions at a time.

        The chunk's indexes are read together; then one script call per partition and batch removes
        what they name, the calls of a chunk sent together.
        """
        removed = 0
        for start in range(0, len(partitions), INDEX_READ_BATCH):
            chunk = partitions[start : start + INDEX_READ_BATCH]
            indexes = [keys.login_failure_index(p, realm) for p in chunk]
            # Fenced reads (each with its partition's ownership byte), sent together in one write.
            members = await asyncio.gather(
                *(self._router.read(p, "SMEMBERS", index) for p, index in zip(chunk, indexes, strict=True))
            )
            calls = []
            for partition, index, users in zip(chunk, indexes, members, strict=True):
                ordered = sorted(users)
                for first in range(0, len(ordered), REMOVE_BATCH):
                    batch = ordered[first : first + REMOVE_BATCH]
                    calls.append(
                        self._call(
                            partition,
                            "remove_login_failures_batch",
                            [index, *(keys.login_failure(partition, realm, u) for u in batch)],
                            [self._clock.script_now(), *batch],
                        )
                    )
            removed += sum(int(r) for r in await asyncio.gather(*calls))
        return removed
