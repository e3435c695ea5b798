"""Fuzzed API: hostile but valid protobuf requests to every RPC of every served service.

Every service of the generated code (bar the test clock) is found from its descriptors, and every
request is built from its message descriptor (tests/proto_fuzz.py): huge strings, unicode, control
characters, NUL, `.route` suffixes, negative and extreme times, unknown enum values, long maps and
lists, mixed with realistic values (the realms below, ids that exist) so that calls reach the
scripts. Each RPC gets a deterministic sweep (a realistic request with one field, at any depth, set
to each kind of bad value) and then random requests: calm, calm with one poisoned field, or wild.
Requests go through a raw channel, so no client-side validation filters them. Every call must:

- never answer INTERNAL or UNKNOWN, never hang, and always carry a google.rpc.ErrorInfo on errors;
- never show a stack trace or a source path in its status message, nor log an error;
- never write partly: after any error the shards hold exactly what they held before (bar the
  documented refresh-token rejection, which detaches the client session);
- never read across realms: a call that does not name REALM_A never returns the marker that only
  REALM_A's data holds, nor anything whose realm is REALM_A;
- never write across realms: a call that does not name REALM_A leaves REALM_A's keys as they were.

The service runs on a background loop (tests.harness), with token validation configured for both
realms. Its state is seeded once; a call that changed it is undone by restoring a DUMP image.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import structlog
from google.protobuf import descriptor_pool
from google.protobuf.message import Message
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from structlog.testing import capture_logs

from session_store import (
    AsyncSessionStoreClient,
    BruteForcePolicy,
    ClientPolicy,
    RealmPolicy,
)
from session_store.config import Settings, ShardSettings, TokenSettings
from session_store.model.clock import TestClock
from session_store.model.limits import MAX_REQUEST_BYTES
from session_store.server import SessionStoreServer
from session_store.v1 import events_pb2, session_store_pb2
from tests.harness import BackgroundService, background_service
from tests.proto_fuzz import (
    EXCLUDED_SERVICES,
    Fuzzed,
    Outcome,
    RequestStrategies,
    Rpc,
    Vocabulary,
    all_fields,
    covered_fields,
    discover_rpcs,
    field_paths,
    invoke,
    short_repr,
    strings_of,
    sweep,
)
from tests.token_helpers import SigningKey, ec_key, hand_made, sign, token_claims, write_jwks

MARKER = "Mk7qZx"
"""Held only by REALM_A's data (ids, notes, names): it must never come back to another realm."""
REALM_A = "réalm-a"
"""The victim realm; non-ASCII, so that normalisation and case look-alikes are distinct realms."""
REALM_B = "realm-b"
"""Another realm with the same shape of data, without the marker."""
REALM_LOOK_ALIKES = (
    "Réalm-a",
    "RÉALM-A",
    "re\u0301alm-a",
    "\uff52\u00e9\uff41\uff4c\uff4d-\uff41",
    "réalm-a\u200b",
    "\ufeffréalm-a",
    "réalm\u2010a",
    "réalm-\u0430",
    "réalm-a ",
    "réalm-a\x00",
    "réalm-a.route",
    "o:réalm-a",
    "réalm-a:",
    "réalm-*",
    "réalm-?",
    "*",
    "réalm",
    "réalm-ab",
    "REALM-B",
)
"""Realms that differ from REALM_A (or REALM_B) only by case, normalisation, an invisible character,
a glob or a key-layout character: each is another realm, or invalid."""
ISSUER = "https://idp.test/realms/"
AUDIENCE = "orders-api"
CLIENTS = ("app", "admin", "other")
NOTE_NAMES = ("k1", "cn", "an", "n", "AUTH_TIME")
CALL_TIMEOUT_SECONDS = 15.0
ENDLESS_STREAMS = frozenset({"SessionEvents.Watch"})
"""Server streams that only end when cancelled: read WATCH_MESSAGES at most, then cancel."""
WATCH_MESSAGES = 3
WATCH_IDLE_SECONDS = 0.1
MAX_FUZZ_REQUEST_BYTES = MAX_REQUEST_BYTES * 3 // 4
"""Requests are kept under the server's limit, so that the service (not gRPC) judges them."""
EXAMPLES = 30
EXAMPLES_PER_FIELD = 4
"""Calls per place a poisoned request can put its hostile value, for RPCs with large requests."""
EXAMPLES_BY_RPC = {
    "SessionStore.RemoveSessions": 15,
    "SessionEvents.Watch": 20,
    "SessionStore.CountSessions": 20,
    "SessionStore.GetClientSessionStats": 20,
}
"""Calls of the RPCs that scan every partition or wait on a stream: fewer."""
WRITES_ON_ERROR = frozenset(
    {
        ("SessionStore.UseRefreshToken", "STALE_REFRESH_TOKEN"),
        ("SessionStore.UseRefreshToken", "REFRESH_TOKEN_REUSE_EXCEEDED"),
    }
)
"""(RPC, ErrorInfo reason) pairs documented to change state: a rejected refresh token detaches the
client session, as Keycloak does (session_store.proto, UseRefreshToken)."""
VOLATILE_KEYS = frozenset({b"ss:due"})
"""Keys the sweepers rewrite on their own (leases): left out of every comparison."""
REALM_KEY = re.compile(rb"^ss:(?:\{[0-9a-f]{3}\}:(?!(?:s|o|p):)[a-z]+|policy|markers):([^ ]*)")
"""A key whose name holds a realm (storage/keys.py): the realm is everything up to the first space."""
SHARED_KEYS = re.compile(rb"^ss:(?:events|due|counts|shard|\{[0-9a-f]{3}\}:xm?)$")
"""Keys every realm writes (a shard's stream, counters, leases; a partition's expiry index)."""
TRACE_PATTERNS = (
    re.compile(r"Traceback"),
    re.compile(r'File "[^"]*", line \d+'),
    re.compile(r"[\w./\\-]*\.py\b"),
    re.compile(r"/(?:work|usr|home|tmp)/[^\s'\"]+"),
)
"""What a stack trace or a source location in a status message looks like."""
RPCS = discover_rpcs()

