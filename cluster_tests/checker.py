"""The checker: from a history (and the final read it contains) to the list of violations. Pure.

What it proves, for the realm of the run (`Meta.realm`; the marker realm only drains the watcher):

- **lost**: a session whose create was acknowledged is later observed dead (GetUserSession or
  TouchUserSession NOT_FOUND, absent from its user's ListUserSessions, absent from the final read)
  although nothing could have ended it before that observation was acknowledged: no logout of it, no
  revoke-all of its user and no limited login of its user (acknowledged or not) was invoked before,
  and its expiry was impossible (the highest clock any node could have had is below the highest
  deadline the store itself reported for it).
- **read_after_end**: a session observed alive by a call invoked after the acknowledgement of its
  logout, of a revoke-all of its user (when its create was acknowledged before the revoke-all was
  invoked), of a login that named it evicted, or after it must have expired (its latest possible
  deadline, from every touch that may have run, is at or below the lowest clock any node could use).
- **limit_exceeded**: a ListUserSessions of a limited user (every create of that user carries the same
  realm limit) shows more sessions than the limit.
- **reuse_exceeded / reuse_inexact / refresh_after_rejection**: refresh-token rotation. Tokens of one
  chain carry strictly increasing `iat`s (the workload issues generation n+1 with iat n+1), so a token
  stops being the chain's current one only for a token it can never come back from (it is stale from
  then on). Hence, per token, acknowledged acceptances never exceed `max_reuse + 1`; once a reuse
  rejection was acknowledged, acceptances (plus uses of unknown outcome) reach `max_reuse + 1` exactly;
  and after an acknowledged rejection (which detaches the client session) no refresh of that client
  session invoked later is accepted. Checked only for client sessions attached exactly once, on the
  first attempt (a retried or unknown attach may run again late and reset the rotation state).
- **count_mismatch / phantom_session / list_get_mismatch**: at the end, CountSessions (realm and per
  client, on every node) equals the live set that ListUserSessions of every user returns; every live
  session comes from a create that may have run; a get finds nothing the lists did not show.
- **reshard_visible**: no call answered PARTITION_MOVED or PARTITION_FROZEN (the service retries a
  moved or frozen partition itself; a caller must see only latency while shards are added or removed).
- **event_***: with a watcher, event ids are unique; each session has at most one `created` event, which
  comes first (exactly one when its create was acknowledged), at most one ending event (`logged_out`,
  `revoked`, `expired`) and nothing after it (order within one shard's stream: a watch merges streams
  in no particular order, and resharding moves a session to another stream); a session dead at the
  end has exactly one ending event and a live one none; every ending event has a cause in the history
  (a logout, an admin revoke, a revoke-all, a limited login, or a clock at or past the session's
  reported deadline); an acknowledged logout that removed the session ends it with `logged_out`
  (`revoked`/admin), an acknowledged eviction with `revoked`/limit.

Unknown outcomes are "maybe happened, at any time after invoke" (a request stuck in a stalled shard
runs when it resumes); acknowledged ones happened between invoke and acknowledgement. Clock reasoning
uses the history's clock changes: within a change's window a node may use any value between its
`low_ms` and `to_ms`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cluster_tests.history import OK, UNKNOWN, ClockChange, Event, History, Op

MARGIN_MS = 1000
"""Slack on every clock comparison: stored refresh times are whole seconds."""
ENDING_EVENTS = frozenset({"logged_out", "revoked", "expired"})
INFINITY = float("inf")

KINDS = {
    "lost": "an acknowledged session disappeared with nothing that could have ended it",
    "read_after_end": "a session was readable after its acknowledged logout, revoke, eviction or expiry",
    "limit_exceeded": "a user had more live sessions than the session limit",
    "reuse_exceeded": "a refresh token was accepted more than max_reuse + 1 times",
    "reuse_inexact": "a reuse rejection came before max_reuse + 1 acceptances",
    "refresh_after_rejection": "a refresh was accepted after rotation detached the client session",
    "count_mismatch": "CountSessions differs from the live set",
    "phantom_session": "a live session that no create could have made",
    "list_get_mismatch": "a get found a session that the lists did not show",
    "final_read": "the final read failed, so nothing could be verified",
    "event_duplicate": "one event delivered twice",
    "event_created": "wrong number of created events for a session",
    "event_ending": "wrong number of ending events for a session",
    "event_order": "an event before created or after the ending event",
    "event_unexplained": "an ending event that nothing in the history could cause",
    "event_phantom": "an event of a session no create could have made",
    "watch": "the watcher failed or did not catch up",
}


@dataclass(frozen=True)
class Violation:
    """One broken guarantee."""

    kind: str
    subject: str
    detail: str
    seqs: tuple[int, ...] = ()

    def __str__(self) -> str:
        """One line: kind, subject, detail, the operations involved."""
        ops = f" (ops {', '.join(map(str, self.seqs[:6]))})" if self.seqs else ""
        return f"{self.kind}: {self.subject}: {self.detail}{ops}"


@dataclass
class CheckResult:
    """The violations and what was checked."""

    violations: list[Violation] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        """No violation."""
        return not self.violations

    def by_kind(self) -> Counter[str]:
        """Violations per kind."""
        return Counter(v.kind for v in self.violations)


class ClockModel:
    """Which test-clock values the nodes may have used at a time of the run."""

    def __init__(self, initial_ms: int, changes: Sequence[ClockChange]) -> None:
        """The clock starts at `initial_ms` on every node and moves only by `changes`."""
        self.initial_ms = initial_ms
        self.changes = sorted(changes, key=lambda c: c.t0)
        self.max_ms = max([initial_ms, *(c.to_ms for c in self.changes)])

    def high(self, t: float) -> int:
        """The highest value any node may have had at or before time `t`."""
        v = self.initial_ms
        for c in self.changes:
            if c.t0 <= t:
                v = max(v, c.to_ms)
        return v

    def low(self, t0: float, t1: float) -> int:
        """The lowest value any node may have had at some time in [t0, t1]."""
        v = self.initial_ms
        for c in self.changes:
            if c.t1 < t0:
                v = max(v, c.to_ms)
        for c in self.changes:
            if c.t0 <= t1 and c.t1 >= t0:
                v = min(v, c.low_ms, c.from_ms)
        return v


@dataclass
class _Session:
    sid: str
    user: str = ""
    creates: list[Op] = field(default_factory=list)
    reported_ms: list[int] = field(default_factory=list)
    movers: list[Op] = field(default_factory=list)
    alive: list[Op] = field(default_factory=list)
    dead: list[Op] = field(default_factory=list)
    logouts: list[Op] = field(default_factory=list)
    evicted_by: list[Op] = field(default_factory=list)

    @property
    def create(self) -> Op | None:
        return self.creates[0] if len(self.creates) == 1 else None

    @property
    def acked(self) -> bool:
        c = self.create
        return c is not None and c.outcome == OK


def _list_entries(op: Op) -> Mapping[str, Any]:
    return (op.result or {}).get("sessions", {}) if op.ok else {}


class _Model:
    """The history indexed by session, user and token."""

    def __init__(self, history: History) -> None:
        self.meta = history.meta
        self.clock = ClockModel(history.meta.initial_clock_ms, history.clocks)
        self.sessions: dict[str, _Session] = {}
        self.revokes: dict[str, list[Op]] = defaultdict(list)
        self.limited: dict[str, list[Op]] = defaultdict(list)
        self.lists: list[Op] = []
        self.refreshes: list[Op] = []
        self.attaches: dict[tuple[str, str], list[Op]] = defaultdict(list)
        self.final = [o for o in history.ops if o.worker == "final"]
        realm = history.meta.realm
        for op in history.ops:
            if op.args.get("realm") != realm:
                continue
            self._index(op)

    def session(self, sid: str, user: str = "") -> _Session:
        s = self.sessions.get(sid)
        if s is None:
            s = self.sessions[sid] = _Session(sid)
        if user and not s.user:
            s.user = user
        return s

    def _index(self, op: Op) -> None:  # noqa: PLR0912 - one branch per operation kind
        a, r = op.args, op.result or {}
        kind = op.op
        if kind == "create":
            s = self.session(a["session"], a["user"])
            s.creates.append(op)
            if op.ok:
                s.reported_ms.append(int(r["expires_at_ms"]))
                s.movers.append(op)
            if a.get("limit"):
                self.limited[a["user"]].append(op)
            for ev in r.get("evicted", ()) if op.ok else ():
                self.session(ev).evicted_by.append(op)
        elif kind == "attach":
            s = self.session(a["session"])
            self.attaches[(a["session"], a["client"])].append(op)
            if op.ok or op.stray_possible:
                s.movers.append(op)
            if op.ok:
                s.alive.append(op)
        elif kind in ("touch", "get"):
            s = self.session(a["session"])
            if kind == "touch" and (op.ok or op.stray_possible):
                s.movers.append(op)
            if op.ok:
                s.alive.append(op)
                s.reported_ms.append(int(r["expires_at_ms"]))
            elif op.error == "SessionNotFoundError":
                s.dead.append(op)
        elif kind == "refresh":
            s = self.session(a["session"])
            self.refreshes.append(op)
            if op.ok or op.stray_possible:
                s.movers.append(op)
            if op.ok:
                s.alive.append(op)
        elif kind == "logout":
            self.session(a["session"]).logouts.append(op)
        elif kind == "revoke_all":
            self.revokes[a["user"]].append(op)
        elif kind == "list":
            self.lists.append(op)
            for sid, entry in _list_entries(op).items():
                s = self.session(sid, a["user"])
                s.alive.append(op)
                s.reported_ms.append(int(entry[0]))

    # -- deadlines --

    def deadline_low(self, s: _Session) -> int:
        """The deadline is at least this: the store's own highest report (deadlines never move back)."""
        return max(s.reported_ms, default=0)

    def deadline_high(self, s: _Session) -> float:
        """The deadline is at most this: every touch that may have run, at the highest clock it may have
        seen (a touch that may run late: the highest clock of the run)."""
        c = s.create
        if c is None or not c.ok:
            return INFINITY
        started = int((c.result or {})["started"])
        lr = started
        for op in s.movers:
            t = INFINITY if op.stray_possible else op.t1
            hi = self.clock.max_ms if t == INFINITY else self.clock.high(t)
            lr = max(lr, hi // 1000)
        bound = min(1000 * (lr + self.meta.idle_s), 1000 * (started + self.meta.max_s))
        # A report above the model would mean the model is wrong: never claim less than the store said.
        return max(bound, self.deadline_low(s))

    def may_have_expired_by(self, s: _Session, t: float) -> bool:
        """Some node's clock may have reached the session's deadline by time `t`."""
        return self.clock.high(t) >= self.deadline_low(s) - MARGIN_MS

    def must_have_expired(self, s: _Session, t0: float, t1: float) -> bool:
        """Every node's clock was past the session's latest possible deadline during [t0, t1]."""
        return self.deadline_high(s) + MARGIN_MS <= self.clock.low(t0, t1)


def check(history: History) -> CheckResult:
    """Every violation of the guarantees in the module docstring.

    Args:
        history: a whole run, final read included (ops of worker "final").

    Returns:
        The violations (empty: the run is clean) and counters of what was checked.
    """
    result = CheckResult()
    model = _Model(history)
    _check_final_read(model, result)
    _add_list_absences(model)
    _check_lost(model, result)
    _check_read_after_end(model, result)
    _check_limits(model, result)
    _check_rotation(model, result)
    _check_final_counts(model, result)
    _check_resharding_visible(history, result)
    if history.meta.events:
        _check_events(model, history, result)
    result.stats["ops"] = len(history.ops)
    result.stats["sessions"] = len(model.sessions)
    result.stats["acknowledged_sessions"] = sum(1 for s in model.sessions.values() if s.acked)
    return result


RESHARDING_ERRORS = ("PartitionMovedError", "PartitionFrozenError")
"""What a caller must never see while shards are added or removed: the service retries both."""


def _check_resharding_visible(history: History, result: CheckResult) -> None:
    for op in history.ops:
        if op.error in RESHARDING_ERRORS:
            result.violations.append(
                Violation("reshard_visible", op.op, f"{op.op} {dict(op.args)} answered {op.error}", (op.seq,))
            )


def _check_final_read(model: _Model, result: CheckResult) -> None:
    if not model.final:
        result.violations.append(Violation("final_read", "run", "the history has no final read"))
        return
    for op in model.final:
        expected_miss = op.op == "get" and op.error == "SessionNotFoundError"
        if not op.ok and not expected_miss:
            result.violations.append(
                Violation("final_read", op.op, f"final {op.op} {dict(op.args)} failed: {op.error}", (op.seq,))
            )


def _add_list_absences(model: _Model) -> None:
    """A list of a user that misses one of their sessions created (acknowledged) before it: dead then."""
    by_user: dict[str, list[_Session]] = defaultdict(list)
    for s in model.sessions.values():
        if s.acked and s.user:
            by_user[s.user].append(s)
    for op in model.lists:
        if not op.ok:
            continue
        present = _list_entries(op)
        for s in by_user.get(op.args["user"], ()):
            c = s.create
            if c is not None and c.t1 < op.t0 and s.sid not in present:
                s.dead.append(op)


def _explained_death(model: _Model, s: _Session, obs: Op) -> bool:
    c = s.create
    assert c is not None
    if any(lo.t0 < obs.t1 for lo in s.logouts):
        return True
    for op in [*model.revokes.get(s.user, ()), *model.limited.get(s.user, ())]:
        could_follow_create = op.t1 > c.t0 or op.stray_possible
        removes_it = (
            op.op == "revoke_all" or op.stray_possible or s.sid in (op.result or {}).get("evicted", ())
        )
        if op.t0 < obs.t1 and could_follow_create and removes_it:
            return True
    return model.may_have_expired_by(s, obs.t1)


def _check_lost(model: _Model, result: CheckResult) -> None:
    for s in model.sessions.values():
        c = s.create
        if c is None or not c.ok:
            continue
        for obs in sorted(s.dead, key=lambda o: o.t1):
            if obs.t0 <= c.t1:
                continue  # may have run before the create
            result.stats["dead_observations"] += 1
            if not _explained_death(model, s, obs):
                result.violations.append(
                    Violation(
                        "lost",
                        s.sid,
                        f"created (acknowledged at {c.t1:.3f} s) but not found by {obs.op} at "
                        f"{obs.t0:.3f}-{obs.t1:.3f} s, with no logout, revoke, eviction or possible expiry "
                        f"(deadline >= {model.deadline_low(s)}, clock <= {model.clock.high(obs.t1)})",
                        (c.seq, obs.seq),
                    )
                )
                break


def _end_proofs(model: _Model, s: _Session) -> list[tuple[float, str, int]]:
    """(acknowledged at, what, op) of everything that ended the session for sure."""
    c = s.create
    assert c is not None
    proofs = [(lo.t1, "logout", lo.seq) for lo in s.logouts if lo.ok and c.t1 < lo.t0]
    proofs += [(r.t1, "revoke-all", r.seq) for r in model.revokes.get(s.user, ()) if r.ok and c.t1 < r.t0]
    proofs += [(e.t1, "eviction", e.seq) for e in s.evicted_by if e.ok]
    return sorted(proofs)


def _check_read_after_end(model: _Model, result: CheckResult) -> None:
    for s in model.sessions.values():
        c = s.create
        if c is None or not c.ok:
            continue
        proofs = _end_proofs(model, s)
        for obs in sorted(s.alive, key=lambda o: o.t0):
            result.stats["alive_observations"] += 1
            ended = next((p for p in proofs if p[0] < obs.t0), None)
            if ended is not None:
                result.violations.append(
                    Violation(
                        "read_after_end",
                        s.sid,
                        f"alive in {obs.op} at {obs.t0:.3f} s after its {ended[1]} was acknowledged at "
                        f"{ended[0]:.3f} s",
                        (ended[2], obs.seq),
                    )
                )
                break
            if model.must_have_expired(s, obs.t0, obs.t1):
                result.violations.append(
                    Violation(
                        "read_after_end",
                        s.sid,
                        f"alive in {obs.op} at {obs.t0:.3f} s although expired: latest deadline "
                        f"{model.deadline_high(s):.0f} ms, clock >= {model.clock.low(obs.t0, obs.t1)} ms",
                        (c.seq, obs.seq),
                    )
                )
                break


def _check_limits(model: _Model, result: CheckResult) -> None:
    for user, (limit, _behavior) in model.meta.limits.items():
        creates = [s.creates[0] for s in model.sessions.values() if s.user == user and s.creates]
        if any(int(c.args.get("limit") or 0) != limit for c in creates):
            result.stats["limit_unverifiable_users"] += 1
            continue
        for op in model.lists:
            if op.ok and op.args["user"] == user:
                result.stats["limit_observations"] += 1
                n = len(_list_entries(op))
                if n > limit:
                    result.violations.append(
                        Violation(
                            "limit_exceeded",
                            user,
                            f"{n} live sessions listed at {op.t0:.3f} s, limit {limit}",
                            (op.seq,),
                        )
                    )


def _check_rotation(model: _Model, result: CheckResult) -> None:
    allowed = model.meta.max_reuse + 1
    by_token: dict[tuple[str, str, str, str], list[Op]] = defaultdict(list)
    by_pair: dict[tuple[str, str], list[Op]] = defaultdict(list)
    for op in model.refreshes:
        a = op.args
        by_token[(a["session"], a["client"], a["reuse_id"], a["token"])].append(op)
        by_pair[(a["session"], a["client"])].append(op)

    def verifiable(pair: tuple[str, str]) -> bool:
        attaches = model.attaches.get(pair, [])
        return len(attaches) == 1 and attaches[0].ok and attaches[0].attempts == 1

    for key, ops in by_token.items():
        if not verifiable((key[0], key[1])):
            result.stats["rotation_unverifiable_tokens"] += 1
            continue
        result.stats["rotation_tokens"] += 1
        accepted = [o for o in ops if o.ok]
        unknown = [o for o in ops if o.outcome == UNKNOWN]
        reuse = [o for o in ops if o.error == "RefreshTokenReuseError"]
        seqs = tuple(o.seq for o in ops)
        if len(accepted) > allowed:
            result.violations.append(
                Violation(
                    "reuse_exceeded",
                    f"{key[0]}/{key[1]}",
                    f"token {key[3]} accepted {len(accepted)} times, at most {allowed} allowed",
                    seqs,
                )
            )
        if reuse and len(accepted) + len(unknown) < allowed:
            result.violations.append(
                Violation(
                    "reuse_inexact",
                    f"{key[0]}/{key[1]}",
                    f"token {key[3]} rejected as over-used "
                    f"after {len(accepted)} acceptances (+{len(unknown)} unknown), {allowed} allowed",
                    seqs,
                )
            )
    for pair, ops in by_pair.items():
        if not verifiable(pair):
            continue
        rejections = [o for o in ops if o.error in ("RefreshTokenReuseError", "StaleRefreshTokenError")]
        if not rejections:
            continue
        first = min(rejections, key=lambda o: o.t1)
        late = [o for o in ops if o.ok and o.t0 > first.t1]
        if late:
            result.violations.append(
                Violation(
                    "refresh_after_rejection",
                    f"{pair[0]}/{pair[1]}",
                    f"refresh accepted at "
                    f"{late[0].t0:.3f} s after a rotation rejection at {first.t1:.3f} s detached "
                    "the client session",
                    (first.seq, late[0].seq),
                )
            )


def _final_live(model: _Model) -> dict[str, Any]:
    live: dict[str, Any] = {}
    for op in model.final:
        if op.op == "list" and op.ok:
            live.update(_list_entries(op))
    return live


def _check_final_counts(model: _Model, result: CheckResult) -> None:
    live = _final_live(model)
    result.stats["final_live"] = len(live)
    for sid in live:
        s = model.sessions.get(sid)
        if s is None or not s.creates or all(c.outcome not in (OK, UNKNOWN) for c in s.creates):
            result.violations.append(
                Violation("phantom_session", sid, "live at the end but no create of it may have run")
            )
    for op in model.final:
        if op.op == "get" and op.ok and op.args["session"] not in live:
            result.violations.append(
                Violation(
                    "list_get_mismatch",
                    op.args["session"],
                    "found by the final get, missing from every final list",
                    (op.seq,),
                )
            )
        if op.op == "count" and op.ok:
            client = op.args.get("client", "")
            expected = sum(1 for e in live.values() if not client or client in e[1])
            got = int((op.result or {})["count"])
            result.stats["count_checks"] += 1
            if got != expected:
                result.violations.append(
                    Violation(
                        "count_mismatch",
                        client or "(realm)",
                        f"CountSessions on node {op.node} said {got}, the live set has {expected}",
                        (op.seq,),
                    )
                )


def _check_events(model: _Model, history: History, result: CheckResult) -> None:
    notes = history.notes
    if notes.get("watch_error"):
        result.violations.append(Violation("watch", "watcher", str(notes["watch_error"])))
    drained = bool(notes.get("watch_drained"))
    if not drained:
        result.violations.append(Violation("watch", "watcher", "did not catch up with the marker events"))
    seen: set[str] = set()
    per_session: dict[str, list[Event]] = defaultdict(list)
    for ev in history.events:
        if ev.id in seen:
            result.violations.append(
                Violation("event_duplicate", ev.session, f"event {ev.id} delivered twice")
            )
            continue
        seen.add(ev.id)
        if ev.realm == model.meta.realm:
            per_session[ev.session].append(ev)
    result.stats["events"] = len(seen)
    for sid, events in per_session.items():
        _check_session_stream(model, sid, events, result)
    if drained and model.final:
        live = _final_live(model)
        for s in model.sessions.values():
            if s.acked:
                _check_session_ending(s, per_session.get(s.sid, []), s.sid in live, result)


def _check_session_stream(model: _Model, sid: str, events: list[Event], result: CheckResult) -> None:
    """One session's events: a create could have made it, once created, once ended, in order, with a cause."""
    s = model.sessions.get(sid)
    if s is None or not s.creates or all(c.outcome not in (OK, UNKNOWN) for c in s.creates):
        result.violations.append(
            Violation("event_phantom", sid, f"{events[0].kind} of a session no create could have made")
        )
        return
    types = [e.kind for e in events]
    if types.count("created") > 1:
        result.violations.append(Violation("event_created", sid, f"events {types}"))
    endings = [i for i, t in enumerate(types) if t in ENDING_EVENTS]
    if len(endings) > 1:
        result.violations.append(Violation("event_ending", sid, f"{len(endings)} ending events: {types}"))
    # Order is promised within one shard's stream only: a session moved by resharding has events in
    # two streams, which a watch merges in no particular order.
    for shard_types in _by_shard(events).values():
        created_at = shard_types.index("created") if "created" in shard_types else -1
        ending_at = max((i for i, t in enumerate(shard_types) if t in ENDING_EVENTS), default=-1)
        if created_at > 0 or (ending_at >= 0 and ending_at != len(shard_types) - 1):
            result.violations.append(Violation("event_order", sid, f"events {types}"))
            break
    if "created" not in types:
        result.violations.append(Violation("event_order", sid, f"no created event: {types}"))
    if endings:
        _check_ending_cause(model, s, events[endings[0]], result)


def _check_session_ending(s: _Session, events: list[Event], live: bool, result: CheckResult) -> None:
    """An acknowledged session after the drain: one created event; ended exactly when dead, as its
    acknowledged logout or eviction says."""
    created = sum(1 for e in events if e.kind == "created")
    ending = [e for e in events if e.kind in ENDING_EVENTS]
    if created != 1:
        result.violations.append(
            Violation("event_created", s.sid, f"{created} created events for an acknowledged create")
        )
    if live and ending:
        result.violations.append(Violation("event_ending", s.sid, f"live at the end but {ending[0].kind}"))
    if not live and not ending:
        result.violations.append(Violation("event_ending", s.sid, "dead at the end without an ending event"))
    if not ending:
        return
    kind, reason = ending[0].kind, ending[0].reason
    for lo in s.logouts:
        if lo.ok and (lo.result or {}).get("removed"):
            want = ("revoked", "admin") if lo.args.get("admin") else ("logged_out", "")
            if (kind, reason if want[0] == "revoked" else "") != want:
                result.violations.append(
                    Violation(
                        "event_unexplained",
                        s.sid,
                        f"logout removed it but its ending event is {kind} {reason}",
                        (lo.seq,),
                    )
                )
    if any(e.ok for e in s.evicted_by) and (kind, reason) != ("revoked", "limit"):
        result.violations.append(
            Violation("event_unexplained", s.sid, f"evicted but its ending event is {kind} {reason}")
        )


def _by_shard(events: Sequence[Event]) -> dict[str, list[str]]:
    """Event kinds per shard stream (an event id is ``<shard identity>/<stream id>``), in order."""
    out: dict[str, list[str]] = defaultdict(list)
    for e in events:
        out[e.id.split("/", 1)[0]].append(e.kind)
    return out


def _check_ending_cause(model: _Model, s: _Session, ev: Event, result: CheckResult) -> None:
    result.stats["ending_events"] += 1
    causes: Iterable[Op]
    if ev.kind == "logged_out":
        causes = [o for o in s.logouts if not o.args.get("admin")]
    elif ev.kind == "revoked" and ev.reason == "admin":
        causes = [o for o in s.logouts if o.args.get("admin")]
    elif ev.kind == "revoked" and ev.reason == "user":
        causes = model.revokes.get(s.user, [])
    elif ev.kind == "revoked" and ev.reason == "limit":
        causes = model.limited.get(s.user, [])
    elif ev.kind == "expired":
        if s.acked and ev.at_ms < model.deadline_low(s) - MARGIN_MS:
            result.violations.append(
                Violation(
                    "event_unexplained",
                    s.sid,
                    f"expired at clock {ev.at_ms} before its reported deadline {model.deadline_low(s)}",
                )
            )
        return
    else:
        causes = []
    if not list(causes):
        result.violations.append(
            Violation(
                "event_unexplained", s.sid, f"{ev.kind} {ev.reason} with no operation that could cause it"
            )
        )
