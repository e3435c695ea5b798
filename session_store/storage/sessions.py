"""Typed operations on user, client and offline sessions: one method per script, replies decoded.

Every state change is one script call on the shard that owns the user's partition. Lookups that do
not start from the user (a caller-brought id, a broker id) go through small hint keys in the
partition of what is looked up; hints are written before the session and verified on every read,
so a crash between the two leaves only a harmless hint behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from session_store.config import EventSettings
from session_store.errors import (
    InvalidArgumentError,
    PreconditionFailedError,
    RefreshTokenReuseError,
    SessionExistsError,
    SessionNotFoundError,
    SessionStoreError,
    StaleRefreshTokenError,
    UnavailableError,
)
from session_store.model.clock import Clock
from session_store.model.ids import (
    home_partition,
    lookup_partition,
    mint_session_id,
    user_partition,
)
from session_store.model.limits import MAX_REFRESH_TOKEN_CHAINS
from session_store.model.policy import NO_EXPIRY
from session_store.model.session import (
    ClientSession,
    NewClientSession,
    NewUserSession,
    RefreshToken,
    RefreshTokenUse,
    SessionLimits,
    UserSession,
    UserSessionState,
)
from session_store.security.encryption import NO_ENCRYPTION, NoteCipher
from session_store.storage import keys
from session_store.storage._errors import RedirectError, StaleHintError
from session_store.storage.policies import CachedPolicy, PolicyStore
from session_store.storage.router import Router

HINT_SLACK_MS = 24 * 3600 * 1000
"""How long hints and pointers outlive the longest life their session could have had at write."""
MAX_STALE_RETRIES = 8
"""How often a multi-session script is retried when the user's index changed under it."""
MAX_LIMIT_ATTEMPTS = 400
"""Script calls a create or attach with session limits may make while the user's index keeps changing
under it (each concurrent login of the same user changes it once). Generous on purpose: 100
simultaneous logins of one user need far fewer (see tests/integration/test_session_limits.py)."""
LIMIT_BACKOFF_SECONDS = 0.001
"""Base of the jittered back-off between two stale attempts of a limited create or attach."""
LIMIT_BACKOFF_CAP_SECONDS = 0.05
"""Longest single back-off between two stale attempts."""
STARTUP_TIME_S = 0
"""Keycloak's getStartupTime for the stale-token rule (§3 step 1): chain records written before it
never flag a token stale. Keycloak distrusts records that outlived a restart of its cache; ours are
written atomically by this store and survive restarts, so no record predates a store that can read
it, except after a partition moves onto a shard added later, where a per-shard creation epoch would
wrongly switch the check off. So every record is trusted: 0, and startupTime <= last always holds.
The script takes it as an argument, so a persisted epoch would need no script change."""

log = structlog.get_logger(__name__)


def _flat_map(flat: Sequence[str]) -> dict[str, str]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _decode_client(
    client_id: str, raw: str, deadline: int, session_id: str, *, offline: bool, realm: str, cipher: NoteCipher
) -> ClientSession:
    data = json.loads(raw)
    notes = data.get("n") or {}
    notes = cipher.decrypt_map(notes, realm, session_id, "c", client_id) if isinstance(notes, dict) else {}
    return ClientSession(
        client_id=client_id,
        user_session_id=session_id,
        offline=offline,
        redirect_uri=data.get("r", ""),
        action=data.get("a", ""),
        protocol=data.get("p", ""),
        timestamp=int(data["t"]),
        started=int(data["s"]),
        user_session_started=int(data["us"]),
        notes=notes,
        expires_at_ms=int(deadline),
    )


def _decode_session(reply: Sequence[Any], *, offline: bool, cipher: NoteCipher) -> UserSession:
    session_id, deadline, flat, client_deadlines = reply
    fields = _flat_map(flat)
    cdl = _flat_map(client_deadlines)
    realm = fields["realm"]
    notes = cipher.decrypt_map(
        {k[2:]: v for k, v in fields.items() if k.startswith("n:")}, realm, session_id, "n"
    )
    clients = {
        k[2:]: _decode_client(
            k[2:], v, int(cdl[k[2:]]), session_id, offline=offline, realm=realm, cipher=cipher
        )
        for k, v in fields.items()
        if k.startswith("c:")
    }
    return UserSession(
        id=session_id,
        realm=realm,
        user_id=fields["user"],
        offline=offline,
        login_username=fields.get("login", ""),
        ip_address=fields.get("ip", ""),
        auth_method=fields.get("auth", ""),
        remember_me=fields.get("rm") == "1",
        started=int(fields["st"]),
        last_session_refresh=int(fields["lr"]),
        broker_session_id=fields.get("bs", ""),
        broker_user_id=fields.get("bu", ""),
        state=UserSessionState(int(fields.get("state") or 0)),
        notes=notes,
        client_sessions=clients,
        expires_at_ms=int(deadline),
    )