Snapshot = dict[tuple[int, bytes], tuple[str, Any, int]]
"""(shard index, key) -> (type, logical value, absolute expiry ms or -1)."""
Image = list[dict[bytes, tuple[bytes, int]]]
"""Per shard: key -> (DUMP payload, absolute expiry ms or -1)."""


@dataclass
class Known:
    """The seeded state's ids and tokens, by kind: the realistic values the strategies draw."""

    values: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, *values: str) -> None:
        """Remember values of a kind."""
        self.values.setdefault(kind, []).extend(v for v in values if v not in self.values.get(kind, []))

    def everything(self) -> list[str]:
        """Every known value, once."""
        return sorted({v for values in self.values.values() for v in values})


_FIELD_KINDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^realms?$"), "realm"),
    (re.compile(r"^broker_session_id$"), "broker_session"),
    (re.compile(r"^broker_user_id$"), "broker_user"),
    (re.compile(r"(^|_)session_ids?$|^evicted_session_ids$"), "session"),
    (re.compile(r"^(authenticated_)?user_id$|^subject$"), "user"),
    (re.compile(r"^client_ids?$|^clients\.key$"), "client"),
    (re.compile(r"^root_id$"), "root"),
    (re.compile(r"^tab_id$"), "tab"),
    (re.compile(r"^key$"), "single_use_key"),
    (re.compile(r"^token$"), "token"),
    (re.compile(r"^audience$"), "audience"),
    (re.compile(r"^after_cursor$"), "cursor"),
    (re.compile(r"^token_id$"), "token_id"),
    (re.compile(r"^reuse_id$"), "reuse_id"),
    (re.compile(r"notes(\.key)?$"), "note"),
    (re.compile(r"execution_status(\.key)?$"), "authenticator"),
    (re.compile(r"required_actions$"), "required_action"),
    (re.compile(r"^client_scopes$"), "scope"),
    (re.compile(r"^redirect_uri$"), "redirect_uri"),
    (re.compile(r"^url$"), "shard_url"),
)
"""Field name (map keys as "<field>.key") -> the kind of known value it takes."""


_NUMBER_KINDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"issued_at|last_session_refresh|^timestamp$"), "now"),
    (re.compile(r"timeout|lifespan"), "duration"),
    (re.compile(r"limit$"), "limit"),
    (re.compile(r"^batch_size$"), "batch"),
)
"""Integer field name -> the kind of value a calm request puts there."""


def _numbers(name: str, now_s: int) -> tuple[int, ...]:
    """Integers that mean something in a field: now for a time, a plausible duration, a small limit."""
    for pattern, kind in _NUMBER_KINDS:
        if pattern.search(name):
            return {
                "now": (now_s, now_s - 60),
                "duration": (1800, 60),
                "limit": (1, 2),
                "batch": (1, 500),
            }[kind]
    return ()


def _kind(name: str) -> str:
    for pattern, kind in _FIELD_KINDS:
        if pattern.search(name):
            return kind
    return ""


@dataclass(frozen=True)
class RealmData:
    """What was seeded in one realm."""

    realm: str
    sessions: tuple[str, ...]
    users: tuple[str, ...]


