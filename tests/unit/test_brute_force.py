"""The brute-force rules (model/brute_force.py) against Keycloak's algorithm and §1.6's worked examples.

`KeycloakRecord.failure` restates DefaultBruteForceProtector.failure the way the Java reads: a
mutable entity whose setters only increase, updated step by step. The one deliberate difference of
session-store (the max-delta reset comes before the failure is recorded) is made there too, and
named where it is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_store.model.brute_force import (
    DEFAULT_FAILURE_FACTOR,
    DEFAULT_MAX_DELTA_TIME_SECONDS,
    MAX_NOT_BEFORE,
    EffectiveBruteForce,
    FailureCounters,
    effective_brute_force,
    is_permanently_locked,
    is_temporarily_locked,
    record_failure,
)
from session_store.model.policy import BruteForcePolicy, BruteForceStrategy

T0 = 1_700_000_000_000
"""An epoch-ms start time on a whole second."""


@dataclass
class KeycloakRecord:
    """Keycloak's LoginFailureEntity: the setters of notBefore and lastFailure only increase."""

    not_before: int = 0
    failures: int = 0
    lockouts: int = 0
    last_failure: int = 0
    last_ip: str = ""

    def set_not_before(self, value: int) -> None:
        self.not_before = max(self.not_before, value)

    def set_last_failure(self, value: int) -> None:
        self.last_failure = max(self.last_failure, value)

    def clear(self) -> None:
        self.not_before = self.failures = self.lockouts = self.last_failure = 0
        self.last_ip = ""

    def failure(self, realm: EffectiveBruteForce, failure_time: int, ip: str) -> None:
        """DefaultBruteForceProtector.failure, line by line."""
        permanent_only = realm.permanent_lockout and realm.max_temporary_lockouts == 0
        last = self.last_failure
        delta = failure_time - last if last > 0 else 0
        # session-store: the max-delta reset happens first; Keycloak sets IP and time before it,
        # so its reset also clears them.
        if not permanent_only and delta > 0 and delta > realm.max_delta_time_seconds * 1000:
            self.clear()
        self.last_ip = ip
        self.set_last_failure(failure_time)
        self.failures += 1
        if not realm.enabled:  # session-store counts with detection off (Keycloak does not call this)
            return
        wait = 0
        if not permanent_only:
            if realm.strategy == BruteForceStrategy.MULTIPLE:
                wait = realm.wait_increment_seconds * (self.failures // realm.failure_factor)
            else:
                wait = realm.wait_increment_seconds * (1 + self.failures - realm.failure_factor)
        quick = False
        if wait <= 0 and last > 0 and delta < realm.quick_login_check_milliseconds:
            wait = realm.minimum_quick_login_wait_seconds
            quick = True
        if wait > 0:
            if not realm.permanent_lockout or realm.max_temporary_lockouts > 0:
                wait = min(realm.max_failure_wait_seconds, wait)
            if not quick:
                self.lockouts += 1
            if quick or not realm.permanent_lockout or self.lockouts <= realm.max_temporary_lockouts:
                self.set_not_before(min(failure_time // 1000 + wait, MAX_NOT_BEFORE))

    def counters(self) -> FailureCounters:
        return FailureCounters(
            num_failures=self.failures,
            num_temporary_lockouts=self.lockouts,
            last_failure_ms=self.last_failure,
            last_ip_failure=self.last_ip,
            failed_login_not_before=self.not_before,
        )


def settings(**overrides: Any) -> EffectiveBruteForce:
    """Keycloak's defaults with detection on, and some settings changed."""
    return effective_brute_force(BruteForcePolicy(enabled=True, **overrides))


def replay(policy: EffectiveBruteForce, gaps_ms: list[int], start: int = T0) -> list[FailureCounters]:
    """The record after each failure; the n-th failure comes gaps_ms[n] after the one before it."""
    counters, now, after = FailureCounters(), start, []
    for gap in gaps_ms:
        now += gap
        counters = record_failure(counters, policy, now_ms=now, ip_address="10.0.0.1")
        after.append(counters)
    return after


policies = st.builds(
    BruteForcePolicy,
    enabled=st.booleans(),
    permanent_lockout=st.booleans(),
    max_temporary_lockouts=st.integers(0, 4),
    strategy=st.sampled_from(BruteForceStrategy),
    failure_factor=st.integers(0, 6),
    wait_increment_seconds=st.integers(0, 120),
    quick_login_check_milliseconds=st.sampled_from([0, 1, 500, 1000, 5000]),
    minimum_quick_login_wait_seconds=st.integers(0, 120),
    max_failure_wait_seconds=st.sampled_from([0, 30, 90, 900]),
    max_delta_time_seconds=st.sampled_from([0, 1, 5, 60]),
)
gap_lists = st.lists(
    st.one_of(
        st.integers(0, 2000), st.integers(0, 90_000), st.sampled_from([999, 1000, 1001, 60_000, 60_001])
    ),
    max_size=40,
)
ips = st.sampled_from(["", "10.0.0.1", "2001:db8::1"])


class TestAgainstKeycloak:
    """The pure rules equal the line-by-line restatement of Keycloak's failure()."""

    @given(policy=policies, gaps=gap_lists, ip=ips)
    def test_every_sequence_of_failures(self, policy: BruteForcePolicy, gaps: list[int], ip: str) -> None:
        """After each failure of any sequence, under any settings, both give the same record."""
        eff = effective_brute_force(policy)
        keycloak, ours, now = KeycloakRecord(), FailureCounters(), T0
        for gap in gaps:
            now += gap
            ours = record_failure(ours, eff, now_ms=now, ip_address=ip)
            keycloak.failure(eff, now, ip)
            assert keycloak.counters() == ours


class TestProperties:
    """Invariants of the rules that hold whatever the settings."""

    @given(policy=policies, gaps=gap_lists)
    def test_each_failure_counts_one_unless_the_record_resets(
        self, policy: BruteForcePolicy, gaps: list[int]
    ) -> None:
        """The failure count grows by one per failure, or restarts at one after a max-delta gap."""
        eff = effective_brute_force(policy)
        before = FailureCounters()
        for after in replay(eff, gaps):
            assert after.num_failures in (before.num_failures + 1, 1)
            if after.num_failures == 1:
                assert after.num_temporary_lockouts <= 1
            else:
                assert after.failed_login_not_before >= before.failed_login_not_before
            before = after

    @given(policy=policies, gaps=gap_lists)
    def test_detection_off_never_locks(self, policy: BruteForcePolicy, gaps: list[int]) -> None:
        """With detection off nothing locks: no not-before, no lockouts, no lock flags."""
        eff = effective_brute_force(replace(policy, enabled=False))
        for after in replay(eff, gaps):
            assert (0, 0) == (after.failed_login_not_before, after.num_temporary_lockouts)
            assert is_temporarily_locked(after, eff, T0) is False
            assert is_permanently_locked(after, eff) is False

    @given(policy=policies, gaps=gap_lists)
    def test_permanent_only_never_resets_and_never_counts_lockouts(
        self, policy: BruteForcePolicy, gaps: list[int]
    ) -> None:
        """Permanent lockout without temporary lockouts: failures only grow and no lockout is counted."""
        eff = effective_brute_force(replace(policy, permanent_lockout=True, max_temporary_lockouts=0))
        for n, after in enumerate(replay(eff, gaps), start=1):
            assert (n, 0) == (after.num_failures, after.num_temporary_lockouts)
            assert (eff.enabled and n >= eff.failure_factor) == is_permanently_locked(after, eff)


class TestWorkedExamples:
    """§1.6's rules on small, hand-checked sequences."""

    def test_defaults(self) -> None:
        """Keycloak's defaults: 30 failures in a row a few seconds apart lock for 60 s from the 30th."""
        eff = settings()
        assert (DEFAULT_FAILURE_FACTOR, DEFAULT_MAX_DELTA_TIME_SECONDS) == (
            eff.failure_factor,
            eff.max_delta_time_seconds,
        )
        after = replay(eff, [0] + [2000] * 30)
        assert [0] * 29 == [c.failed_login_not_before for c in after[:29]]
        thirtieth = after[29]
        assert (30, 1, (T0 + 29 * 2000) // 1000 + 60) == (
            thirtieth.num_failures,
            thirtieth.num_temporary_lockouts,
            thirtieth.failed_login_not_before,
        )
        # Every failure from the factor on is a temporary lockout again (MULTIPLE: wait stays > 0).
        assert 2 == after[30].num_temporary_lockouts

    def test_quick_login(self) -> None:
        """A second failure within the quick-login window locks for the minimum wait, without a lockout."""
        first, second = replay(settings(), [0, 999])

        assert 0 == first.failed_login_not_before
        assert ((T0 + 999) // 1000 + 60, 0) == (second.failed_login_not_before, second.num_temporary_lockouts)

    def test_no_quick_login_at_the_window(self) -> None:
        """A failure exactly the quick-login window after the previous one is not quick."""
        assert 0 == replay(settings(), [0, 1000])[1].failed_login_not_before

    def test_wait_is_capped(self) -> None:
        """The wait never exceeds the max failure wait."""
        eff = settings(failure_factor=1, wait_increment_seconds=600, max_failure_wait_seconds=900)
        first, second = replay(eff, [0, 5000])

        assert T0 // 1000 + 600 == first.failed_login_not_before
        assert (T0 + 5000) // 1000 + 900 == second.failed_login_not_before

    def test_linear(self) -> None:
        """LINEAR: the wait is increment x (1 + failures - factor), from the factor on."""
        eff = settings(strategy=BruteForceStrategy.LINEAR, failure_factor=3, max_failure_wait_seconds=10_000)
        after = replay(eff, [0, 5000, 5000, 5000])

        assert [0, 0, (T0 + 10_000) // 1000 + 60, (T0 + 15_000) // 1000 + 120] == [
            c.failed_login_not_before for c in after
        ]
        assert [0, 0, 1, 2] == [c.num_temporary_lockouts for c in after]

    def test_max_delta_resets(self) -> None:
        """A failure more than the max delta after the previous one starts counting afresh."""
        eff = settings(max_delta_time_seconds=60)
        at_the_limit = replay(eff, [0, 5000, 60_000])[-1]
        past_it = replay(eff, [0, 5000, 60_001])[-1]

        assert 3 == at_the_limit.num_failures
        assert (
            FailureCounters(num_failures=1, last_failure_ms=T0 + 65_001, last_ip_failure="10.0.0.1")
            == past_it
        )

    def test_permanent_lockout_after_max_temporary_lockouts(self) -> None:
        """With two temporary lockouts allowed, the third is permanent: no new not-before, user disabled."""
        eff = settings(permanent_lockout=True, max_temporary_lockouts=2, failure_factor=1)
        after = replay(eff, [0, 5000, 5000])

        assert [1, 2, 3] == [c.num_temporary_lockouts for c in after]
        assert [False, False, True] == [is_permanently_locked(c, eff) for c in after]
        assert after[1].failed_login_not_before == after[2].failed_login_not_before

    def test_permanent_only(self) -> None:
        """Permanent lockout with no temporary lockouts: locked for good at the failure factor."""
        eff = settings(permanent_lockout=True, failure_factor=3)
        after = replay(eff, [0, 5000, 100_000_000])

        assert [1, 2, 3] == [c.num_failures for c in after]
        assert [0, 0, 0] == [c.failed_login_not_before for c in after]
        assert [False, False, True] == [is_permanently_locked(c, eff) for c in after]

    def test_permanent_only_quick_login_still_waits(self) -> None:
        """Permanent-only mode still applies the quick-login wait (uncapped)."""
        eff = settings(permanent_lockout=True, minimum_quick_login_wait_seconds=2000)
        second = replay(eff, [0, 10])[1]

        assert (T0 + 10) // 1000 + 2000 == second.failed_login_not_before

    @pytest.mark.parametrize(
        ("now_ms", "locked"),
        [(T0 + 59_999, True), (T0 + 60_000, False), (T0 + 60_999, False)],
    )
    def test_temporarily_locked_until_not_before(self, now_ms: int, locked: bool) -> None:
        """Locked while now (in whole seconds) is before not-before."""
        counters = FailureCounters(num_failures=1, failed_login_not_before=T0 // 1000 + 60)

        assert locked == is_temporarily_locked(counters, settings(), now_ms)
        assert is_temporarily_locked(counters, effective_brute_force(BruteForcePolicy()), now_ms) is False


class TestDefaults:
    """Zero settings take Keycloak's realm defaults."""

    def test_defaults(self) -> None:
        """RealmManager's defaults: 30, 60 s, 1000 ms, 60 s, 900 s, 12 h."""
        eff = effective_brute_force(BruteForcePolicy())
        assert (30, 60, 1000, 60, 900, 43200) == (
            eff.failure_factor,
            eff.wait_increment_seconds,
            eff.quick_login_check_milliseconds,
            eff.minimum_quick_login_wait_seconds,
            eff.max_failure_wait_seconds,
            eff.max_delta_time_seconds,
        )
        assert (False, False, 0, BruteForceStrategy.MULTIPLE) == (
            eff.enabled,
            eff.permanent_lockout,
            eff.max_temporary_lockouts,
            eff.strategy,
        )
