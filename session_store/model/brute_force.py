"""Keycloak's brute-force detection (DefaultBruteForceProtector, keycloak-semantics.md §1.6), pure.

The Lua script ``record_login_failure.lua`` applies the same rules to the stored counters in one
atomic call; this module is their readable statement: it applies a realm's defaults, and it is the
reference the tests hold the script to. The lock flags of a record are computed here only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from session_store.model.policy import BruteForcePolicy, BruteForceStrategy

DEFAULT_FAILURE_FACTOR = 30
DEFAULT_WAIT_INCREMENT_SECONDS = 60
DEFAULT_QUICK_LOGIN_CHECK_MILLISECONDS = 1000
DEFAULT_MINIMUM_QUICK_LOGIN_WAIT_SECONDS = 60
DEFAULT_MAX_FAILURE_WAIT_SECONDS = 900
DEFAULT_MAX_DELTA_TIME_SECONDS = 43200
MAX_NOT_BEFORE = 2**31 - 1
"""Keycloak keeps failedLoginNotBefore in a Java int (epoch seconds) and caps it there."""


@dataclass(frozen=True, kw_only=True)
class EffectiveBruteForce:
    """The settings the rules use, Keycloak's realm defaults applied (RealmManager)."""

    enabled: bool
    permanent_lockout: bool
    max_temporary_lockouts: int
    strategy: BruteForceStrategy
    failure_factor: int
    wait_increment_seconds: int
    quick_login_check_milliseconds: int
    minimum_quick_login_wait_seconds: int
    max_failure_wait_seconds: int
    max_delta_time_seconds: int

    @property
    def permanent_only(self) -> bool:
        """Permanent lockout without temporary lockouts: no waits grow and nothing resets by time."""
        return self.permanent_lockout and self.max_temporary_lockouts == 0


def effective_brute_force(policy: BruteForcePolicy) -> EffectiveBruteForce:
    """Apply Keycloak's defaults to a realm's brute-force settings (0 = the default)."""
    return EffectiveBruteForce(
        enabled=policy.enabled,
        permanent_lockout=policy.permanent_lockout,
        max_temporary_lockouts=policy.max_temporary_lockouts,
        strategy=policy.strategy,
        failure_factor=policy.failure_factor or DEFAULT_FAILURE_FACTOR,
        wait_increment_seconds=policy.wait_increment_seconds or DEFAULT_WAIT_INCREMENT_SECONDS,
        quick_login_check_milliseconds=(
            policy.quick_login_check_milliseconds or DEFAULT_QUICK_LOGIN_CHECK_MILLISECONDS
        ),
        minimum_quick_login_wait_seconds=(
            policy.minimum_quick_login_wait_seconds or DEFAULT_MINIMUM_QUICK_LOGIN_WAIT_SECONDS
        ),
        max_failure_wait_seconds=policy.max_failure_wait_seconds or DEFAULT_MAX_FAILURE_WAIT_SECONDS,
        max_delta_time_seconds=policy.max_delta_time_seconds or DEFAULT_MAX_DELTA_TIME_SECONDS,
    )


@dataclass(frozen=True, kw_only=True)
class FailureCounters:
    """What a login-failure record stores (Keycloak's UserLoginFailureModel); all zero = no record."""

    num_failures: int = 0
    num_temporary_lockouts: int = 0
    last_failure_ms: int = 0
    """Epoch ms of the newest failure."""
    last_ip_failure: str = ""
    failed_login_not_before: int = 0
    """Epoch seconds: logins are refused before this."""


def record_failure(
    counters: FailureCounters, policy: EffectiveBruteForce, *, now_ms: int, ip_address: str
) -> FailureCounters:
    """The record after one failed login at `now_ms` (Keycloak's DefaultBruteForceProtector.failure).

    With brute-force detection off, the failure is counted (after the max-delta reset) but never
    locks: no wait, no temporary lockout, `failed_login_not_before` unchanged.

    One deliberate difference from Keycloak: when the time since the previous failure exceeds the
    max delta, Keycloak clears the record *after* setting the last failure time and IP, so those end
    up 0 and empty; here the reset comes first (as §1.6 states the rule), so they hold this failure.
    """
    last = counters.last_failure_ms
    delta = now_ms - last if last > 0 else 0
    current = counters
    if not policy.permanent_only and delta > 0 and delta > policy.max_delta_time_seconds * 1000:
        current = FailureCounters()
    current = replace(
        current,
        num_failures=current.num_failures + 1,
        last_failure_ms=max(current.last_failure_ms, now_ms),  # Keycloak's setter only increases
        last_ip_failure=ip_address,
    )
    if not policy.enabled:
        return current
    wait = 0
    if not policy.permanent_only:
        n, factor = current.num_failures, policy.failure_factor
        if policy.strategy == BruteForceStrategy.MULTIPLE:
            wait = policy.wait_increment_seconds * (n // factor)
        else:
            wait = policy.wait_increment_seconds * (1 + n - factor)
    quick = False
    if wait <= 0 and last > 0 and delta < policy.quick_login_check_milliseconds:
        wait = policy.minimum_quick_login_wait_seconds
        quick = True
    if wait <= 0:
        return current
    if not policy.permanent_only:
        wait = min(policy.max_failure_wait_seconds, wait)
    if not quick:
        current = replace(current, num_temporary_lockouts=current.num_temporary_lockouts + 1)
    if (
        quick
        or not policy.permanent_lockout
        or current.num_temporary_lockouts <= policy.max_temporary_lockouts
    ):
        not_before = min(now_ms // 1000 + wait, MAX_NOT_BEFORE)
        # Keycloak's setter only increases.
        current = replace(current, failed_login_not_before=max(current.failed_login_not_before, not_before))
    return current


def is_temporarily_locked(counters: FailureCounters, policy: EffectiveBruteForce, now_ms: int) -> bool:
    """Logins are refused now (Keycloak isTemporarilyDisabled); never while detection is off."""
    return policy.enabled and now_ms // 1000 < counters.failed_login_not_before


def is_permanently_locked(counters: FailureCounters, policy: EffectiveBruteForce) -> bool:
    """The caller must disable the user: the condition under which Keycloak's failure() does.

    True when detection and permanent lockout are on and either the temporary lockouts exceed the
    allowed number, or no temporary lockouts are allowed and the failures reached the failure factor.
    """
    if not (policy.enabled and policy.permanent_lockout):
        return False
    return counters.num_temporary_lockouts > policy.max_temporary_lockouts or (
        policy.max_temporary_lockouts == 0 and counters.num_failures >= policy.failure_factor
    )
