"""Simulated identity nodes: asyncio workers that use the store as Keycloak nodes behind a load balancer do.

Each `IdentityNode` talks to one service node through its own client and runs a few workers. Users
hop between identity nodes: the sessions a login creates go into one `SessionPool` shared by every
worker, so the next page load, refresh or logout of a session usually lands on another node. Actions,
weighted by `WorkloadConfig.mix`:

- ``login``: root authentication session → tab → authenticated user → user session (with the root's
  id, as Keycloak does) → client session → the root removed. Users of `WorkloadConfig.limits` log in
  with the session limiter (deny, or terminate the oldest).
- ``touch`` (a page load with a refresh of the client session), ``get`` (a token check), ``list`` (an
  account console; mostly of limited users, to observe their limit), ``count``.
- ``refresh``: refresh-token rotation. Each session carries a chain: generation n has iat
  ``client session start + n`` and a fresh token id, and a refresh presents generation n and asks for
  n + 1. Sometimes several requests present the same token at once (``burst``: parallel tabs) or an
  old one comes back (``replay``: a leaked token); both hit the rotation rules.
- ``logout`` (sometimes an administrator's revoke) and ``revoke_all`` (every session of a user).

Every call goes through `Recorder`, which writes one history record per call with the number of
attempts the client made (its retries on UNAVAILABLE are counted by wrapping its stubs).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from cluster_tests.history import OK, UNKNOWN, Event, HistoryWriter, Op, classify
from session_store import AsyncSessionStoreClient
from session_store.errors import SessionStoreError
from session_store.events.stream import SessionEvent
from session_store.model.session import (
    ClientSession,
    LimitBehavior,
    RefreshTokenUse,
    SessionLimits,
    UserSession,
)

T = TypeVar("T")

OP_HARD_TIMEOUT_SECONDS = 30.0
"""A call that takes longer is abandoned and recorded as unknown (the client's own deadline is 5 s)."""
ERROR_PAUSE_SECONDS = 0.2
"""A worker whose call ended unknown (a node or shard down) pauses this long: no error storm."""
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    # Reconnect quickly to a restarted node (gRPC's default back-off grows to minutes).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
ROUND_ROBIN = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
)

_ATTEMPTS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("attempts", default=None)


class _CountingStub:
    """A gRPC stub whose every call adds one to the running operation's attempt counter."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            box = _ATTEMPTS.get()
            if box is not None:
                box[0] += 1
            return method(*args, **kwargs)

        return call


class CountingClient(AsyncSessionStoreClient):
    """The real async client, its retry policy untouched, with every attempt counted.

    The client keeps one stub per service in `_stubs` and calls ``getattr(stub, method)`` per
    attempt; wrapping those stubs is the only way to see retries without copying its retry loop.
    """

    def __init__(self, target: str, **kwargs: Any) -> None:
        """As `AsyncSessionStoreClient`."""
        super().__init__(target, **kwargs)
        self._stubs = {name: _CountingStub(stub) for name, stub in self._stubs.items()}


def new_id() -> str:
    """A 24-character id, like the ones the store mints."""
    return secrets.token_urlsafe(18)


@dataclass(frozen=True)
class Called(Generic[T]):
    """A recorded call: its value (None unless it succeeded) and its history record."""

    value: T | None
    op: Op

    @property
    def known(self) -> bool:
        """The outcome is known (ok or a definite failure): the worker need not back off."""
        return self.op.outcome != UNKNOWN


class Recorder:
    """Runs one call, times it, counts its attempts and writes its history record."""

    def __init__(self, writer: HistoryWriter, origin: float) -> None:
        """Times are `time.monotonic() - origin`."""
        self.writer = writer
        self.origin = origin
        self.ops: list[Op] = []

    def now(self) -> float:
        """Seconds since the run began."""
        return time.monotonic() - self.origin

    async def call(
        self,
        worker: str,
        node: int,
        op: str,
        *,
        args: Mapping[str, Any],
        call: Awaitable[T],
        summary: Callable[[T], Mapping[str, Any]] = lambda _: {},
    ) -> Called[T]:
        """Await `call`; returns its value (None when it failed) and the record written."""
        box = [0]
        token = _ATTEMPTS.set(box)
        t0 = self.now()
        value: T | None = None
        result: Mapping[str, Any] | None = None
        error = detail = ""
        try:
            value = await asyncio.wait_for(call, OP_HARD_TIMEOUT_SECONDS)
            outcome = OK
            result = summary(value)
        except SessionStoreError as exc:
            outcome, error, detail = classify(exc), type(exc).__name__, exc.message[:200]
        except TimeoutError:
            outcome, error = UNKNOWN, "HarnessTimeout"
        finally:
            _ATTEMPTS.reset(token)
        record = Op(
            seq=self.writer.next_seq(),
            worker=worker,
            node=node,
            op=op,
            args=dict(args),
            t0=t0,
            t1=self.now(),
            outcome=outcome,
            result=result,
            error=error,
            detail=detail,
            attempts=max(box[0], 1),
        )
        self.writer.op(record)
        self.ops.append(record)
        return Called(value, record)


class Pacer:
    """Spaces actions of every worker to a global rate (None: as fast as they go)."""

    def __init__(self, rate: float | None) -> None:
        """`rate` actions per second over all workers."""
        self.interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()

    async def wait(self) -> None:
        """Wait for this worker's next slot."""
        if not self.interval:
            await asyncio.sleep(0)
            return
        now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + self.interval
        await asyncio.sleep(slot - now)