class Shards:
    """Direct connections to every shard: logical snapshots, and a DUMP image to restore."""

    def __init__(self, shards: Sequence[ShardSettings]) -> None:
        """Connect to each shard."""
        self._conns = [redis.Redis.from_url(s.url) for s in shards]

    def close(self) -> None:
        """Close the connections."""
        for conn in self._conns:
            conn.close()

    def flush(self) -> None:
        """Empty every shard."""
        for conn in self._conns:
            conn.flushall()

    def snapshot(self) -> Snapshot:
        """Every key of every shard with its logical value and absolute expiry, bar VOLATILE_KEYS."""
        found: Snapshot = {}
        for index, conn in enumerate(self._conns):
            keys = [k for k in conn.scan_iter(count=1000) if k not in VOLATILE_KEYS]
            pipe = conn.pipeline(transaction=False)
            for key in keys:
                pipe.type(key)
            types = [t.decode() for t in pipe.execute()]
            pipe = conn.pipeline(transaction=False)
            for key, kind in zip(keys, types, strict=True):
                _read_value(pipe, key, kind)
                pipe.pexpiretime(key)
            replies = pipe.execute()
            for i, (key, kind) in enumerate(zip(keys, types, strict=True)):
                if kind != "none":
                    found[(index, key)] = (kind, _logical(kind, replies[2 * i]), int(replies[2 * i + 1]))
        return found

    def image(self) -> Image:
        """Every key of every shard as a DUMP payload with its absolute expiry."""
        image: Image = []
        for conn in self._conns:
            keys = list(conn.scan_iter(count=1000))
            pipe = conn.pipeline(transaction=False)
            for key in keys:
                pipe.dump(key)
                pipe.pexpiretime(key)
            replies = pipe.execute()
            image.append(
                {
                    key: (replies[2 * i], int(replies[2 * i + 1]))
                    for i, key in enumerate(keys)
                    if replies[2 * i] is not None
                }
            )
        return image

    def restore(self, image: Image) -> None:
        """Make every shard hold exactly the image, atomically per shard."""
        for conn, keys in zip(self._conns, image, strict=True):
            pipe = conn.pipeline(transaction=True)
            pipe.flushall()
            for key, (payload, expires_at_ms) in keys.items():
                if expires_at_ms > 0:
                    pipe.restore(key, expires_at_ms, payload, absttl=True)
                else:
                    pipe.restore(key, 0, payload)
            pipe.execute()


def _read_value(pipe: Any, key: bytes, kind: str) -> None:
    if kind == "string":
        pipe.get(key)
    elif kind == "hash":
        pipe.hgetall(key)
    elif kind == "zset":
        pipe.zrange(key, 0, -1, withscores=True)
    elif kind == "set":
        pipe.smembers(key)
    elif kind == "list":
        pipe.lrange(key, 0, -1)
    elif kind == "stream":
        pipe.xrange(key)
    else:
        pipe.exists(key)


def _logical(kind: str, value: Any) -> Any:
    if kind == "hash":
        return tuple(sorted(value.items()))
    if kind == "set":
        return tuple(sorted(value))
    if kind == "zset":
        return tuple((member, score) for member, score in value)
    if kind == "stream":
        return tuple((entry_id, tuple(sorted(fields.items()))) for entry_id, fields in value)
    if kind == "list":
        return tuple(value)
    return value


def _describe_diff(before: Snapshot, after: Snapshot, keys: set[tuple[int, bytes]] | None = None) -> str:
    lines = []
    for where in sorted(set(before) | set(after) if keys is None else keys):
        old, new = before.get(where), after.get(where)
        if old != new:
            shard, key = where
            lines.append(f"  shard {shard} {key!r}: {_short(old)} -> {_short(new)}")
    shown = lines[:8]
    if len(lines) > len(shown):
        shown.append(f"  ... and {len(lines) - len(shown)} more keys")
    return "\n".join(shown)


def _short(value: object, limit: int = 240) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…"


