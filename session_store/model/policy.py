"""Realm session policy and Keycloak's expiry rules (keycloak-semantics.md §2), as pure functions.

The Lua scripts implement the same rules against stored fields; this module is the readable
statement of them, used to validate policies, to build the scripts' policy arguments, and as the
reference the tests hold the scripts to.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from session_store.errors import InvalidArgumentError
from session_store.model.ids import validate_id
from session_store.model.limits import MAX_CLIENT_SESSIONS, MAX_TIMEOUT_SECONDS

DEFAULT_SSO_SESSION_IDLE_TIMEOUT = 1800
DEFAULT_SSO_SESSION_MAX_LIFESPAN = 36000
DEFAULT_OFFLINE_SESSION_IDLE_TIMEOUT = 2592000
DEFAULT_OFFLINE_SESSION_MAX_LIFESPAN = 5184000
DEFAULT_ACCESS_CODE_LIFESPAN = 60
DEFAULT_ACCESS_CODE_LIFESPAN_USER_ACTION = 300
DEFAULT_ACCESS_CODE_LIFESPAN_LOGIN = 1800
DEFAULT_AUTH_SESSIONS_LIMIT = 300
MAX_AUTH_SESSIONS_LIMIT = 10_000
NO_EXPIRY = -1
MAX_CLIENT_POLICIES = 4 * MAX_CLIENT_SESSIONS


@dataclass(frozen=True, kw_only=True)
class ClientPolicy:
    """Per-client overrides of the client-session timeouts, seconds; 0 = unset."""

    session_idle_timeout: int = 0
    session_max_lifespan: int = 0
    offline_session_idle_timeout: int = 0
    offline_session_max_lifespan: int = 0


class BruteForceStrategy(enum.IntEnum):
    """How the lockout wait grows with failures (values match the proto)."""

    MULTIPLE = 0
    LINEAR = 1


@dataclass(frozen=True, kw_only=True)
class BruteForcePolicy:
    """Keycloak's brute-force detection settings; 0 = Keycloak's default where one exists."""

    enabled: bool = False
    permanent_lockout: bool = False
    max_temporary_lockouts: int = 0
    strategy: BruteForceStrategy = BruteForceStrategy.MULTIPLE
    failure_factor: int = 0
    wait_increment_seconds: int = 0
    quick_login_check_milliseconds: int = 0
    minimum_quick_login_wait_seconds: int = 0
    max_failure_wait_seconds: int = 0
    max_delta_time_seconds: int = 0


@dataclass(frozen=True, kw_only=True)
class RealmPolicy:
    """A realm's session timeouts in seconds, with Keycloak's names; 0 = unset (default applies)."""

    realm: str
    sso_session_idle_timeout: int = 0
    sso_session_max_lifespan: int = 0
    sso_session_idle_timeout_remember_me: int = 0
    sso_session_max_lifespan_remember_me: int = 0
    remember_me: bool = False
    client_session_idle_timeout: int = 0
    client_session_max_lifespan: int = 0
    offline_session_idle_timeout: int = 0
    offline_session_max_lifespan_enabled: bool = False
    offline_session_max_lifespan: int = 0
    client_offline_session_idle_timeout: int = 0
    client_offline_session_max_lifespan: int = 0
    clients: Mapping[str, ClientPolicy] = field(default_factory=dict)
    access_code_lifespan: int = 0
    access_code_lifespan_user_action: int = 0
    access_code_lifespan_login: int = 0
    auth_sessions_limit: int = 0
    revoke_refresh_token: bool = False
    refresh_token_max_reuse: int = 0
    brute_force: BruteForcePolicy = field(default_factory=BruteForcePolicy)

    def __post_init__(self) -> None:
        """Reject what Keycloak could not hold: negative or absurd timeouts, bad client ids.

        Raises:
            InvalidArgumentError: a timeout is negative or above MAX_TIMEOUT_SECONDS, a client id is
                invalid, or there are too many client overrides.
        """
        validate_id(self.realm, "realm")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool):
                _check_timeout(f.name, value)
        for f in fields(self.brute_force):
            value = getattr(self.brute_force, f.name)
            if isinstance(value, int) and not isinstance(value, bool | enum.Enum):
                _check_timeout(f"brute_force.{f.name}", value)
        if self.auth_sessions_limit > MAX_AUTH_SESSIONS_LIMIT:
            raise InvalidArgumentError(f"auth_sessions_limit must be at most {MAX_AUTH_SESSIONS_LIMIT}")
        if len(self.clients) > MAX_CLIENT_POLICIES:
            raise InvalidArgumentError(f"at most {MAX_CLIENT_POLICIES} client overrides per realm")
        for client_id, client in self.clients.items():
            validate_id(client_id, "client id")
            for f in fields(client):
                _check_timeout(f"clients[{client_id}].{f.name}", getattr(client, f.name))


def _check_timeout(name: str, value: int) -> None:
    if value < 0:
        raise InvalidArgumentError(f"{name} must not be negative (0 means unset)")
    if value > MAX_TIMEOUT_SECONDS:
        raise InvalidArgumentError(f"{name} must be at most {MAX_TIMEOUT_SECONDS} seconds")


@dataclass(frozen=True, kw_only=True)
class EffectivePolicy:
    """The values the expiry rules use, defaults applied (Keycloak's RealmExpiration + client rules)."""

    idle: int
    lifespan: int
    idle_remember_me: int
    lifespan_remember_me: int
    remember_me_allowed: bool
    client_idle: int
    client_max: int
    offline_idle: int
    offline_lifespan: int
    offline_max_enabled: bool
    client_offline_idle: int
    client_offline_max: int
    clients: Mapping[str, ClientPolicy]


def auth_session_lifespan(policy: RealmPolicy) -> int:
    """Seconds a root authentication session lives after its last change (Keycloak §1.4)."""
    return max(
        policy.access_code_lifespan or DEFAULT_ACCESS_CODE_LIFESPAN,
        policy.access_code_lifespan_user_action or DEFAULT_ACCESS_CODE_LIFESPAN_USER_ACTION,
        policy.access_code_lifespan_login or DEFAULT_ACCESS_CODE_LIFESPAN_LOGIN,
    )


def auth_sessions_limit(policy: RealmPolicy) -> int:
    """Tabs per root authentication session (a non-positive setting means Keycloak's 300)."""
    return policy.auth_sessions_limit if policy.auth_sessions_limit > 0 else DEFAULT_AUTH_SESSIONS_LIMIT


def effective_policy(policy: RealmPolicy) -> EffectivePolicy:
    """Apply Keycloak's defaults (§2.2) to a realm policy."""
    idle = policy.sso_session_idle_timeout or DEFAULT_SSO_SESSION_IDLE_TIMEOUT
    lifespan = policy.sso_session_max_lifespan or DEFAULT_SSO_SESSION_MAX_LIFESPAN
    offline_idle = policy.offline_session_idle_timeout or DEFAULT_OFFLINE_SESSION_IDLE_TIMEOUT
    offline_max = policy.offline_session_max_lifespan or DEFAULT_OFFLINE_SESSION_MAX_LIFESPAN
    return EffectivePolicy(
        idle=idle,
        lifespan=lifespan,
        idle_remember_me=max(idle, policy.sso_session_idle_timeout_remember_me),
        lifespan_remember_me=max(lifespan, policy.sso_session_max_lifespan_remember_me),
        remember_me_allowed=policy.remember_me,
        client_idle=policy.client_session_idle_timeout,
        client_max=policy.client_session_max_lifespan,
        offline_idle=offline_idle,
        offline_lifespan=offline_max if policy.offline_session_max_lifespan_enabled else NO_EXPIRY,
        offline_max_enabled=policy.offline_session_max_lifespan_enabled,
        client_offline_idle=policy.client_offline_session_idle_timeout or offline_idle,
        client_offline_max=policy.client_offline_session_max_lifespan or offline_max,
        clients=policy.clients,
    )


@dataclass(frozen=True)
class Deadlines:
    """The two deadlines of a session, epoch ms; `max_ms` is NO_EXPIRY when there is no maximum."""

    max_ms: int
    idle_ms: int

    @property
    def expires_at_ms(self) -> int:
        """The earlier of the two: when the session dies."""
        return self.idle_ms if self.max_ms == NO_EXPIRY else min(self.max_ms, self.idle_ms)

    def is_alive(self, now_ms: int) -> bool:
        """Keycloak's validity rule with grace window 0: alive strictly before both deadlines."""
        return self.idle_ms > now_ms and (self.max_ms == NO_EXPIRY or self.max_ms > now_ms)


def user_session_deadlines(
    policy: EffectivePolicy, *, offline: bool, started: int, last_refresh: int, remember_me: bool
) -> Deadlines:
    """Deadlines of a user session (§2.3); times in epoch seconds."""
    if offline:
        max_ms = (
            NO_EXPIRY if policy.offline_lifespan == NO_EXPIRY else 1000 * (started + policy.offline_lifespan)
        )
        return Deadlines(max_ms, 1000 * (last_refresh + policy.offline_idle))
    lifespan = policy.lifespan_remember_me if remember_me else policy.lifespan
    idle = policy.idle_remember_me if remember_me else policy.idle
    return Deadlines(1000 * (started + lifespan), 1000 * (last_refresh + idle))


def client_session_deadlines(
    policy: EffectivePolicy,
    *,
    offline: bool,
    client_id: str,
    client_started: int,
    client_timestamp: int,
    remember_me: bool,
    user_max_ms: int,
) -> Deadlines:
    """Deadlines of a client session (§2.4); the maximum is capped by the user session's maximum."""
    overrides = policy.clients.get(client_id, ClientPolicy())
    if offline:
        if policy.offline_max_enabled or overrides.offline_session_max_lifespan > 0:
            lifespan = overrides.offline_session_max_lifespan or policy.client_offline_max
            max_ms = 1000 * (client_started + lifespan)
            if user_max_ms > 0:
                max_ms = min(max_ms, user_max_ms)
        else:
            max_ms = NO_EXPIRY
        idle = overrides.offline_session_idle_timeout or policy.client_offline_idle
        return Deadlines(max_ms, 1000 * (client_timestamp + idle))
    lifespan = policy.lifespan_remember_me if remember_me else policy.lifespan
    if overrides.session_max_lifespan > 0:
        lifespan = overrides.session_max_lifespan
    elif policy.client_max > 0:
        lifespan = policy.client_max
    idle = policy.idle_remember_me if remember_me else policy.idle
    if overrides.session_idle_timeout > 0:
        idle = overrides.session_idle_timeout
    elif policy.client_idle > 0:
        idle = policy.client_idle
    max_ms = min(1000 * (client_started + lifespan), user_max_ms)
    return Deadlines(max_ms, 1000 * (client_timestamp + idle))