@dataclass
class Token:
    """A refresh token as a Keycloak node would hold it (only what rotation reads)."""

    jti: str
    reuse_id: str
    iat: int


@dataclass
class LiveSession:
    """A session a login created, as the identity nodes know it."""

    sid: str
    user: str
    client: str
    token: Token | None
    previous: Token | None = None


class SessionPool:
    """The sessions the identity nodes believe live, shared by every worker (users hop nodes)."""

    def __init__(self, rng: random.Random) -> None:
        """Empty; `rng` picks sessions."""
        self._rng = rng
        self._items: list[LiveSession] = []
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        """Sessions in the pool."""
        return len(self._items)

    def add(self, s: LiveSession) -> None:
        """Remember a new session."""
        if s.sid not in self._index:
            self._index[s.sid] = len(self._items)
            self._items.append(s)

    def drop(self, sid: str) -> None:
        """Forget a session (logged out, evicted, found dead)."""
        i = self._index.pop(sid, None)
        if i is None:
            return
        last = self._items.pop()
        if i < len(self._items):
            self._items[i] = last
            self._index[last.sid] = i

    def drop_user(self, user: str) -> None:
        """Forget every session of a user (revoke-all)."""
        for s in [s for s in self._items if s.user == user]:
            self.drop(s.sid)

    def pick(self, *, with_token: bool = False) -> LiveSession | None:
        """A random session (with a usable refresh token when asked), or None."""
        for _ in range(8):
            if not self._items:
                return None
            s = self._rng.choice(self._items)
            if not with_token or s.token is not None:
                return s
        return None


DEFAULT_MIX: Mapping[str, int] = {
    "login": 18,
    "touch": 30,
    "get": 10,
    "refresh": 22,
    "list": 6,
    "logout": 8,
    "revoke_all": 3,
    "count": 1,
}


@dataclass(frozen=True, kw_only=True)
class WorkloadConfig:
    """What the identity nodes do, and how much of it."""

    realm: str
    clients: Sequence[str]
    users: Sequence[str]
    limits: Mapping[str, tuple[int, str]]
    mix: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MIX))
    rate: float | None = 100.0
    """Actions per second over all workers (a login is six calls); None: unpaced."""
    workers_per_node: int = 4
    limited_login_share: float = 0.15
    """Share of logins that are of limited users."""
    burst_share: float = 0.06
    burst_size: int = 3
    """Most parallel uses of one token in a burst (at least 2)."""
    replay_share: float = 0.03
    admin_revoke_share: float = 0.2
    max_actions: int = 1_000_000
    seed: int = 0


def session_summary(s: UserSession) -> dict[str, Any]:
    """What the history keeps of a returned user session."""
    return {"expires_at_ms": s.expires_at_ms, "lr": s.last_session_refresh}