class ErrorRecords(logging.Handler):
    """Error records of the standard logging module (gRPC and asyncio log there), from any thread."""

    def __init__(self) -> None:
        """Collect records at ERROR and above."""
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record."""
        self.records.append(record)


class FuzzTarget:
    """The seeded service and the checks every fuzzed call goes through."""

    def __init__(
        self,
        *,
        svc: BackgroundService,
        channel: grpc.aio.Channel,
        shards: Shards,
        known: Known,
        epochs: Sequence[int],
        victim: Snapshot,
    ) -> None:
        """Check calls on `channel` (on the service loop) against the state the shards hold now.

        Args:
            svc: the background service whose loop runs the calls.
            channel: a raw channel to the fuzzed server, made on that loop.
            shards: connections to the server's shards.
            known: the seeded ids and tokens.
            epochs: realistic times for integer fields.
            victim: REALM_A's keys and values, as they were when REALM_A alone was seeded.
        """
        self.svc = svc
        self.channel = channel
        self.shards = shards
        self.known = known
        self.vocabulary = Vocabulary(
            realistic=lambda name: known.values.get(_kind(name), []),
            suspicious=lambda name: known.values.get(f"{_kind(name)}:look-alike", []),
            numbers=lambda name: _numbers(name, epochs[0]),
            known=known.everything(),
            epochs=tuple(epochs),
        )
        self.strategies = RequestStrategies(self.vocabulary)
        self.image = shards.image()
        self.pristine = shards.snapshot()
        self.pristine_at_ms = time.time() * 1000
        self.victim = victim
        self.stdlib_errors = ErrorRecords()
        self.structlog_entries: list[MutableMapping[str, Any]] = []
        self.outcomes: Counter[tuple[str, str]] = Counter()
        """(RPC, status code) -> calls: shows whether the fuzzing got past validation."""

    def call(self, rpc: Rpc, request: Message) -> Outcome:
        """One raw call on the service loop; a stream that never ends is cut after a few messages."""
        endless = rpc.name in ENDLESS_STREAMS
        return self.svc.run(
            invoke(
                self.channel,
                rpc,
                request,
                deadline_seconds=CALL_TIMEOUT_SECONDS,
                max_messages=WATCH_MESSAGES if endless else 100_000,
                idle_seconds=WATCH_IDLE_SECONDS if endless else None,
            )
        )

    def check(self, rpc: Rpc, request: Message) -> None:
        """Call `rpc` with `request` and assert every property of the module docstring.

        Raises:
            AssertionError: with the request, the outcome and every property it broke.
        """
        assume(request.ByteSize() <= MAX_FUZZ_REQUEST_BYTES)
        logged = len(self.structlog_entries)
        recorded = len(self.stdlib_errors.records)
        outcome = self.call(rpc, request)
        self.outcomes[(rpc.name, outcome.code.name)] += 1
        after = self.shards.snapshot()
        problems = self.problems(rpc, request, outcome, after)
        problems += [
            f"logged {e.get('log_level')}: {e.get('event')}\n{e.get('exception', '')}"
            for e in self.structlog_entries[logged:]
            if e.get("log_level") in ("error", "critical", "exception")
        ]
        problems += [
            f"logged {r.levelname} ({r.name}): {r.getMessage()[:300]}"
            for r in self.stdlib_errors.records[recorded:]
        ]
        self.reset(after)
        if problems:
            responses = "; ".join(_short(short_repr(m), 400) for m in outcome.responses[:3])
            raise AssertionError(
                f"{rpc.name} {short_repr(request)}\n"
                f"-> {outcome.code.name} {outcome.details!r} reason={outcome.reason!r}\n"
                f"   responses=[{responses}]\n" + "\n".join(f"* {p}" for p in problems)
            )

    def reset(self, now: Snapshot | None = None) -> None:
        """Put the seeded state back if the shards hold anything else (`now`: their snapshot)."""
        if (self.shards.snapshot() if now is None else now) != self.pristine:
            self.shards.restore(self.image)

    def problems(self, rpc: Rpc, request: Message, outcome: Outcome, after: Snapshot) -> list[str]:
        """Every property of the module docstring that this call broke."""
        realms = [s for name, s in strings_of(request) if name in ("realm", "realms")]
        found = self._status_problems(request, outcome)
        failed = outcome.code != grpc.StatusCode.OK
        if (
            failed
            and (rpc.name, outcome.reason) not in WRITES_ON_ERROR
            and not _same_state(self.pristine, after, self._expiry_slack())
        ):
            found.append("failed but changed the shards:\n" + _describe_diff(self.pristine, after))
        if REALM_A not in realms:
            if _reads_a_realm(request):
                found += _cross_realm_reads(request, outcome)
            slack = self._expiry_slack()
            changed = {w for w in self.victim if not _same_entry(self.pristine.get(w), after.get(w), slack)}
            created = {w for w in set(after) - set(self.pristine) if _realm_of(w[1]) == REALM_A.encode()}
            if changed or created:
                found.append(
                    f"changed {REALM_A!r}'s keys without naming it:\n"
                    + _describe_diff(self.pristine, after, changed | created)
                )
        return found

    def _expiry_slack(self) -> float:
        """How much later an expiry may be: the real time since the pristine snapshot, plus rounding."""
        return time.time() * 1000 - self.pristine_at_ms + EXPIRY_SLACK_MS

    @staticmethod
    def _status_problems(request: Message, outcome: Outcome) -> list[str]:
        found: list[str] = []
        if outcome.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            found.append(f"answered {outcome.code.name}")
        if outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            found.append(f"no answer within {CALL_TIMEOUT_SECONDS} s")
        request_strings = [s for _, s in strings_of(request)]
        for pattern in TRACE_PATTERNS:
            for match in pattern.finditer(outcome.details):
                if not any(match.group(0) in s for s in request_strings):
                    found.append(f"status message shows {match.group(0)!r}")
        if outcome.code != grpc.StatusCode.OK and (outcome.reason == "" or outcome.domain != "session-store"):
            found.append("error without a session-store google.rpc.ErrorInfo")
        return found


EXPIRY_SLACK_MS = 1000
"""Rounding allowed on top of the real time elapsed, when an expiry is compared."""


def _same_entry(before: Any, after: Any, slack_ms: float) -> bool:
    """The same key state: type and value exactly; an absolute expiry at most `slack_ms` later.

    Scripts set TTLs relative to the frozen test clock, so a key rewritten to the same value (a
    failed create taking back its lookup hint) gets an absolute expiry later by the real time elapsed
    since the first write. With the shard's TIME, as in production, it is restored exactly.
    """
    if before is None or after is None:
        return before is after
    (kind, value, expiry), (kind2, value2, expiry2) = before, after
    if (kind, value) != (kind2, value2) or (expiry == -1) != (expiry2 == -1):
        return False
    return bool(0 <= expiry2 - expiry <= slack_ms)


def _same_state(before: Snapshot, after: Snapshot, slack_ms: float) -> bool:
    """Every key in the same state (see _same_entry), none added or gone."""
    return before.keys() == after.keys() and all(_same_entry(before[k], after[k], slack_ms) for k in before)


def _cross_realm_reads(request: Message, outcome: Outcome) -> list[str]:
    """REALM_A's data in the reply to a request that did not name REALM_A (the marker counts unless
    the request itself carried it, e.g. as a user id that a reply may echo)."""
    found: list[str] = []
    echoed = any(MARKER in s for _, s in strings_of(request))
    for message in outcome.responses:
        for name, value in strings_of(message):
            if name == "realm" and value == REALM_A:
                found.append(f"returned data of {REALM_A!r}: {_short(short_repr(message))}")
            elif not echoed and MARKER in value:
                found.append(f"returned {REALM_A!r}'s marker in {name}: {_short(value)}")
    if not echoed and MARKER in outcome.details:
        found.append(f"status message holds {REALM_A!r}'s marker: {outcome.details!r}")
    return found


def _realm_of(key: bytes) -> bytes | None:
    """The realm a key's name holds, if it holds one."""
    match = REALM_KEY.match(key)
    return match.group(1) if match else None


