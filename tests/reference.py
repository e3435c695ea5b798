"""A plain-dict reference model of Keycloak's user-session rules, for the stateful tests.

It restates keycloak-semantics.md §1.1-§1.3 and §2 directly (it does not import the service's
policy module), keeps every session it was told about, and answers each operation the way the
service must: a value, ``None`` for NOT_FOUND, or a raised error for a precondition failure.
Times are epoch ms as the test clock gives them; stored times are epoch seconds, as in Keycloak.

It also records the lifecycle events the service must append to its shards' streams (storage/keys.py,
the events section of scripts/_prelude.lua), in ``events``: the events seen so far.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from session_store.errors import PreconditionFailedError
from session_store.model.policy import RealmPolicy
from session_store.model.session import ClientSession, UserSession, UserSessionState

NONE = -1
"""A deadline that never comes (offline sessions without a max lifespan)."""
ENDINGS = frozenset({"logged_out", "revoked", "expired"})
"""The event types that end a session: one per session, and nothing of that session after it."""


@dataclass(frozen=True)
class RefEvent:
    """One event as the service's stream entry must hold it (fields t r u s o c why at dl)."""

    type: str
    realm: str
    user_id: str
    session_id: str
    offline: bool
    at: int
    """Epoch ms of the decision: the test clock when the operation (or sweep) that caused it ran."""
    clients: tuple[str, ...] = ()
    why: str = ""
    deadline: int | None = None
    """The deadline ms an `expired` event reports; None for every other type."""


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
    stored_clients: set[str] = field(default_factory=set)
    """The clients whose entry the service's session hash holds: unlike `clients`, which reads
    prune, a client session dead by its own deadline stays here until a write drops it."""
    event_clients: tuple[str, ...] = ()
    """The clients its ending event names: `stored_clients`, sorted, as of the last write that
    recorded the session's deadline (create, attach, touch, detach, offline copy)."""
    ended: bool = False
    """Its ending event (logged_out, revoked, expired) was appended."""


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
        self.events: list[RefEvent] = []
        """Every event the service must have appended so far, in the order the operations ran."""

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

    # -- events ------------------------------------------------------------------------------

    def _emit(
        self,
        s: RefSession,
        etype: str,
        now_ms: int,
        *,
        clients: tuple[str, ...] = (),
        why: str = "",
        deadline: int | None = None,
    ) -> None:
        self.events.append(
            RefEvent(
                type=etype,
                realm=s.realm,
                user_id=s.user_id,
                session_id=s.id,
                offline=s.offline,
                at=now_ms,
                clients=clients,
                why=why,
                deadline=deadline,
            )
        )

    def _end(self, s: RefSession, etype: str, now_ms: int, why: str = "") -> None:
        """End a live session: its one ending event, naming the clients of its last tracked write."""
        s.ended = True
        self._emit(s, etype, now_ms, clients=s.event_clients, why=why)

    @staticmethod
    def _track(s: RefSession) -> None:
        """A write that records the session's deadline also records the clients its hash holds."""
        s.event_clients = tuple(sorted(s.stored_clients))

    def expire_due(self, now_ms: int) -> None:
        """End every session past its deadline with one `expired` event at `now_ms`.

        The service appends it when a path first notices the deadline passed: a sweep, a keyspace
        notification, a script that finds the session dead. The machine sweeps at every clock value
        before it moves the clock again, and every operation here calls this first with its own now,
        so `at` is the first clock value at or after the deadline, whichever path won. Reads do not
        call it: the service's read ends a dead session at the same clock value a sweep would.

        Only deaths by deadline are modelled; a remember-me session in a realm that no longer allows
        remember-me, or a realm removed in bulk, ends by other rules (dead_reason in the prelude).

        Raises:
            AssertionError: a session died other than by its deadline (not modelled).
        """
        for s in self.sessions.values():
            if s.ended:
                continue
            max_ms, idle_ms = self._user_deadlines(s)
            deadline = _earliest(max_ms, idle_ms)
            if deadline > now_ms:
                assert self._session_alive(s, now_ms), f"{s.id} died before its deadline: not modelled"
                continue
            s.ended = True
            why = "max" if max_ms != NONE and max_ms <= idle_ms else "idle"
            self._emit(s, "expired", now_ms, clients=s.event_clients, why=why, deadline=deadline)

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
        """createUserSession: started = lastSessionRefresh = now; appends `created`.

        Raises:
            PreconditionFailedError: remember-me in a realm that does not allow it.
        """
        self.expire_due(now_ms)
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
        self._emit(s, "created", now_ms)
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
        No event (refreshed events are off by default); the write drops dead client sessions.
        """
        self.expire_due(now_ms)
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
        s.stored_clients = set(s.clients)
        self._track(s)
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
        """Remove notes, then set notes, then the state, on a live session (no event)."""
        self.expire_due(now_ms)
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
        """createClientSession: one per client, replacing an older one; timestamp = started = now.

        Appends `client_attached` naming the client.
        """
        self.expire_due(now_ms)
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
        s.stored_clients = set(s.clients)
        self._track(s)
        self._emit(s, "client_attached", now_ms, clients=(client_id,))
        return self._client_view(s, client_id)

    def detach(self, realm: str, session_id: str, offline: bool, client_id: str, now_ms: int) -> bool:
        """detachFromUserSession: True when a live client session of a live session was removed.

        Then it appends `client_detached` (logout). The service drops the client's entry from the
        hash even when either is dead, without an event.
        """
        self.expire_due(now_ms)
        kept = self.sessions.get((offline, session_id))
        if kept is not None and kept.realm == realm:
            kept.stored_clients.discard(client_id)
        s = self._live(realm, session_id, offline, now_ms)
        if s is None or s.clients.pop(client_id, None) is None:
            return False
        self._track(s)
        self._emit(s, "client_detached", now_ms, clients=(client_id,), why="logout")
        return True

    def remove(
        self, realm: str, session_id: str, offline: bool, now_ms: int, *, revoked_by_admin: bool = False
    ) -> bool:
        """removeUserSession / removeOfflineUserSession: True when a live session was removed.

        It ends as `logged_out`, or `revoked` (admin) when an administrator removed it; a session past
        its deadline has ended as `expired` already.
        """
        self.expire_due(now_ms)
        s = self.sessions.get((offline, session_id))
        if s is None or s.realm != realm:
            return False
        del self.sessions[(offline, session_id)]
        if not self._session_alive(s, now_ms):
            return False
        if revoked_by_admin:
            self._end(s, "revoked", now_ms, why="admin")
        else:
            self._end(s, "logged_out", now_ms)
        return True

    def remove_user(self, realm: str, user_id: str, offline: bool, now_ms: int) -> int:
        """removeUserSessions(realm, user): how many live sessions of the user were removed.

        Each ends as `revoked` (user).
        """
        self.expire_due(now_ms)
        mine = [
            k
            for k, s in self.sessions.items()
            if k[0] == offline and (s.realm, s.user_id) == (realm, user_id)
        ]
        removed = 0
        for k in mine:
            s = self.sessions.pop(k)
            if self._session_alive(s, now_ms):
                self._end(s, "revoked", now_ms, why="user")
                removed += 1
        return removed

    def create_offline(
        self, realm: str, session_id: str, client_ids: Iterable[str], now_ms: int
    ) -> UserSession | None:
        """createOrUpdateOfflineSession: copy (or refresh) the offline twin, add missing clients.

        A new offline session (also one replacing an offline twin that ended) appends `created`
        (offline) naming the clients copied; refreshing a live one appends nothing.
        """
        self.expire_due(now_ms)
        online = self._live(realm, session_id, False, now_ms)
        if online is None:
            return None
        now_s = now_ms // 1000
        o = self._live(realm, session_id, True, now_ms)
        fresh = o is None
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
        o.stored_clients = set(o.clients)
        self._track(o)
        if fresh:
            self._emit(o, "created", now_ms, clients=o.event_clients)
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