def list_summary(sessions: list[UserSession]) -> dict[str, Any]:
    """What the history keeps of a ListUserSessions reply: id -> [deadline ms, client ids]."""
    return {"sessions": {s.id: [s.expires_at_ms, sorted(s.client_sessions)] for s in sessions}}


def created_summary(s: UserSession) -> dict[str, Any]:
    """What the history keeps of a created user session."""
    return {**session_summary(s), "started": s.started, "evicted": list(s.evicted_session_ids)}


def attached_summary(c: ClientSession) -> dict[str, Any]:
    """What the history keeps of an attached client session."""
    return {"started": c.started, "expires_at_ms": c.expires_at_ms}


def refreshed_summary(u: RefreshTokenUse) -> dict[str, Any]:
    """What the history keeps of an accepted refresh token."""
    return {"use_count": u.use_count, "expires_at_ms": u.client_session.expires_at_ms}


def removed_summary(removed: bool | int) -> dict[str, Any]:
    """What the history keeps of a logout (removed: bool) or revoke-all (removed: count)."""
    return {"removed": removed}


def count_summary(n: int) -> dict[str, Any]:
    """What the history keeps of CountSessions."""
    return {"count": n}


class IdentityNode:
    """One simulated identity-server node: `workers_per_node` workers sharing one client to one node."""

    def __init__(
        self,
        index: int,
        target: str,
        *,
        config: WorkloadConfig,
        pool: SessionPool,
        recorder: Recorder,
        pacer: Pacer,
    ) -> None:
        """Nothing runs until `run`."""
        self.index = index
        self.config = config
        self.pool = pool
        self.rec = recorder
        self.pacer = pacer
        self.client = CountingClient(target, channel_options=CHANNEL_OPTIONS)
        self.actions = 0
        self._kinds = list(config.mix)
        self._weights = [config.mix[k] for k in self._kinds]
        self._unlimited = [u for u in config.users if u not in config.limits]
        self._limited = list(config.limits)

    async def run(self, stop: asyncio.Event, deadline: float) -> None:
        """Run the workers until `stop` is set or `deadline` (monotonic) passes; then close the client."""
        try:
            await asyncio.gather(
                *(self._worker(w, stop, deadline) for w in range(self.config.workers_per_node))
            )
        finally:
            await self.client.close()

    async def _worker(self, w: int, stop: asyncio.Event, deadline: float) -> None:
        name = f"n{self.index}.w{w}"
        rng = random.Random(f"{self.config.seed}/{name}")  # noqa: S311 - workload choices, not secrets
        actions = {
            "login": self.login,
            "touch": self.touch,
            "get": self.get,
            "refresh": self.refresh,
            "list": self.list_sessions,
            "logout": self.logout,
            "revoke_all": self.revoke_all,
            "count": self.count,
        }
        while not stop.is_set() and time.monotonic() < deadline and self.actions < self.config.max_actions:
            await self.pacer.wait()
            if stop.is_set():
                break
            self.actions += 1
            kind = rng.choices(self._kinds, self._weights)[0]
            if kind != "login" and not len(self.pool):
                kind = "login"
            if not await actions[kind](name, rng):
                await asyncio.sleep(ERROR_PAUSE_SECONDS)

    # Each action returns False when a call ended unknown (the worker then pauses).

    async def _call(
        self,
        worker: str,
        op: str,
        args: Mapping[str, Any],
        call: Awaitable[T],
        summary: Callable[[T], Mapping[str, Any]] = lambda _: {},
    ) -> Called[T]:
        return await self.rec.call(
            worker, self.index, op, args={"realm": self.config.realm, **args}, call=call, summary=summary
        )

    async def login(self, w: str, rng: random.Random) -> bool:
        """A browser login, from authentication session to client session."""
        realm, store = self.config.realm, self.client
        limited = bool(self._limited) and rng.random() < self.config.limited_login_share
        user = rng.choice(self._limited if limited else self._unlimited)
        client = rng.choice(list(self.config.clients))
        root = new_id()
        called_root = await self._call(
            w, "auth_root", {"root": root}, store.get_or_create_root_authentication_session(realm, root)
        )
        if called_root.value is None:
            return called_root.known
        called_tab = await self._call(
            w,
            "auth_tab",
            {"root": root, "client": client},
            store.create_authentication_session(realm, root, client),
        )
        tab = called_tab.value
        if tab is None:
            return called_tab.known
        called_update = await self._call(
            w,
            "auth_update",
            {"root": root, "tab": tab.tab_id},
            store.update_authentication_session(realm, root, tab.tab_id, client, authenticated_user_id=user),
        )
        if called_update.value is None:
            return called_update.known
        limit, behavior = self.config.limits.get(user, (0, ""))
        limits = None
        if limit:
            kind = (
                LimitBehavior.TERMINATE_OLDEST_SESSION
                if behavior == "terminate"
                else LimitBehavior.DENY_NEW_SESSION
            )
            limits = SessionLimits(realm_limit=limit, client_id=client, behavior=kind)
        called_create = await self._call(
            w,
            "create",
            {"user": user, "session": root, "limit": limit, "behavior": behavior},
            store.create_user_session(
                realm,
                user,
                session_id=root,
                login_username=user,
                ip_address=f"10.0.{self.index}.{rng.randrange(1, 255)}",
                auth_method="openid-connect",
                limits=limits,
            ),
            created_summary,
        )
        session = called_create.value
        if session is None:
            return called_create.known
        for gone in session.evicted_session_ids:
            self.pool.drop(gone)
        called_attach = await self._call(
            w,
            "attach",
            {"session": root, "client": client},
            store.attach_client_session(
                realm, root, client, redirect_uri=f"https://{client}/cb", protocol="openid-connect"
            ),
            attached_summary,
        )
        await self._call(
            w, "auth_remove", {"root": root}, store.remove_root_authentication_session(realm, root)
        )
        attached = called_attach.value
        if attached is None:
            return called_attach.known
        self.pool.add(LiveSession(root, user, client, Token(new_id(), new_id(), attached.started)))
        return True

    async def touch(self, w: str, rng: random.Random) -> bool:
        """A page load: the session and its client session refreshed."""
        s = self.pool.pick()
        if s is None:
            return True
        called = await self._call(
            w,
            "touch",
            {"session": s.sid, "client": s.client},
            self.client.touch_user_session(self.config.realm, s.sid, client_ids=[s.client]),
            session_summary,
        )
        if called.op.error == "SessionNotFoundError":
            self.pool.drop(s.sid)
        return called.known

    async def get(self, w: str, rng: random.Random) -> bool:
        """A token check: is the session live?"""
        s = self.pool.pick()
        if s is None:
            return True
        called = await self._call(
            w,
            "get",
            {"session": s.sid},
            self.client.get_user_session(self.config.realm, s.sid),
            session_summary,
        )
        if called.op.error == "SessionNotFoundError":
            self.pool.drop(s.sid)
        return called.known

    async def _use(self, w: str, s: LiveSession, token: Token) -> tuple[Token | None, Op]:
        new = Token(new_id(), token.reuse_id, token.iat + 1)
        called = await self._call(
            w,
            "refresh",
            {
                "session": s.sid,
                "client": s.client,
                "token": token.jti,
                "reuse_id": token.reuse_id,
                "iat": token.iat,
                "new_token": new.jti,
                "new_iat": new.iat,
            },
            self.client.use_refresh_token(
                self.config.realm,
                s.sid,
                s.client,
                token.jti,
                issued_at=token.iat,
                reuse_id=token.reuse_id,
                new_issued_at=new.iat,
            ),
            refreshed_summary,
        )
        return (new if called.value is not None else None), called.op

    async def refresh(self, w: str, rng: random.Random) -> bool:
        """A refresh-token grant; sometimes parallel (burst) or with an old token (replay)."""
        s = self.pool.pick(with_token=True)
        if s is None or s.token is None:
            return True
        token = s.token
        draw = rng.random()
        if draw < self.config.replay_share and s.previous is not None:
            token = s.previous
            results = [await self._use(w, s, token)]
        elif draw < self.config.replay_share + self.config.burst_share:
            size = rng.randint(2, self.config.burst_size)
            results = list(await asyncio.gather(*(self._use(w, s, token) for _ in range(size))))
        else:
            results = [await self._use(w, s, token)]
        issued = [new for new, _ in results if new is not None]
        errors = {op.error for _, op in results}
        if errors & {"StaleRefreshTokenError", "RefreshTokenReuseError", "SessionNotFoundError"}:
            s.token = None  # the client session is gone (detached by rotation, or the session ended)
        elif issued and s.token is token:
            s.previous, s.token = token, issued[0]
        return all(op.outcome != UNKNOWN for _, op in results)

    async def list_sessions(self, w: str, rng: random.Random) -> bool:
        """The account console: a user's sessions (mostly of limited users)."""
        pool = self._limited if self._limited and rng.random() < 0.7 else self._unlimited
        user = rng.choice(pool)
        called = await self._call(
            w, "list", {"user": user}, self.client.list_user_sessions(self.config.realm, user), list_summary
        )
        return called.known

    async def logout(self, w: str, rng: random.Random) -> bool:
        """A logout (or an administrator's revoke) of one session."""
        s = self.pool.pick()
        if s is None:
            return True
        self.pool.drop(s.sid)
        admin = rng.random() < self.config.admin_revoke_share
        called = await self._call(
            w,
            "logout",
            {"session": s.sid, "admin": admin},
            self.client.remove_user_session(self.config.realm, s.sid, revoked_by_admin=admin),
            removed_summary,
        )
        return called.known

    async def revoke_all(self, w: str, rng: random.Random) -> bool:
        """Every session of one user removed (password change, admin action)."""
        s = self.pool.pick()
        user = s.user if s is not None else rng.choice(list(self.config.users))
        self.pool.drop_user(user)
        called = await self._call(
            w,
            "revoke_all",
            {"user": user},
            self.client.remove_user_sessions(self.config.realm, user),
            removed_summary,
        )
        return called.known

    async def count(self, w: str, rng: random.Random) -> bool:
        """An admin console's session count (racy during the storm: recorded, checked only at the end)."""
        called = await self._call(
            w, "count", {"client": ""}, self.client.count_sessions(self.config.realm), count_summary
        )
        return called.known