def _reads_a_realm(request: Message) -> bool:
    """Whether the request is scoped to realms (a realm field, or a non-empty realm filter)."""
    fields = request.DESCRIPTOR.fields_by_name
    if "realms" in fields:
        return len(getattr(request, "realms")) > 0  # noqa: B009 - not every request type has it
    if "realm" in fields:
        return True
    return any(name == "realm" for name, _ in strings_of(request))


async def _start(
    settings: Settings, shards: tuple[ShardSettings, ...], clock: TestClock
) -> tuple[SessionStoreServer, grpc.aio.Channel, AsyncSessionStoreClient]:
    # grpc.aio binds servers and channels to the loop they are created on: this runs on the service's.
    server = SessionStoreServer(settings, shards, clock=clock)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return server, channel, AsyncSessionStoreClient(f"127.0.0.1:{port}", max_attempts=1)


async def _stop(
    server: SessionStoreServer, channel: grpc.aio.Channel, client: AsyncSessionStoreClient
) -> None:
    await client.close()
    await channel.close()
    await server.stop(grace=0)


def _policies() -> list[RealmPolicy]:
    """REALM_A reaches the deep paths: rotation on (no reuse), brute force on, two tabs per root."""
    return [
        RealmPolicy(
            realm=REALM_A,
            remember_me=True,
            revoke_refresh_token=True,
            refresh_token_max_reuse=0,
            auth_sessions_limit=2,
            clients={"app": ClientPolicy(session_idle_timeout=3600)},
            brute_force=BruteForcePolicy(enabled=True, failure_factor=3, max_temporary_lockouts=2),
        ),
        RealmPolicy(realm=REALM_B, revoke_refresh_token=True, refresh_token_max_reuse=1),
    ]


