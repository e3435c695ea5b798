"""A plain-dict reference model of Keycloak's user-session rules, for the stateful tests.

It restates keycloak-semantics.md §1.1-§1.3 and §2 directly (it does not import the service's
policy module), keeps every session it was told about, and answers each operation the way the
service must: a value, ``None`` for NOT_FOUND, or a raised error for a precondition failure.
Times are epoch ms as the test clock gives them; stored times are epoch seconds, as in Keycloak.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from session_store.errors import PreconditionFailedError
from session_store.model.policy import RealmPolicy
from session_store.model.session import ClientSession, UserSession, UserSessionState

NONE = -1
"""A deadline that never comes (offline sessions without a max lifespan)."""


@dataclass
class RefClient:
    """One client session as the model keeps it."""

    redirect_uri: str
    action: str
    protocol: str
    notes: dict[str, str]
    timestamp: int
    started: int
    user_session_started: int


@dataclass
class RefSession:
    """One user session (online or offline) as the model keeps it."""

    id: str
    realm: str
    user_id: str
    offline: bool
    remember_me: bool
    started: int
    last_refresh: int
    login_username: str = ""
    ip_address: str = ""
    auth_method: str = ""
    state: UserSessionState = UserSessionState.UNSPECIFIED
    notes: dict[str, str] = field(default_factory=dict)
    clients: dict[str, RefClient] = field(default_factory=dict)


@dataclass(frozen=True)
class _Rules:
    """A realm's timeouts with Keycloak's defaults applied (§2.2), seconds."""

    idle: int
    life: int
    idle_rm: int
    life_rm: int
    rm_allowed: bool
    c_idle: int
    c_max: int
    off_idle: int
    off_life: int
    off_max_on: bool
    c_off_idle: int
    c_off_max: int


def _rules(p: RealmPolicy) -> _Rules:
    idle = p.sso_session_idle_timeout if p.sso_session_idle_timeout > 0 else 1800
    life = p.sso_session_max_lifespan if p.sso_session_max_lifespan > 0 else 36000
    off_idle = p.offline_session_idle_timeout if p.offline_session_idle_timeout > 0 else 2592000
    off_max = p.offline_session_max_lifespan if p.offline_session_max_lifespan > 0 else 5184000
    return _Rules(
        idle=idle,
        life=life,
        idle_rm=max(idle, p.sso_session_idle_timeout_remember_me),
        life_rm=max(life, p.sso_session_max_lifespan_remember_me),
        rm_allowed=p.remember_me,
        c_idle=p.client_session_idle_timeout,
        c_max=p.client_session_max_lifespan,
        off_idle=off_idle,
        off_life=off_max if p.offline_session_max_lifespan_enabled else NONE,
        off_max_on=p.offline_session_max_lifespan_enabled,
        c_off_idle=p.client_offline_session_idle_timeout or off_idle,
        c_off_max=p.client_offline_session_max_lifespan or off_max,
    )


def _alive(max_ms: int, idle_ms: int, now_ms: int) -> bool:
    """§2.5 with W = 0: valid strictly before both deadlines."""
    return idle_ms > now_ms and (max_ms == NONE or max_ms > now_ms)


def _earliest(max_ms: int, idle_ms: int) -> int:
    return idle_ms if max_ms == NONE else min(max_ms, idle_ms)


class ReferenceStore:
    """Keycloak's session rules over plain dicts; the service must agree with it after every step."""

    def __init__(self, policies: Iterable[RealmPolicy]) -> None:
        """Start empty, with fixed realm policies (per-client overrides are not modelled)."""
        self._rules = {p.realm: _rules(p) for p in policies}
        self.sessions: dict[tuple[bool, str], RefSession] = {}

    # -- the rules ---------------------------------------------------------------------------

    def _user_deadlines(self, s: RefSession) -> tuple[int, int]:
        """§2.3: (max, idle) in ms."""
        r = self._rules[s.realm]
        if s.offline:
            max_ms = NONE if r.off_life == NONE else 1000 * (s.started + r.off_life)
            return max_ms, 1000 * (s.last_refresh + r.off_idle)
        life, idle = (r.life_rm, r.idle_rm) if s.remember_me else (r.life, r.idle)
        return 1000 * (s.started + life), 1000 * (s.last_refresh + idle)

    def _client_deadlines(self, s: RefSession, c: RefClient) -> tuple[int, int]:
        """§2.4: (max, idle) in ms; the max is capped by the user session's max."""
        r = self._rules[s.realm]
        user_max, _ = self._user_deadlines(s)
        if s.offline:
            max_ms = NONE
            if r.off_max_on:
                max_ms = 1000 * (c.started + r.c_off_max)
                if user_max > 0:
                    max_ms = min(max_ms, user_max)
            return max_ms, 1000 * (c.timestamp + r.c_off_idle)
        life = r.life_rm if s.remember_me else r.life
        if r.c_max > 0:
            life = r.c_max
        idle = r.idle_rm if s.remember_me else r.idle
        if r.c_idle > 0:
            idle = r.c_idle
        return min(1000 * (c.started + life), user_max), 1000 * (c.timestamp + idle)

    def _session_alive(self, s: RefSession, now_ms: int) -> bool:
        if s.remember_me and not s.offline and not self._rules[s.realm].rm_allowed:
            return False
        return _alive(*self._user_deadlines(s), now_ms)

    def _client_alive(self, s: RefSession, c: RefClient, now_ms: int) -> bool:
        return _alive(*self._client_deadlines(s, c), now_ms)

    def _live(self, realm: str, session_id: str, offline: bool, now_ms: int) -> RefSession | None:
        """The live session, or None (missing, expired, other realm); dead client sessions dropped."""
        s = self.sessions.get((offline, session_id))
        if s is None or s.realm != realm or not self._session_alive(s, now_ms):
            return None
        s.clients = {k: c for k, c in s.clients.items() if self._client_alive(s, c, now_ms)}
        return s

    def _view(self, s: RefSession) -> UserSession:
        """What a read must return for a live session (its dead client sessions already dropped)."""
        user_dl = _earliest(*self._user_deadlines(s))
        return UserSession(
            id=s.id,
            realm=s.realm,
            user_id=s.user_id,
            offline=s.offline,
            login_username=s.login_username,
            ip_address=s.ip_address,
            auth_method=s.auth_method,
            remember_me=s.remember_me,
            started=s.started,
            last_session_refresh=s.last_refresh,
            state=s.state,
            notes=dict(s.notes),
            client_sessions={cid: self._client_view(s, cid) for cid in s.clients},
            expires_at_ms=user_dl,
        )

    def _client_view(self, s: RefSession, cid: str) -> ClientSession:
        c = s.clients[cid]
        user_dl = _earliest(*self._user_deadlines(s))
        return ClientSession(
            client_id=cid,
            user_session_id=s.id,
            offline=s.offline,
            redirect_uri=c.redirect_uri,
            action=c.action,
            protocol=c.protocol,
            timestamp=c.timestamp,
            started=c.started,
            user_session_started=c.user_session_started,
            notes=dict(c.notes),
            expires_at_ms=min(_earliest(*self._client_deadlines(s, c)), user_dl),
        )

    # -- operations --------------------------------------------------------------------------

    def create(
        self,
        session_id: str,
        realm: str,
        user_id: str,
        now_ms: int,
        *,
        remember_me: bool,
        login_username: str,
        ip_address: str,
        notes: Mapping[str, str],
    ) -> UserSession:
        """createUserSession: started = lastSessionRefresh = now.

        Raises:
            PreconditionFailedError: remember-me in a realm that does not allow it.
        """
        if remember_me and not self._rules[realm].rm_allowed:
            raise PreconditionFailedError("remember-me not allowed")
        now_s = now_ms // 1000
        s = RefSession(
            id=session_id,
            realm=realm,
            user_id=user_id,
            offline=False,
            remember_me=remember_me,
            started=now_s,
            last_refresh=now_s,
            login_username=login_username,
            ip_address=ip_address,
            auth_method="openid-connect",
            notes=dict(notes),
        )
        self.sessions[(False, session_id)] = s
        return self._view(s)

    def get(self, realm: str, session_id: str, offline: bool, now_ms: int) -> UserSession | None:
        """getUserSession / getOfflineUserSession."""
        s = self._live(realm, session_id, offline, now_ms)
        return None if s is None else self._view(s)

    def touch(
        self, realm: str, session_id: str, offline: bool, *, at: int, client_ids: Iterable[str], now_ms: int
    ) -> UserSession | None:
        """A refresh: lastSessionRefresh and the named live client sessions' timestamp move to `at`.

        `at` = 0 (or later than now) means now; setters ignore a value at or below the stored one.
        An expired client session is gone (§1.1 getClientSession), so a refresh does not revive it.
        """
        s = self._live(realm, session_id, offline, now_ms)
        if s is None:
            return None
        now_s = now_ms // 1000
        if at <= 0 or at > now_s:
            at = now_s
        s.last_refresh = max(s.last_refresh, at)
        for cid in client_ids:
            c = s.clients.get(cid)
            if c is not None:
                c.timestamp = max(c.timestamp, at)
        return self.get(realm, session_id, offline, now_ms)

    def update(
        self,
        realm: str,
        session_id: str,
        offline: bool,
        *,
        set_notes: Mapping[str, str],
        remove_notes: Iterable[str],
        state: UserSessionState | None,
        now_ms: int,
    ) -> UserSession | None:
        """Remove notes, then set notes, then the state, on a live session."""
        s = self._live(realm, session_id, offline, now_ms)
        if s is None:
            return None
        for name in remove_notes:
            s.notes.pop(name, None)
        s.notes.update(set_notes)
        if state is not None:
            s.state = state
        return self._view(s)

    def attach(
        self,
        realm: str,
        session_id: str,
        offline: bool,
        client_id: str,
        now_ms: int,
        *,
        redirect_uri: str,
        notes: Mapping[str, str],
    ) -> ClientSession | None:
        """createClientSession: one per client, replacing an older one; timestamp = started = now."""
        s = self._live(realm, session_id, offline, now_ms)
        if s is None:
            return None
        now_s = now_ms // 1000
        s.clients[client_id] = RefClient(
            redirect_uri=redirect_uri,
            action="",
            protocol="openid-connect",
            notes=dict(notes),
            timestamp=now_s,
            started=now_s,
            user_session_started=s.started,
        )
        return self._client_view(s, client_id)

    def detach(self, realm: str, session_id: str, offline: bool, client_id: str, now_ms: int) -> bool:
        """detachFromUserSession: True when a live client session of a live session was removed."""
        s = self._live(realm, session_id, offline, now_ms)
        return s is not None and s.clients.pop(client_id, None) is not None

    def remove(self, realm: str, session_id: str, offline: bool, now_ms: int) -> bool:
        """removeUserSession / removeOfflineUserSession: True when a live session was removed."""
        s = self.sessions.get((offline, session_id))
        if s is None or s.realm != realm:
            return False
        del self.sessions[(offline, session_id)]
        return self._session_alive(s, now_ms)

    def remove_user(self, realm: str, user_id: str, offline: bool, now_ms: int) -> int:
        """removeUserSessions(realm, user): how many live sessions of the user were removed."""
        mine = [
            k
            for k, s in self.sessions.items()
            if k[0] == offline and (s.realm, s.user_id) == (realm, user_id)
        ]
        removed = 0
        for k in mine:
            removed += self._session_alive(self.sessions.pop(k), now_ms)
        return removed

    def create_offline(
        self, realm: str, session_id: str, client_ids: Iterable[str], now_ms: int
    ) -> UserSession | None:
        """createOrUpdateOfflineSession: copy (or refresh) the offline twin, add missing clients."""
        online = self._live(realm, session_id, False, now_ms)
        if online is None:
            return None
        now_s = now_ms // 1000
        o = self._live(realm, session_id, True, now_ms)
        if o is None:
            o = RefSession(
                id=online.id,
                realm=online.realm,
                user_id=online.user_id,
                offline=True,
                remember_me=online.remember_me,
                started=now_s,
                last_refresh=now_s,
                login_username=online.login_username,
                ip_address=online.ip_address,
                auth_method=online.auth_method,
                state=online.state,
                notes=dict(online.notes),
            )
            self.sessions[(True, session_id)] = o
        else:
            o.last_refresh = max(o.last_refresh, now_s)
        for cid in client_ids:
            c = online.clients.get(cid)
            if c is not None and cid not in o.clients:
                o.clients[cid] = RefClient(
                    redirect_uri=c.redirect_uri,
                    action=c.action,
                    protocol=c.protocol,
                    notes=dict(c.notes),
                    timestamp=now_s,
                    started=now_s,
                    user_session_started=o.started,
                )
        return self.get(realm, session_id, True, now_ms)

    def list_user(self, realm: str, user_id: str, offline: bool, now_ms: int) -> list[UserSession]:
        """getUserSessionsStream(realm, user), ordered by id."""
        found = []
        for (off, sid), s in sorted(self.sessions.items()):
            if off == offline and (s.realm, s.user_id) == (realm, user_id):
                view = self.get(realm, sid, offline, now_ms)
                if view is not None:
                    found.append(view)
        return found

    def count(self, realm: str, offline: bool, now_ms: int) -> int:
        """Live sessions of a realm."""
        return sum(
            self.get(realm, sid, offline, now_ms) is not None for off, sid in self.sessions if off == offline
        )

    def client_stats(self, realm: str, offline: bool, now_ms: int) -> dict[str, int]:
        """getActiveClientSessionStats: live client sessions per client."""
        stats: dict[str, int] = {}
        for off, sid in list(self.sessions):
            view = self.get(realm, sid, offline, now_ms) if off == offline else None
            for cid in view.client_sessions if view is not None else ():
                stats[cid] = stats.get(cid, 0) + 1
        return stats
