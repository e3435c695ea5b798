"""The login-failure record as callers see it (Keycloak's UserLoginFailureModel plus lock flags)."""

from __future__ import annotations

from dataclasses import dataclass

from session_store.model.brute_force import (
    EffectiveBruteForce,
    FailureCounters,
    is_permanently_locked,
    is_temporarily_locked,
)


@dataclass(frozen=True, kw_only=True)
class LoginFailure:
    """One user's brute-force counters in a realm, with what they mean under the realm's settings."""

    realm: str
    user_id: str
    num_failures: int = 0
    num_temporary_lockouts: int = 0
    last_failure_ms: int = 0
    """Epoch ms of the newest failure."""
    last_ip_failure: str = ""
    failed_login_not_before: int = 0
    """Epoch seconds: logins are refused before this (0 = not locked)."""
    temporarily_locked: bool = False
    """`failed_login_not_before` is after now (and brute-force detection is on)."""
    permanently_locked: bool = False
    """Permanent lockout is on and its limit is exceeded: the caller disables the user."""

    @classmethod
    def of(
        cls,
        realm: str,
        user_id: str,
        counters: FailureCounters,
        policy: EffectiveBruteForce,
        now_ms: int,
    ) -> LoginFailure:
        """The record of stored counters, read at `now_ms` under `policy`."""
        return cls(
            realm=realm,
            user_id=user_id,
            num_failures=counters.num_failures,
            num_temporary_lockouts=counters.num_temporary_lockouts,
            last_failure_ms=counters.last_failure_ms,
            last_ip_failure=counters.last_ip_failure,
            failed_login_not_before=counters.failed_login_not_before,
            temporarily_locked=is_temporarily_locked(counters, policy, now_ms),
            permanently_locked=is_permanently_locked(counters, policy),
        )