async def _seed_realm(
    client: AsyncSessionStoreClient, realm: str, tag: str, now_s: int, known: Known
) -> RealmData:
    """Two users (one shared with the other realm), online and offline sessions with clients, a used
    refresh token, single-use objects, login failures and an authentication session with a tab; every
    value the other realm must never see carries `tag`."""
    alice, bob = f"alice-{tag}", "bob"
    first = await client.create_user_session(
        realm,
        alice,
        login_username=f"login-{tag}",
        ip_address=f"10.0.0.1-{tag}",
        auth_method="pwd",
        remember_me=realm == REALM_A,
        broker_session_id=f"brk-s-{tag}",
        broker_user_id=f"brk-u-{tag}",
        notes={"k1": f"note-{tag}", "AUTH_TIME": str(now_s)},
    )
    await client.attach_client_session(
        realm, first.id, "app", redirect_uri=f"https://app.test/cb?{tag}", notes={"cn": f"cnote-{tag}"}
    )
    await client.attach_client_session(realm, first.id, "admin", protocol="openid-connect")
    second = await client.create_user_session(
        realm, bob, session_id=f"kc-{tag}", notes={"k1": f"note-{tag}"}, broker_session_id=f"brk-s2-{tag}"
    )
    await client.attach_client_session(realm, second.id, "app", notes={"cn": f"cnote-{tag}"})
    await client.create_offline_session(realm, first.id, ["app"])
    await client.use_refresh_token(realm, first.id, "app", "jti-1", issued_at=now_s, reuse_id="reuse-1")
    for key in (f"code-{tag}", "code-shared"):
        await client.put_single_use_object(realm, key, 3600, {"n": f"suo-{tag}"})
    for user in (alice, bob):
        await client.record_login_failure(realm, user, ip_address=f"ip-{tag}")
    tabs = []
    for root_id in (f"root-{tag}", "root-shared"):
        await client.get_or_create_root_authentication_session(realm, root_id)
        tab = await client.create_authentication_session(realm, root_id, "app")
        await client.update_authentication_session(
            realm,
            root_id,
            tab.tab_id,
            "app",
            authenticated_user_id=alice,
            redirect_uri=f"https://app.test/login?{tag}",
            set_auth_notes={"an": f"auth-{tag}"},
            set_client_notes={"cn": f"cnote-{tag}"},
            add_required_actions=["VERIFY_EMAIL"],
        )
        tabs.append(tab.tab_id)
        known.add("root", root_id)
    known.add("session", first.id, second.id, f"{first.id}.route-1")
    known.add("user", alice, bob)
    known.add("broker_session", f"brk-s-{tag}", f"brk-s2-{tag}")
    known.add("broker_user", f"brk-u-{tag}")
    known.add("single_use_key", f"code-{tag}", "code-shared")
    known.add("tab", *tabs)
    return RealmData(realm, (first.id, second.id), (alice, bob))


def _tokens(keys: Mapping[str, SigningKey], data: Mapping[str, RealmData], now_s: int) -> list[str]:
    """Genuine tokens of each realm's sessions, tokens of one realm naming the other's sessions, and
    forged ones (alg none, a key of the other realm, the other realm's issuer)."""
    tokens = []
    for realm, own in data.items():
        other = next(d for r, d in data.items() if r != realm)
        key, issuer = keys[realm], ISSUER + realm
        for typ, audience in (("Bearer", AUDIENCE), ("Refresh", issuer), ("Offline", issuer)):
            claims = token_claims(
                issuer=issuer,
                session_id=own.sessions[0],
                now=now_s,
                typ=typ,
                user=own.users[0],
                audience=audience,
            )
            tokens.append(sign(key, claims))
        # Signed by this realm, naming the other realm's session and user (or no user at all).
        for user in (other.users[0], None):
            claims = token_claims(
                issuer=issuer, session_id=other.sessions[0], now=now_s, user="x", sub=user, audience=AUDIENCE
            )
            tokens.append(sign(key, claims))
        tokens.append(
            sign(keys[other.realm], token_claims(issuer=issuer, session_id=own.sessions[0], now=now_s))
        )
        tokens.append(
            hand_made(
                {"alg": "none", "typ": "JWT"},
                token_claims(issuer=issuer, session_id=own.sessions[0], now=now_s),
            )
        )
    return tokens


