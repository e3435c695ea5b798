"""Login failures and brute-force detection (Keycloak §1.6) through the real service and shards.

The script that records a failure is held to the pure rules of model/brute_force.py: every reply
of a sequence of failures, under several realm settings, equals what the rules compute.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from session_store import AsyncSessionStoreClient, InvalidArgumentError, RealmPolicy, SessionNotFoundError
from session_store.model.brute_force import FailureCounters, effective_brute_force, record_failure
from session_store.model.clock import TestClock
from session_store.model.ids import user_partition
from session_store.model.limits import MAX_FIELD_LENGTH
from session_store.model.login_failure import LoginFailure
from session_store.model.policy import BruteForcePolicy, BruteForceStrategy
from session_store.server import SessionStoreServer
from session_store.storage import keys, login_failures
from tests.backends import BOTH_BACKENDS, partitioned_keys

pytestmark = BOTH_BACKENDS

REALM = "realm-a"
OTHER = "realm-b"
USER = "user-1"
IP = "10.0.0.7"
CONCURRENT_FAILURES = 100
CHANNELS = 5
RACE_TIMEOUT_SECONDS = 20.0


async def _set_brute_force(client: AsyncSessionStoreClient, **settings: Any) -> None:
    await client.set_realm_policy(RealmPolicy(realm=REALM, brute_force=BruteForcePolicy(**settings)))


def _expected(
    counters: FailureCounters, policy: BruteForcePolicy, now_ms: int, realm: str = REALM, user: str = USER
) -> LoginFailure:
    return LoginFailure.of(realm, user, counters, effective_brute_force(policy), now_ms)


@contextlib.asynccontextmanager
async def _clients(server: SessionStoreServer) -> AsyncIterator[list[AsyncSessionStoreClient]]:
    """A few clients on their own channels, without retries."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                AsyncSessionStoreClient(f"127.0.0.1:{server.port}", max_attempts=1)
            )
            for _ in range(CHANNELS)
        ]