class Watcher:
    """Follows the event stream of the storm's realms through every node and records each event."""

    def __init__(
        self, targets: Sequence[str], realms: Sequence[str], writer: HistoryWriter, origin: float
    ) -> None:
        """Nothing runs until `run`."""
        self.client = AsyncSessionStoreClient(
            "ipv4:" + ",".join(targets),
            channel_options=[*CHANNEL_OPTIONS, ("grpc.service_config", ROUND_ROBIN)],
        )
        self.realms = list(realms)
        self.writer = writer
        self.origin = origin
        self.events = 0
        self.created: set[str] = set()
        self.error = ""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start following (from the oldest retained event: nothing of the run is missed)."""
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async with self.client.watch(realms=self.realms, from_oldest=True, max_attempts=30) as events:
                async for ev in events:
                    self._record(ev)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any end of the watch is reported (a violation of kind "watch")
            self.error = f"{type(exc).__name__}: {exc}"

    def _record(self, ev: SessionEvent) -> None:
        self.events += 1
        if ev.type.stream_name == "created":
            self.created.add(ev.session_id)
        self.writer.event(
            Event(
                t=time.monotonic() - self.origin,
                id=ev.id,
                kind=ev.type.stream_name,
                realm=ev.realm,
                user=ev.user_id,
                session=ev.session_id,
                clients=tuple(ev.client_ids),
                reason=ev.reason,
                at_ms=ev.at_ms,
                deadline_ms=ev.deadline_ms,
            )
        )

    async def wait_created(self, session_ids: Sequence[str], seconds: float) -> bool:
        """Wait (bounded) until the `created` event of every one of `session_ids` arrived."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if all(s in self.created for s in session_ids):
                return True
            if self._task is not None and self._task.done():
                return False
            await asyncio.sleep(0.1)
        return False

    async def stop(self) -> None:
        """End the watch and close the client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.close()