@pytest.fixture(scope="module")
def target(
    redis_shards: tuple[ShardSettings, ...], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzTarget]:
    """The service with token validation for both realms, seeded; its loop on a background thread."""
    folder: Path = tmp_path_factory.mktemp("fuzz-tokens")
    keys = {REALM_A: ec_key("a-1"), REALM_B: ec_key("b-1")}
    realms = {}
    for index, (realm, key) in enumerate(keys.items()):
        write_jwks(folder / f"{index}.jwks.json", key)
        realms[realm] = {
            "issuer": ISSUER + realm,
            "audiences": [AUDIENCE],
            "algorithms": ["ES256"],
            "jwks_file": f"{index}.jwks.json",
        }
    (folder / "realms.json").write_text(json.dumps({"realms": realms}), encoding="utf-8")
    settings = Settings(
        listen="127.0.0.1:0",
        grace_seconds=0.5,
        policy_refresh_seconds=0.001,
        tokens=TokenSettings(realms_file=folder / "realms.json", keys_reload_seconds=0),
    )
    shards = Shards(redis_shards)
    handler: ErrorRecords | None = None
    with background_service(redis_shards) as svc:
        shards.flush()
        server, channel, client = svc.run(_start(settings, redis_shards, svc.clock))
        try:
            now_s = svc.clock.now_ms // 1000
            known = Known()
            policy_a, policy_b = _policies()
            svc.run(client.set_realm_policy(policy_a))
            data = {REALM_A: svc.run(_seed_realm(client, REALM_A, MARKER, now_s, known))}
            # Everything on the shards but the shared keys is REALM_A's now.
            victim = {w: v for w, v in shards.snapshot().items() if not SHARED_KEYS.match(w[1])}
            svc.run(client.set_realm_policy(policy_b))
            data[REALM_B] = svc.run(_seed_realm(client, REALM_B, "b", now_s, known))
            known.add("realm", REALM_A, REALM_B)
            known.add("realm:look-alike", *REALM_LOOK_ALIKES)
            known.add("client", *CLIENTS)
            known.add("note", *NOTE_NAMES)
            known.add("token", *_tokens(keys, data, now_s))
            known.add("audience", AUDIENCE, *(ISSUER + r for r in keys))
            known.add("token_id", "jti-1", "jti-2")
            known.add("reuse_id", "reuse-1", "reuse-2")
            known.add("authenticator", "auth-username-password-form", "otp")
            known.add("required_action", "VERIFY_EMAIL", "UPDATE_PASSWORD")
            known.add("scope", "openid", "profile")
            known.add("redirect_uri", "https://app.test/cb", "javascript:alert(1)")
            # A well-formed shard URL nothing listens on (AddShard gets past validation and fails to
            # connect); never a real shard's: a fuzzed move would reshuffle the seeded data.
            known.add("shard_url", "redis://127.0.0.1:1/0")
            known.add("cursor", *svc.run(_cursors(channel)))
            fuzz = FuzzTarget(
                svc=svc,
                channel=channel,
                shards=shards,
                known=known,
                epochs=(now_s, svc.clock.now_ms),
                victim=victim,
            )
            handler = fuzz.stdlib_errors
            logging.getLogger().addHandler(handler)
            yield fuzz
        finally:
            if handler is not None:
                logging.getLogger().removeHandler(handler)
            svc.run(_stop(server, channel, client))
            shards.close()


async def _cursors(channel: grpc.aio.Channel) -> list[str]:
    """Cursors of a watch from now and from the oldest event (resume tokens the fuzzer may replay)."""
    watch = next(r for r in RPCS if r.name == "SessionEvents.Watch")
    found: list[str] = []
    for request in (events_pb2.WatchRequest(from_now=True), events_pb2.WatchRequest(from_oldest=True)):
        outcome = await invoke(
            channel, watch, request, deadline_seconds=CALL_TIMEOUT_SECONDS, max_messages=2, idle_seconds=0.2
        )
        found.extend(m.cursor for m in outcome.responses if isinstance(m, events_pb2.Event))
    return found