def _limit_backoff(attempt: int) -> float:
    """Full-jitter exponential back-off for the `attempt`-th stale reply in a row (1-based)."""
    ceiling = min(LIMIT_BACKOFF_CAP_SECONDS, LIMIT_BACKOFF_SECONDS * 2 ** min(attempt, 16))
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security


def _limit_args(limits: SessionLimits | None) -> list[str]:
    """ARGV of the create script's limits: realm limit, client limit, client id, behaviour."""
    if limits is None or not limits.enabled:
        return ["0", "0", "", "0"]
    return [
        str(limits.realm_limit),
        str(limits.client_limit),
        limits.client_id,
        str(int(limits.behavior)),
    ]


def _counted_notes(notes: Mapping[str, str]) -> list[str]:
    args = [str(len(notes))]
    for name, value in notes.items():
        args += [name, value]
    return args


def _note_args(set_notes: Mapping[str, str], remove_notes: Sequence[str]) -> list[str]:
    args = [str(len(set_notes))]
    for name, value in set_notes.items():
        args += [name, value]
    args += list(remove_notes)
    return args


class SessionRepository:
    """User, client and offline sessions on the shards of a router."""

    def __init__(
        self,
        router: Router,
        policies: PolicyStore,
        clock: Clock,
        events: EventSettings | None = None,
        cipher: NoteCipher = NO_ENCRYPTION,
    ) -> None:
        """Use `router` for placement, `policies` for the realm rules, `clock` for now; `events` says
        which optional events the scripts append; `cipher` encrypts note values at rest."""
        self._router = router
        self._policies = policies
        self._clock = clock
        self._events = events or EventSettings()
        self._cipher = cipher

    def _header(self, cached: CachedPolicy) -> list[str]:
        return [self._clock.script_now(), *cached.args]

    async def _call(self, partition: int, script: str, keys_: Sequence[str], args: Sequence[str]) -> Any:
        return await self._router.call(partition, script, keys_, args)

    async def _by_id(
        self,
        script: str,
        realm: str,
        session_id: str,
        *,
        offline: bool,
        extra_keys: Any,
        args: Sequence[str],
    ) -> tuple[int, Any]:
        """Call a by-id script at the id's home partition, following its pointer at most once."""
        cached = await self._policies.get(realm)
        partition = home_partition(session_id)
        for _ in range(2):
            keys_ = [
                keys.session(partition, session_id, offline=offline),
                keys.pointer(partition, session_id),
                *extra_keys(partition),
            ]
            try:
                reply = await self._call(
                    partition, script, keys_, [*self._header(cached), realm, str(partition), *args]
                )
            except RedirectError as redirect:
                partition = redirect.partition
                continue
            return partition, reply
        raise SessionNotFoundError("session not found")

    async def _add_hint(self, key: str, member: str, expires_ms: int) -> tuple[str, str, str]:
        """Add a hint; returns what `_undo_hints` needs to take it back: (key, member, previous score)."""
        partition = keys.partition_of(key)
        score = "+inf" if expires_ms == NO_EXPIRY else str(expires_ms + HINT_SLACK_MS)
        old = await self._call(partition, "add_lookup_hint", [key], [self._clock.script_now(), member, score])
        return key, member, str(old)

    async def _undo_hints(self, added: Sequence[tuple[str, str, str]]) -> None:
        """Take back hints of a create that failed, so a refused create leaves nothing behind.

        Best effort: the create's own error is what the caller must see, and a hint left behind is
        harmless (readers verify hints) and expires with its score.
        """
        for key, member, old in added:
            with contextlib.suppress(SessionStoreError):
                await self._call(
                    keys.partition_of(key), "undo_lookup_hint", [key], [self._clock.script_now(), member, old]
                )

    async def create_user_session(
        self, new: NewUserSession, session_id: str | None = None, limits: SessionLimits | None = None
    ) -> UserSession:
        """Create an online user session, with a minted id or the caller's (route-stripped) id.

        With `limits`, the user-session count limiter (Keycloak §4) is decided in the same script as
        the create: the returned session's `evicted_session_ids` are the sessions it terminated.
        Without limits (or with every limit 0) the create is one script call.

        Raises:
            SessionExistsError: the caller's id is taken.
            PreconditionFailedError: remember-me asked for in a realm that does not allow it.
            SessionLimitExceededError: a limit is reached and the behaviour denies new sessions.
            StoreMemoryLowError: a shard it writes to is short of memory (the memory guard).
            InvalidArgumentError: a client limit without its client id.
            UnavailableError: the shard of the user (or of the id's pointer) is unavailable, or the
                user's sessions kept changing for MAX_LIMIT_ATTEMPTS calls.
        """
        if limits is not None and limits.client_limit > 0 and not limits.client_id:
            raise InvalidArgumentError("limits.client_id is required with a client limit")
        cached = await self._policies.get(new.realm)
        if new.remember_me and not cached.effective.remember_me_allowed:
            raise PreconditionFailedError(f"realm {new.realm!r} does not allow remember-me")
        partition = user_partition(new.realm, new.user_id)
        sid = session_id if session_id is not None else mint_session_id(partition)
        eff = cached.effective
        life = eff.lifespan_remember_me if new.remember_me else eff.lifespan
        max_ms = self._clock.approx_now_ms() + 1000 * life
        home = home_partition(sid)
        claimed = False
        previous_ttl: int | None = None
        # A caller-brought id is claimed even at home: the pointer is what makes an id taken by
        # another user's session elsewhere visible to this create (minted ids cannot collide).
        if home != partition or session_id is not None:
            claim = await self._call(
                home,
                "claim_session_id",
                [keys.pointer(home, sid), keys.session(home, sid, offline=False)],
                [str(partition), str(max_ms - self._clock.approx_now_ms() + HINT_SLACK_MS)],
            )
            claimed = claim == 1
            previous_ttl = None if claimed else int(claim[1])
        added: list[tuple[str, str, str]] = []
        try:
            member = f"{partition}:{sid}"
            if new.broker_session_id:
                bp = lookup_partition(new.realm, "bs", new.broker_session_id)
                added.append(
                    await self._add_hint(
                        keys.broker_session_hints(bp, new.realm, new.broker_session_id), member, max_ms
                    )
                )
            if new.broker_user_id:
                bp = lookup_partition(new.realm, "bu", new.broker_user_id)
                added.append(
                    await self._add_hint(
                        keys.broker_user_hints(bp, new.realm, new.broker_user_id, offline=False),
                        member,
                        max_ms,
                    )
                )
            args = [
                *self._header(cached),
                sid,
                new.realm,
                new.user_id,
                new.login_username,
                new.ip_address,
                new.auth_method,
                "1" if new.remember_me else "0",
                new.broker_session_id,
                new.broker_user_id,
                str(int(new.state)),
                *_limit_args(limits),
                *_counted_notes(self._cipher.encrypt_map(new.notes, new.realm, sid, "n")),
            ]
            base_keys = [
                keys.session(partition, sid, offline=False),
                keys.user_index(partition, new.realm, new.user_id, offline=False),
                keys.realm_index(partition, new.realm, offline=False),
                keys.client_index(partition, new.realm, offline=False),
                *keys.event_keys(partition),
            ]
            if limits is not None and limits.enabled:
                reply = await self._limited(partition, "create_user_session", base_keys, args, [])
            else:
                reply = await self._call(partition, "create_user_session", base_keys, args)
        except SessionExistsError:
            # The id's session is in `partition` already: the pointer is that session's, keep it (with
            # its own expiry). The hints are its too when it is the same login (a concurrent create of
            # the same id that won); a refused create for another user or broker takes them back.
            if not await self._same_login(new, sid):
                await self._undo_hints(added)
            await self._restore_pointer(home, sid, partition, previous_ttl)
            raise
        except SessionStoreError:
            await self._undo_hints(added)
            if claimed:
                await self._release(home, sid, partition)
            await self._restore_pointer(home, sid, partition, previous_ttl)
            raise
        session = _decode_session(reply[1], offline=False, cipher=self._cipher)
        return dataclasses.replace(session, evicted_session_ids=tuple(reply[2]))

    async def _limited(
        self, partition: int, script: str, keys_: Sequence[str], args: Sequence[str], ids: Sequence[str]
    ) -> Any:
        """Call a create or attach script with limits until the user's index stops changing under it.

        The script needs every session of the user in KEYS; it answers {"stale", ids...} without
        writing while the index holds an id that was not passed. Each concurrent login of the user
        changes the index once, so under contention the attempts back off with jitter.

        Raises:
            UnavailableError: the index kept changing for MAX_LIMIT_ATTEMPTS calls.
        """
        ids = list(ids)
        attempt = 0
        try:
            for attempt in range(1, MAX_LIMIT_ATTEMPTS + 1):
                reply = await self._call(
                    partition,
                    script,
                    [*keys_, *(keys.session(partition, i, offline=False) for i in ids)],
                    [*args, *ids],
                )
                if reply[0] != "stale":
                    return reply
                ids = list(reply[1:])
                if attempt > 1:  # the first stale reply only tells a caller the ids it could not know
                    await asyncio.sleep(_limit_backoff(attempt - 1))
        finally:
            # Calls this limited create or attach made, whatever its outcome (tests measure contention).
            log.debug("session_limits_attempts", script=script, attempts=attempt)
        log.warning("session_limits_contended", script=script, attempts=MAX_LIMIT_ATTEMPTS)
        raise UnavailableError("the user's sessions kept changing; retry")

    async def _restore_pointer(self, home: int, sid: str, partition: int, previous_ttl: int | None) -> None:
        """Put back the expiry a failed create's claim extended (None: it did not extend one)."""
        if previous_ttl is None:
            return
        with contextlib.suppress(SessionStoreError):  # best effort: a longer pointer life is harmless
            await self._call(
                home, "restore_pointer_expiry", [keys.pointer(home, sid)], [str(partition), str(previous_ttl)]
            )

    async def _same_login(self, new: NewUserSession, sid: str) -> bool:
        """Whether the live session holding `sid` is this login's (same realm, user and broker ids)."""
        try:
            held = await self.get_user_session(new.realm, sid, offline=False)
        except SessionStoreError:
            return False
        return (held.user_id, held.broker_session_id, held.broker_user_id) == (
            new.user_id,
            new.broker_session_id,
            new.broker_user_id,
        )

    async def _release(self, home: int, sid: str, partition: int) -> None:
        with contextlib.suppress(SessionStoreError):  # else the pointer expires by itself
            await self._call(home, "release_session_id", [keys.pointer(home, sid)], [str(partition)])

    async def get_user_session(self, realm: str, session_id: str, *, offline: bool) -> UserSession:
        """A live session with its live client sessions.

        Raises:
            SessionNotFoundError: missing, expired, or in another realm.
        """
        _, reply = await self._by_id(
            "get_user_session",
            realm,
            session_id,
            offline=offline,
            extra_keys=keys.event_keys,
            args=["1" if offline else "0"],
        )
        return _decode_session(reply, offline=offline, cipher=self._cipher)

    async def touch_user_session(
        self,
        realm: str,
        session_id: str,
        *,
        offline: bool,
        at: int = 0,
        client_ids: Sequence[str] = (),
    ) -> UserSession:
        """Refresh a session (and named client sessions) at `at` epoch s (0 = now); never backwards.

        Raises:
            SessionNotFoundError: missing, expired, or in another realm.
        """
        _, reply = await self._by_id(
            "touch_user_session",
            realm,
            session_id,
            offline=offline,
            extra_keys=lambda p: [
                keys.realm_index(p, realm, offline=offline),
                keys.client_index(p, realm, offline=offline),
                *keys.event_keys(p),
            ],
            args=["1" if offline else "0", str(at), "1" if self._events.refreshed else "0", *client_ids],
        )
        return _decode_session(reply, offline=offline, cipher=self._cipher)

    async def update_user_session(
        self,
        realm: str,
        session_id: str,
        *,
        offline: bool,
        set_notes: Mapping[str, str],
        remove_notes: Sequence[str],
        state: UserSessionState | None,
    ) -> UserSession:
        """Set/remove notes and set the state of a live session.

        Raises:
            SessionNotFoundError: missing, expired, or in another realm.
            LimitExceededError: the session would hold too many notes.
        """
        _, reply = await self._by_id(
            "update_user_session",
            realm,
            session_id,
            offline=offline,
            extra_keys=lambda p: [],
            args=[
                "1" if offline else "0",
                "" if state is None else str(int(state)),
                *_note_args(self._cipher.encrypt_map(set_notes, realm, session_id, "n"), remove_notes),
            ],
        )
        return _decode_session(reply, offline=offline, cipher=self._cipher)

    async def remove_user_session(
        self, realm: str, session_id: str, *, offline: bool, revoked_by_admin: bool = False
    ) -> bool:
        """Remove a session and its client sessions; True when a live one was removed.

        The event is `logged_out`, or `revoked` (reason admin) with `revoked_by_admin`.
        """
        _, reply = await self._by_id(
            "remove_user_session",
            realm,
            session_id,
            offline=offline,
            extra_keys=lambda p: [
                keys.realm_index(p, realm, offline=offline),
                keys.client_index(p, realm, offline=offline),
                *keys.event_keys(p),
            ],
            args=["admin" if revoked_by_admin else "logout"],
        )
        return int(reply[0]) == 1

    async def attach_client_session(
        self,
        realm: str,
        session_id: str,
        new: NewClientSession,
        *,
        offline: bool,
        limits: SessionLimits | None = None,
    ) -> ClientSession:
        """Create or replace the client session of `new.client_id`.

        With `limits` whose client limit is on, and only when the session has no live client session
        for the client yet, the user-session count limiter's client limit (Keycloak §4, a new client
        login into an existing SSO session) is applied to the user's other online sessions in the
        same script: the returned client session's `evicted_session_ids` are the sessions it
        terminated. That path first reads the session to learn its user (its script needs the user's
        index in KEYS), so it costs two or three calls; without limits an attach is one call.

        Raises:
            SessionNotFoundError: the user session is missing or expired.
            LimitExceededError: the session holds the most client sessions allowed.
            SessionLimitExceededError: the client limit is reached and the behaviour denies.
            StoreMemoryLowError: the session's shard is short of memory (the memory guard).
            InvalidArgumentError: limits on an offline session (the limiter counts online sessions).
            UnavailableError: the user's sessions kept changing for MAX_LIMIT_ATTEMPTS calls.
        """
        head = ["1" if offline else "0", new.client_id, new.redirect_uri, new.action, new.protocol]
        notes = _counted_notes(self._cipher.encrypt_map(new.notes, realm, session_id, "c", new.client_id))
        if limits is not None and limits.client_limit > 0:
            if offline:
                raise InvalidArgumentError("session limits apply to online sessions only")
            return await self._attach_limited(realm, session_id, head, notes, limits)
        _, reply = await self._by_id(
            "attach_client_session",
            realm,
            session_id,
            offline=offline,
            extra_keys=lambda p: [keys.client_index(p, realm, offline=offline), *keys.event_keys(p)],
            args=[*head, "", "0", "0", *notes],
        )
        return _decode_client(
            reply[1], reply[2], int(reply[3]), session_id, offline=offline, realm=realm, cipher=self._cipher
        )

    async def _attach_limited(
        self,
        realm: str,
        session_id: str,
        head: Sequence[str],
        notes: Sequence[str],
        limits: SessionLimits,
    ) -> ClientSession:
        """An attach under the client limit: read the session for its user, then attach with limits."""
        cached = await self._policies.get(realm)
        limit_args = [str(limits.client_limit), str(int(limits.behavior))]
        for _ in range(MAX_STALE_RETRIES):
            partition, reply = await self._by_id(
                "get_user_session", realm, session_id, offline=False, extra_keys=keys.event_keys, args=["0"]
            )
            user_id = _decode_session(reply, offline=False, cipher=self._cipher).user_id
            try:
                reply = await self._limited(
                    partition,
                    "attach_client_session",
                    [
                        keys.session(partition, session_id, offline=False),
                        keys.pointer(partition, session_id),
                        keys.client_index(partition, realm, offline=False),
                        *keys.event_keys(partition),
                        keys.user_index(partition, realm, user_id, offline=False),
                        keys.realm_index(partition, realm, offline=False),
                    ],
                    [*self._header(cached), realm, str(partition), *head, user_id, *limit_args, *notes],
                    [session_id],
                )
            except (StaleHintError, RedirectError):
                continue  # the id now names another user's session, or it moved: read it again
            client = _decode_client(
                reply[1], reply[2], int(reply[3]), session_id, offline=False, realm=realm, cipher=self._cipher
            )
            return dataclasses.replace(client, evicted_session_ids=tuple(reply[4]))
        raise UnavailableError("the session kept changing; retry")

    async def use_refresh_token(
        self,
        realm: str,
        session_id: str,
        token: RefreshToken,
        *,
        offline: bool,
        new_issued_at: int = 0,
        introspect: bool = False,
    ) -> RefreshTokenUse:
        """Check, and record, one use of a refresh token on its client session (Keycloak §3).

        One script: the user and client session must be alive, the token must not be issued before
        either started, and with the realm's revoke_refresh_token on, the chain's rotation rules hold
        (a token may be used refresh_token_max_reuse + 1 times; an older token of a chain whose newer
        token was used is stale). A refresh then counts the use and moves the client session's
        timestamp and the session's lastSessionRefresh to `new_issued_at` (0 = now), like a touch.
        Introspection checks without writing anything.

        Raises:
            SessionNotFoundError: the user or client session is missing or dead.
            StaleRefreshTokenError: the token is older than its session, client session or chain's
                newest use. A refresh rejected by rotation detached the client session.
            RefreshTokenReuseError: the token was used too often; a refresh detached the client session.
        """
        cached = await self._policies.get(realm)
        policy = cached.policy
        _, reply = await self._by_id(
            "use_refresh_token",
            realm,
            session_id,
            offline=offline,
            extra_keys=lambda p: [
                keys.realm_index(p, realm, offline=offline),
                keys.client_index(p, realm, offline=offline),
                *keys.event_keys(p),
            ],
            args=[
                "1" if offline else "0",
                token.client_id,
                token.token_id,
                token.reuse_id,
                str(token.issued_at),
                str(new_issued_at),
                "1" if introspect else "0",
                "1" if policy.revoke_refresh_token else "0",
                str(policy.refresh_token_max_reuse),
                str(STARTUP_TIME_S),
                str(MAX_REFRESH_TOKEN_CHAINS),
                "1" if self._events.refreshed else "0",
            ],
        )
        if reply[0] == "rejected":
            if reply[1] == "stale":
                raise StaleRefreshTokenError(
                    "a newer refresh token of this chain was used; the client session was detached"
                )
            raise RefreshTokenReuseError(
                "the refresh token was used more often than allowed; the client session was detached"
            )
        client = _decode_client(
            reply[2], reply[3], int(reply[4]), session_id, offline=offline, realm=realm, cipher=self._cipher
        )
        return RefreshTokenUse(use_count=int(reply[1]), client_session=client)

    async def get_client_session(
        self, realm: str, session_id: str, client_id: str, *, offline: bool
    ) -> ClientSession:
        """A live client session.

        Raises:
            SessionNotFoundError: the user or client session is missing or expired.
        """
        session = await self.get_user_session(realm, session_id, offline=offline)
        client = session.client_sessions.get(client_id)
        if client is None:
            raise SessionNotFoundError("client session not found")
        return client

    async def update_client_session(
        self,
        realm: str,
        session_id: str,
        client_id: str,
        *,
        offline: bool,
        redirect_uri: str | None,
        action: str | None,
        protocol: str | None,
        set_notes: Mapping[str, str],
        remove_notes: Sequence[str],
        timestamp: int,
    ) -> ClientSession:
        """Update fields and notes of a live client session.

        Raises:
            SessionNotFoundError: the user or client session is missing or expired.
            LimitExceededError: the client session would hold too many notes.
        """
        args = ["1" if offline else "0", client_id]
        for value in (redirect_uri, action, protocol):
            args += ["0", ""] if value is None else ["1", value]
        encrypted = self._cipher.encrypt_map(set_notes, realm, session_id, "c", client_id)
        args += [str(timestamp), *_note_args(encrypted, remove_notes)]
        _, reply = await self._by_id(
            "update_client_session",
            realm,
            session_id,
            offline=offline,
            extra_keys=lambda p: [keys.client_index(p, realm, offline=offline)],
            args=args,
        )
        return _decode_client(
            reply[0], reply[1], int(reply[2]), session_id, offline=offline, realm=realm, cipher=self._cipher
        )

    async def detach_client_session(
        self, realm: str, session_id: str, client_id: str, *, offline: bool
    ) -> bool:
        """Remove a client session; True when a live one was removed."""
        _, reply = await self._by_id(
            "detach_client_session",
            realm,
            session_id,
            offline=offline,
            extra_keys=lambda p: [keys.client_index(p, realm, offline=offline), *keys.event_keys(p)],
            args=["1" if offline else "0", client_id],
        )
        return int(reply) == 1

    async def _per_user(
        self, script: str, realm: str, user_id: str, *, offline: bool, index_keys: Sequence[str]
    ) -> list[Any]:
        """Run a script over every session of a user, retrying while the user's index changes."""
        cached = await self._policies.get(realm)
        partition = user_partition(realm, user_id)
        ids: list[str] = []
        for _ in range(MAX_STALE_RETRIES):
            reply = await self._call(
                partition,
                script,
                [*index_keys, *(keys.session(partition, i, offline=offline) for i in ids)],
                [*self._header(cached), realm, user_id, "1" if offline else "0", *ids],
            )
            if reply[0] == "stale":
                ids = list(reply[1:])
                continue
            return list(reply[1:])
        raise UnavailableError("the user's sessions kept changing; retry")

    async def list_user_sessions(self, realm: str, user_id: str, *, offline: bool) -> list[UserSession]:
        """Every live session (online or offline) of a user, in one atomic read."""
        partition = user_partition(realm, user_id)
        replies = await self._per_user(
            "list_user_sessions",
            realm,
            user_id,
            offline=offline,
            index_keys=[keys.user_index(partition, realm, user_id, offline=offline)],
        )
        return [_decode_session(r, offline=offline, cipher=self._cipher) for r in replies]

    async def remove_user_sessions(self, realm: str, user_id: str, *, offline: bool) -> int:
        """Remove every session (online or offline) of a user atomically; returns how many lived."""
        partition = user_partition(realm, user_id)
        reply = await self._per_user(
            "remove_user_sessions",
            realm,
            user_id,
            offline=offline,
            index_keys=[
                keys.user_index(partition, realm, user_id, offline=offline),
                keys.realm_index(partition, realm, offline=offline),
                keys.client_index(partition, realm, offline=offline),
                *keys.event_keys(partition),
            ],
        )
        return int(reply[0])

    async def create_offline_session(
        self, realm: str, session_id: str, client_ids: Sequence[str]
    ) -> UserSession:
        """Copy a live online session (and named client sessions) into an offline session.

        Raises:
            SessionNotFoundError: no live online session with this id.
            LimitExceededError: too many client sessions.
            StoreMemoryLowError: a shard it writes to is short of memory (the memory guard).
        """
        online = await self.get_user_session(realm, session_id, offline=False)
        cached = await self._policies.get(realm)
        partition = user_partition(realm, online.user_id)
        eff = cached.effective
        max_ms = (
            NO_EXPIRY
            if eff.offline_lifespan == NO_EXPIRY
            else self._clock.approx_now_ms() + 1000 * eff.offline_lifespan
        )
        home = home_partition(session_id)
        if home != partition:
            ttl = 0 if max_ms == NO_EXPIRY else max_ms - self._clock.approx_now_ms() + HINT_SLACK_MS
            await self._call(
                home,
                "claim_session_id",
                [keys.pointer(home, session_id), keys.session(home, session_id, offline=False)],
                [str(partition), str(ttl)],
            )
        added: list[tuple[str, str, str]] = []
        if online.broker_user_id:
            bp = lookup_partition(realm, "bu", online.broker_user_id)
            added.append(
                await self._add_hint(
                    keys.broker_user_hints(bp, realm, online.broker_user_id, offline=True),
                    f"{partition}:{session_id}",
                    max_ms,
                )
            )
        try:
            reply = await self._call(
                partition,
                "create_offline_session",
                [
                    keys.session(partition, session_id, offline=False),
                    keys.pointer(partition, session_id),
                    keys.session(partition, session_id, offline=True),
                    keys.user_index(partition, realm, online.user_id, offline=True),
                    keys.realm_index(partition, realm, offline=True),
                    keys.client_index(partition, realm, offline=True),
                    *keys.event_keys(partition),
                ],
                [*self._header(cached), realm, str(partition), online.user_id, *client_ids],
            )
        except (StaleHintError, RedirectError) as exc:
            await self._undo_hints(added)
            raise SessionNotFoundError("session not found") from exc
        except SessionStoreError:
            await self._undo_hints(added)
            raise
        return _decode_session(reply, offline=True, cipher=self._cipher)

    async def _shard_now(self, shard_name: str) -> int:
        now = self._clock.script_now()
        if now:
            return int(now)
        seconds, micros = await self._router.shards[shard_name].command("TIME")
        return int(seconds) * 1000 + int(micros) // 1000

    async def count_sessions(self, realm: str, client_id: str = "", *, offline: bool) -> int:
        """Live sessions of a realm, or of a realm's client, summed over every partition.

        Raises:
            UnavailableError: a shard is unavailable (a partial count would be wrong).
        """
        if not client_id:
            counts = await self._scan_partitions(
                lambda p, now: (
                    "ZCOUNT",
                    keys.realm_index(p, realm, offline=offline),
                    f"({now}",
                    "+inf",
                )
            )
            return sum(int(c) for c in counts)
        stats = await self.client_session_stats(realm, offline=offline)
        return stats.get(client_id, 0)

    async def client_session_stats(self, realm: str, *, offline: bool) -> dict[str, int]:
        """Live client sessions per client of a realm (Keycloak's getActiveClientSessionStats).

        Raises:
            UnavailableError: a shard is unavailable.
        """
        replies = await self._scan_partitions(
            lambda p, now: (
                "ZRANGE",
                keys.client_index(p, realm, offline=offline),
                f"({now}",
                "+inf",
                "BYSCORE",
            )
        )
        counts: dict[str, int] = {}
        for members in replies:
            for member in members:
                client = member.split(" ", 1)[0]
                counts[client] = counts.get(client, 0) + 1
        return counts

    async def _scan_partitions(self, command: Any) -> list[Any]:
        # One "now" for the whole read (the test clock's, or the first shard's TIME): a count is a
        # snapshot, and shards' clocks differ by far less than any deadline's granularity matters here.
        now = await self._shard_now(next(iter(self._router.shards)))
        replies: list[Any] = await self._router.read_all(lambda p: command(p, now))
        return replies

    async def _sessions_from_hints(self, key: str, realm: str, *, offline: bool) -> list[UserSession]:
        members = await self._router.read(keys.partition_of(key), "ZRANGE", key, 0, -1)
        found: list[UserSession] = []
        cached = await self._policies.get(realm)
        for member in members:
            partition_text, _, sid = member.partition(":")
            partition = int(partition_text)
            try:
                reply = await self._call(
                    partition,
                    "get_user_session",
                    [
                        keys.session(partition, sid, offline=offline),
                        keys.pointer(partition, sid),
                        *keys.event_keys(partition),
                    ],
                    [*self._header(cached), realm, str(partition), "1" if offline else "0"],
                )
            except (SessionNotFoundError, RedirectError):
                continue
            found.append(_decode_session(reply, offline=offline, cipher=self._cipher))
        return found

    async def find_by_broker_session_id(self, realm: str, broker_session_id: str) -> UserSession:
        """The first live online session with this broker session id.

        Raises:
            SessionNotFoundError: none.
        """
        bp = lookup_partition(realm, "bs", broker_session_id)
        sessions = await self._sessions_from_hints(
            keys.broker_session_hints(bp, realm, broker_session_id), realm, offline=False
        )
        for session in sessions:
            if session.broker_session_id == broker_session_id:
                return session
        raise SessionNotFoundError("no session with this broker session id")

    async def find_by_broker_user_id(
        self, realm: str, broker_user_id: str, *, offline: bool
    ) -> list[UserSession]:
        """Every live session (online or offline) with this broker user id."""
        bp = lookup_partition(realm, "bu", broker_user_id)
        sessions = await self._sessions_from_hints(
            keys.broker_user_hints(bp, realm, broker_user_id, offline=offline),
            realm,
            offline=offline,
        )
        return [s for s in sessions if s.broker_user_id == broker_user_id]