class TestRecordLoginFailure:
    """Recording a failure counts it and applies the realm's brute-force rules at the service's now."""

    async def test_first_failure(self, client: AsyncSessionStoreClient, clock: TestClock) -> None:
        """The first failure creates the record: one failure, now, the IP, no lock (detection off)."""
        expected = LoginFailure(
            realm=REALM, user_id=USER, num_failures=1, last_failure_ms=clock.now_ms, last_ip_failure=IP
        )
        assert expected == await client.record_login_failure(REALM, USER, ip_address=IP)
        assert expected == await client.get_login_failure(REALM, USER)

    async def test_detection_off_counts_but_never_locks(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """With brute-force detection off, quick repeated failures are counted and never lock."""
        for _ in range(40):
            record = await client.record_login_failure(REALM, USER, ip_address=IP)
            clock.advance(0.1)

        assert (40, 0, 0, False) == (
            record.num_failures,
            record.num_temporary_lockouts,
            record.failed_login_not_before,
            record.temporarily_locked,
        )

    async def test_quick_login_locks_for_the_minimum_wait(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A second failure within the quick-login window locks until the minimum quick-login wait ends."""
        await _set_brute_force(client, enabled=True)
        await client.record_login_failure(REALM, USER, ip_address=IP)
        clock.advance(0.5)
        second = await client.record_login_failure(REALM, USER, ip_address=IP)

        assert clock.now_ms // 1000 + 60 == second.failed_login_not_before
        assert (True, 0) == (second.temporarily_locked, second.num_temporary_lockouts)
        clock.advance(59)
        assert (await client.get_login_failure(REALM, USER)).temporarily_locked is True
        clock.advance(1)
        assert (await client.get_login_failure(REALM, USER)).temporarily_locked is False

    async def test_lockout_timing(self, client: AsyncSessionStoreClient, clock: TestClock) -> None:
        """At the failure factor the user is locked for the wait increment, to the second."""
        await _set_brute_force(client, enabled=True, failure_factor=3, wait_increment_seconds=120)
        for _ in range(2):
            assert (await client.record_login_failure(REALM, USER)).temporarily_locked is False
            clock.advance(5)
        third = await client.record_login_failure(REALM, USER)
        locked_at = clock.now_ms

        assert (True, 1, locked_at // 1000 + 120) == (
            third.temporarily_locked,
            third.num_temporary_lockouts,
            third.failed_login_not_before,
        )
        clock.advance(119.999)
        assert (await client.get_login_failure(REALM, USER)).temporarily_locked is True
        clock.advance(0.001)
        assert (await client.get_login_failure(REALM, USER)).temporarily_locked is False

    async def test_max_delta_resets_the_count(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A failure more than the max delta time after the previous one counts from one again."""
        await _set_brute_force(client, enabled=True, max_delta_time_seconds=600)
        for _ in range(3):
            await client.record_login_failure(REALM, USER, ip_address="10.0.0.1")
            clock.advance(10)
        clock.advance(600)
        after = await client.record_login_failure(REALM, USER, ip_address=IP)

        assert (
            LoginFailure(
                realm=REALM, user_id=USER, num_failures=1, last_failure_ms=clock.now_ms, last_ip_failure=IP
            )
            == after
        )

    async def test_permanent_lockout(self, client: AsyncSessionStoreClient, clock: TestClock) -> None:
        """Past the allowed temporary lockouts the record says: disable the user."""
        await _set_brute_force(
            client, enabled=True, permanent_lockout=True, max_temporary_lockouts=1, failure_factor=2
        )
        flags = []
        for _ in range(4):
            record = await client.record_login_failure(REALM, USER)
            flags.append((record.num_temporary_lockouts, record.permanently_locked))
            clock.advance(5)

        assert [(0, False), (1, False), (2, True), (3, True)] == flags

    async def test_empty_ip_clears_the_last_ip(self, client: AsyncSessionStoreClient) -> None:
        """A failure without an IP leaves no last IP, as Keycloak's setter does."""
        await client.record_login_failure(REALM, USER, ip_address=IP)

        assert "" == (await client.record_login_failure(REALM, USER)).last_ip_failure

    async def test_users_and_realms_are_separate(self, client: AsyncSessionStoreClient) -> None:
        """Failures of one user do not count for another user, nor in another realm."""
        await client.record_login_failure(REALM, USER)
        await client.record_login_failure(REALM, USER)

        assert 1 == (await client.record_login_failure(REALM, "user-2")).num_failures
        assert 1 == (await client.record_login_failure(OTHER, USER)).num_failures

    async def test_record_lives_with_the_users_sessions(
        self, client: AsyncSessionStoreClient, server: SessionStoreServer
    ) -> None:
        """The record is a hash in the user's partition, without a TTL."""
        await client.record_login_failure(REALM, USER, ip_address=IP)
        partition = user_partition(REALM, USER)
        shard = server.router.shard_for(partition)
        key = keys.login_failure(partition, REALM, USER)
        assert -1 == await shard.command("PTTL", key)
        assert [USER] == await shard.command("SMEMBERS", keys.login_failure_index(partition, REALM))

    @pytest.mark.parametrize(
        "policy",
        [
            BruteForcePolicy(enabled=True),
            BruteForcePolicy(
                enabled=True, failure_factor=3, wait_increment_seconds=30, max_failure_wait_seconds=100
            ),
            BruteForcePolicy(
                enabled=True, strategy=BruteForceStrategy.LINEAR, failure_factor=4, max_delta_time_seconds=30
            ),
            BruteForcePolicy(enabled=True, permanent_lockout=True, failure_factor=5),
            BruteForcePolicy(
                enabled=True, permanent_lockout=True, max_temporary_lockouts=2, failure_factor=2
            ),
            BruteForcePolicy(enabled=False, failure_factor=2),
        ],
        ids=["defaults", "multiple", "linear", "permanent-only", "permanent-after-2", "off"],
    )
    async def test_script_matches_the_rules(
        self, client: AsyncSessionStoreClient, clock: TestClock, policy: BruteForcePolicy
    ) -> None:
        """Every reply of a random sequence of failures equals what model/brute_force.py computes."""
        await client.set_realm_policy(RealmPolicy(realm=REALM, brute_force=policy))
        rng = random.Random(4)  # noqa: S311 - a fixed, replayable sequence of gaps; nothing secret
        eff = effective_brute_force(policy)
        counters = FailureCounters()
        for i in range(60):
            clock.advance(rng.choice((0, 0.2, 0.999, 1, 1.5, 5, 29, 31, 61, 700)))
            ip = rng.choice(("", IP, "2001:db8::1"))
            counters = record_failure(counters, eff, now_ms=clock.now_ms, ip_address=ip)
            got = await client.record_login_failure(REALM, USER, ip_address=ip)
            assert _expected(counters, policy, clock.now_ms) == got, f"failure {i + 1}"

    async def test_concurrent_failures_all_count(self, server: SessionStoreServer, clock: TestClock) -> None:
        """Many concurrent failures of one user add up exactly, as applying them one by one does."""
        policy = BruteForcePolicy(enabled=True)
        async with _clients(server) as clients, asyncio.timeout(RACE_TIMEOUT_SECONDS):
            await clients[0].set_realm_policy(RealmPolicy(realm=REALM, brute_force=policy))
            await asyncio.gather(
                *(
                    clients[i % CHANNELS].record_login_failure(REALM, USER, ip_address=IP)
                    for i in range(CONCURRENT_FAILURES)
                )
            )
            got = await clients[0].get_login_failure(REALM, USER)

        counters = FailureCounters()
        for _ in range(CONCURRENT_FAILURES):
            counters = record_failure(
                counters, effective_brute_force(policy), now_ms=clock.now_ms, ip_address=IP
            )
        assert CONCURRENT_FAILURES == got.num_failures
        assert _expected(counters, policy, clock.now_ms) == got

    @pytest.mark.parametrize(("user", "ip"), [("", IP), ("a b", IP), (USER, "x" * (MAX_FIELD_LENGTH + 1))])
    async def test_bad_input_is_invalid(self, client: AsyncSessionStoreClient, user: str, ip: str) -> None:
        """An empty or whitespace user id, or an oversized IP, is INVALID_ARGUMENT and records nothing."""
        with pytest.raises(InvalidArgumentError):
            await client.record_login_failure(REALM, user, ip_address=ip)

        with pytest.raises(SessionNotFoundError):
            await client.get_login_failure(REALM, USER)


class TestGetLoginFailure:
    """Get reads a record with its lock flags under the realm's current settings."""

    async def test_absent_is_not_found(self, client: AsyncSessionStoreClient) -> None:
        """A user without failures has no record."""
        with pytest.raises(SessionNotFoundError):
            await client.get_login_failure(REALM, USER)

    async def test_flags_follow_the_current_settings(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Turning detection off lifts the lock flags of an existing record; turning it on restores them."""
        await _set_brute_force(client, enabled=True, permanent_lockout=True, failure_factor=2)
        await client.record_login_failure(REALM, USER)
        clock.advance(0.1)
        locked = await client.record_login_failure(REALM, USER)
        assert (True, True) == (locked.temporarily_locked, locked.permanently_locked)

        await _set_brute_force(client, enabled=False, permanent_lockout=True, failure_factor=2)
        off = await client.get_login_failure(REALM, USER)
        assert (False, False, locked.failed_login_not_before) == (
            off.temporarily_locked,
            off.permanently_locked,
            off.failed_login_not_before,
        )


class TestClearAndRemoveLoginFailure:
    """Clear (a successful login) and remove (a deleted user) drop the record."""

    @pytest.mark.parametrize("operation", ["clear_login_failure", "remove_login_failure"])
    async def test_drops_the_record(self, client: AsyncSessionStoreClient, operation: str) -> None:
        """The record is gone, the next failure counts from one, and a repeat answers False."""
        await _set_brute_force(client, enabled=True)
        await client.record_login_failure(REALM, USER, ip_address=IP)
        await client.record_login_failure(REALM, USER, ip_address=IP)
        call = getattr(client, operation)

        assert await call(REALM, USER) is True
        with pytest.raises(SessionNotFoundError):
            await client.get_login_failure(REALM, USER)
        assert await call(REALM, USER) is False
        after = await client.record_login_failure(REALM, USER)
        assert (1, 0, False) == (after.num_failures, after.failed_login_not_before, after.temporarily_locked)

    async def test_clear_unlocks(self, client: AsyncSessionStoreClient, clock: TestClock) -> None:
        """A successful login ends a temporary lockout at once."""
        await _set_brute_force(client, enabled=True)
        await client.record_login_failure(REALM, USER)
        assert (await client.record_login_failure(REALM, USER)).temporarily_locked is True

        await client.clear_login_failure(REALM, USER)
        clock.advance(2)
        assert (await client.record_login_failure(REALM, USER)).temporarily_locked is False


class TestRemoveRealmLoginFailures:
    """Removing a realm's records removes all of them, and only them."""

    async def test_removes_every_record_of_the_realm(
        self, client: AsyncSessionStoreClient, server: SessionStoreServer
    ) -> None:
        """Every user's record of the realm goes, the other realm's stay, and the indexes are empty."""
        users = [f"user-{i}" for i in range(60)]
        await asyncio.gather(*(client.record_login_failure(REALM, u) for u in users))
        await asyncio.gather(*(client.record_login_failure(OTHER, u) for u in users[:5]))
        await client.clear_login_failure(REALM, users[0])

        assert 59 == await client.remove_realm_login_failures(REALM)
        for user in users:
            with pytest.raises(SessionNotFoundError):
                await client.get_login_failure(REALM, user)
        assert [1] * 5 == [(await client.get_login_failure(OTHER, u)).num_failures for u in users[:5]]
        assert 0 == await client.remove_realm_login_failures(REALM)
        assert [] == await partitioned_keys(server.router, "ss:{*}:lf*:realm-a*")

    async def test_more_users_in_a_partition_than_one_batch(
        self, client: AsyncSessionStoreClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A partition with more records than one removal batch is emptied in several script calls."""
        partition = user_partition(REALM, "seed")
        users = [u for u in (f"u{i}" for i in range(300_000)) if user_partition(REALM, u) == partition][:30]
        await asyncio.gather(*(client.record_login_failure(REALM, u) for u in users))
        monkeypatch.setattr(login_failures, "REMOVE_BATCH", 7)

        assert 30 == await client.remove_realm_login_failures(REALM)
        for user in users:
            with pytest.raises(SessionNotFoundError):
                await client.get_login_failure(REALM, user)