class TestFuzzCoverage:
    """Every RPC the server serves is fuzzed, with a strategy for every field of its request."""

    @pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
    def test_every_request_field_has_a_strategy(self, target: FuzzTarget, rpc: Rpc) -> None:
        """The strategies can draw every field of the request, at any depth."""
        assert all_fields(rpc.method.input_type) == covered_fields(rpc.method.input_type, target.strategies)

    def test_every_served_service_is_fuzzed(self, target: FuzzTarget) -> None:
        """Every service the server lists through reflection (bar health, reflection and the test clock)
        has all its methods in the fuzzed set."""
        served = target.svc.run(_reflected_services(target.channel))
        ours = [name for name in served if not name.startswith("grpc.") and name not in EXCLUDED_SERVICES]
        methods = {
            f"/{name}/{m.name}"
            for name in ours
            for m in descriptor_pool.Default().FindServiceByName(name).methods
        }
        assert "session_store.v1.SessionStore" in ours
        assert set() == methods - {rpc.path for rpc in RPCS}

    @pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
    def test_every_fuzzed_rpc_is_served(self, target: FuzzTarget, rpc: Rpc) -> None:
        """An empty request reaches a handler (anything but UNIMPLEMENTED)."""
        outcome = target.call(rpc, rpc.request_class())
        target.reset()
        assert grpc.StatusCode.UNIMPLEMENTED != outcome.code

    def test_the_victim_realm_holds_the_marker(self, target: FuzzTarget) -> None:
        """REALM_A's seeded data carries the marker and its keys are known, so the cross-realm checks
        have something to find."""
        get = next(r for r in RPCS if r.name == "SessionStore.GetUserSession")
        session_id = target.known.values["session"][0]
        outcome = target.call(
            get, session_store_pb2.GetUserSessionRequest(realm=REALM_A, session_id=session_id)
        )
        assert grpc.StatusCode.OK == outcome.code
        assert any(MARKER in s for _, s in strings_of(outcome.responses[0]))
        assert len(target.victim) >= 10
        # Seeding REALM_B after REALM_A left every key of REALM_A as it was.
        assert target.victim == {w: target.pristine.get(w) for w in target.victim}

    def test_the_checks_catch_a_cross_realm_read(self, target: FuzzTarget) -> None:
        """A reply to another realm that holds REALM_A's data is reported, as is an INTERNAL."""
        get = next(r for r in RPCS if r.name == "SessionStore.GetUserSession")
        leaked = session_store_pb2.UserSession(realm=REALM_A, notes={"k1": f"note-{MARKER}"})
        request = session_store_pb2.GetUserSessionRequest(realm=REALM_B, session_id="x")
        ok = Outcome(grpc.StatusCode.OK, "", (leaked,))
        assert 2 == len(target.problems(get, request, ok, target.pristine))
        internal = Outcome(grpc.StatusCode.INTERNAL, "internal error", (), "INTERNAL", "session-store")
        assert ["answered INTERNAL"] == target.problems(get, request, internal, target.pristine)

    def test_the_checks_catch_a_partial_write(self, target: FuzzTarget) -> None:
        """An error after which a key of REALM_A changed is reported twice: a partial write, and a write
        to a realm the request did not name."""
        get = next(r for r in RPCS if r.name == "SessionStore.GetUserSession")
        request = session_store_pb2.GetUserSessionRequest(realm=REALM_B, session_id="x")
        victim = sorted(target.victim)[0]
        after = {**target.pristine, victim: ("string", b"changed", -1)}
        refused = Outcome(grpc.StatusCode.NOT_FOUND, "no session", (), "SESSION_NOT_FOUND", "session-store")
        problems = target.problems(get, request, refused, after)
        assert 2 == len(problems)


EXPLORE = os.environ.get("SESSION_STORE_FUZZ_EXPLORE") == "1"
"""Off (CI, `make test`): the same fixed, derived examples every run, so a red run is a regression and
reproduces. On: new random requests each run, to look for what the fixed set misses."""


def _examples(rpc: Rpc) -> int:
    """How many requests of `rpc` to send."""
    poisonable = len(field_paths(rpc.method.input_type))
    return EXAMPLES_BY_RPC.get(rpc.name, max(EXAMPLES, EXAMPLES_PER_FIELD * poisonable))


async def _reflected_services(channel: grpc.aio.Channel) -> list[str]:
    """The services the server lists through reflection."""
    info = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        reflection_pb2.ServerReflectionRequest.SerializeToString,
        reflection_pb2.ServerReflectionResponse.FromString,
    )
    call = info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for response in call:
        return [service.name for service in response.list_services_response.service]
    return []


class TestFuzzedApi:
    """Hostile requests never get INTERNAL, a stack trace, a partial write or another realm's data."""

    @pytest.mark.slow
    @pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
    def test_hostile_requests(self, target: FuzzTarget, rpc: Rpc) -> None:
        """Every drawn request of this RPC passes every check of FuzzTarget.check."""

        @settings(
            max_examples=_examples(rpc),
            deadline=None,
            database=None,
            derandomize=not EXPLORE,
            print_blob=True,
            # No explain phase: it re-runs the failing call many times, and the report says what broke.
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        def fuzz(request: Fuzzed) -> None:
            target.check(rpc, request.message)

        # Every field meets every kind of bad value once (explicit examples), then random requests.
        for case in reversed(sweep(rpc, target.vocabulary)):
            fuzz = example(request=case)(fuzz)
        fuzz = given(request=target.strategies.for_rpc(rpc))(fuzz)

        # Tracebacks rendered, so that a report shows where an unexpected exception came from.
        with capture_logs(processors=[structlog.processors.format_exc_info]) as entries:
            target.structlog_entries = entries
            fuzz()
        reached = {code: n for (name, code), n in target.outcomes.items() if name == rpc.name}
        assert set(reached) - {"INVALID_ARGUMENT"}, f"every call was refused as invalid: {reached}"
