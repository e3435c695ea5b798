"""The storm checker (cluster_tests.checker) on hand-made histories: a clean one passes, and each kind
of violation, planted alone into it, is flagged. Pure: no Redis, no server."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from cluster_tests.checker import ClockModel, check
from cluster_tests.history import (
    FAIL,
    OK,
    UNKNOWN,
    ClockChange,
    Event,
    History,
    Meta,
    Op,
    classify,
    dumps,
    parse_lines,
)
from session_store.errors import (
    PartitionMovedError,
    SessionLimitExceededError,
    SessionNotFoundError,
    SessionStoreError,
    ShardUnavailableError,
    StaleRefreshTokenError,
    UnavailableError,
)

REALM = "r"
C0 = 1_000_000_000_000
"""The test clock at the start of every hand-made run (epoch ms)."""
IDLE, MAX = 1800, 3600


class Run:
    """A hand-made history: the clean run of `clean()`, which tests then spoil one way each."""

    def __init__(self) -> None:
        """Empty, with the meta every test shares."""
        self.meta = Meta(
            scenario="hand-made",
            realm=REALM,
            marker_realm="m",
            clients=("app",),
            users=("alice", "bob", "lim"),
            idle_s=IDLE,
            max_s=MAX,
            max_reuse=1,
            limits={"lim": (2, "deny")},
            initial_clock_ms=C0,
        )
        self.ops: list[Op] = []
        self.events: list[Event] = []
        self.clocks: list[ClockChange] = []
        self.notes: dict[str, Any] = {"watch_drained": True, "watch_error": ""}

    def op(
        self,
        op: str,
        t0: float,
        t1: float,
        args: Mapping[str, Any],
        *,
        outcome: str = OK,
        result: Mapping[str, Any] | None = None,
        error: str = "",
        attempts: int = 1,
        worker: str = "n0.w0",
    ) -> Op:
        """Append one operation."""
        record = Op(
            seq=len(self.ops) + 1,
            worker=worker,
            node=0,
            op=op,
            args={"realm": REALM, **args},
            t0=t0,
            t1=t1,
            outcome=outcome,
            result=result if outcome == OK else None,
            error=error,
            attempts=attempts,
        )
        self.ops.append(record)
        return record

    def create(
        self,
        sid: str,
        user: str,
        t0: float,
        *,
        limit: int = 0,
        evicted: Sequence[str] = (),
        outcome: str = OK,
        expires_at_ms: int = C0 + IDLE * 1000,
    ) -> Op:
        """A login's CreateUserSession (acknowledged 0.1 s later) at the initial clock."""
        return self.op(
            "create",
            t0,
            t0 + 0.1,
            {"user": user, "session": sid, "limit": limit, "behavior": "deny" if limit else ""},
            outcome=outcome,
            result={
                "started": C0 // 1000,
                "expires_at_ms": expires_at_ms,
                "lr": C0 // 1000,
                "evicted": list(evicted),
            },
            error=""
            if outcome == OK
            else ("SessionLimitExceededError" if outcome == FAIL else "UnavailableError"),
        )

    def attach(self, sid: str, t0: float, *, attempts: int = 1) -> Op:
        """The login's AttachClientSession of client "app"."""
        return self.op(
            "attach",
            t0,
            t0 + 0.1,
            {"session": sid, "client": "app"},
            result={"started": C0 // 1000, "expires_at_ms": C0 + IDLE * 1000},
            attempts=attempts,
        )

    def get(self, sid: str, t0: float, *, found: bool = True, worker: str = "n0.w0") -> Op:
        """A GetUserSession that found the session (or NOT_FOUND)."""
        return self.op(
            "get",
            t0,
            t0 + 0.1,
            {"session": sid},
            outcome=OK if found else FAIL,
            result={"expires_at_ms": C0 + IDLE * 1000, "lr": C0 // 1000},
            error="" if found else "SessionNotFoundError",
            worker=worker,
        )

    def refresh(
        self, sid: str, token: str, t0: float, *, outcome: str = OK, error: str = "", iat: int = 0
    ) -> Op:
        """A UseRefreshToken of `token` on chain "chain" of client "app"."""
        return self.op(
            "refresh",
            t0,
            t0 + 0.1,
            {"session": sid, "client": "app", "token": token, "reuse_id": "chain", "iat": iat},
            outcome=outcome,
            result={"use_count": 1, "expires_at_ms": C0 + IDLE * 1000},
            error=error,
        )

    def logout(self, sid: str, t0: float, *, removed: bool = True, outcome: str = OK) -> Op:
        """A RemoveUserSession (a user's logout)."""
        return self.op(
            "logout",
            t0,
            t0 + 0.1,
            {"session": sid, "admin": False},
            outcome=outcome,
            result={"removed": removed},
            error="" if outcome == OK else "UnavailableError",
        )

    def listed(self, user: str, sids: Sequence[str], t0: float, *, worker: str = "n0.w0") -> Op:
        """A ListUserSessions showing `sids` (each with client "app")."""
        return self.op(
            "list",
            t0,
            t0 + 0.1,
            {"user": user},
            result={"sessions": {s: [C0 + IDLE * 1000, ["app"]] for s in sids}},
            worker=worker,
        )

    def event(
        self, kind: str, sid: str, user: str, *, reason: str = "", at_ms: int = C0, eid: str = ""
    ) -> None:
        """A watched event of realm r."""
        self.events.append(
            Event(
                t=0.0,
                id=eid or f"shard/{len(self.events) + 1}-0",
                kind=kind,
                realm=REALM,
                user=user,
                session=sid,
                reason=reason,
                at_ms=at_ms,
            )
        )

    def final(
        self, live: Mapping[str, Sequence[str]], dead: Sequence[str], count: int, t0: float = 20.0
    ) -> None:
        """The final read: every user's list, a get of every dead session, the counts."""
        for user in self.meta.users:
            self.listed(user, live.get(user, ()), t0, worker="final")
        for sid in dead:
            self.get(sid, t0 + 1, found=False, worker="final")
        for client in ("", "app"):
            self.op("count", t0 + 2, t0 + 2.1, {"client": client}, result={"count": count}, worker="final")

    def history(self) -> History:
        """The history, written as JSONL and parsed back (the path a real run takes)."""
        lines = [dumps("meta", self.meta)]
        lines += [dumps("op", o) for o in sorted(self.ops, key=lambda o: o.seq)]
        lines += [dumps("clock", c) for c in self.clocks]
        lines += [dumps("event", e) for e in self.events]
        lines.append(dumps_note(self.notes))
        return parse_lines(lines)


def dumps_note(notes: Mapping[str, Any]) -> str:
    """A note record."""
    return json.dumps({"type": "note", **notes})


def clean() -> Run:
    """Three users: alice's session lives on (touched, refreshed twice), bob logs out, lim (limit 2) logs in
    once; the final read and the events agree with all of it."""
    run = Run()
    run.create("S1", "alice", 1.0)
    run.attach("S1", 1.2)
    run.event("created", "S1", "alice")
    run.event("client_attached", "S1", "alice")
    run.op(
        "touch",
        2.0,
        2.1,
        {"session": "S1", "client": "app"},
        result={"expires_at_ms": C0 + IDLE * 1000, "lr": C0 // 1000},
    )
    run.refresh("S1", "T1", 3.0)
    run.refresh("S1", "T2", 4.0, iat=1)
    run.create("S2", "bob", 1.5)
    run.attach("S2", 1.7)
    run.event("created", "S2", "bob")
    run.event("client_attached", "S2", "bob")
    run.logout("S2", 5.0)
    run.event("logged_out", "S2", "bob")
    run.create("S3", "lim", 2.0, limit=2)
    run.attach("S3", 2.2)
    run.event("created", "S3", "lim")
    run.event("client_attached", "S3", "lim")
    run.listed("lim", ["S3"], 6.0)
    run.final({"alice": ["S1"], "lim": ["S3"]}, ["S2"], count=2)
    return run


def kinds(run: Run) -> set[str]:
    """The kinds of violation the checker finds in the run."""
    return {v.kind for v in check(run.history()).violations}


class TestCleanHistory:
    def test_a_clean_history_has_no_violation(self) -> None:
        """The clean run passes, and the checker saw what it was meant to check."""
        result = check(clean().history())
        assert [] == result.violations
        assert 3 == result.stats["acknowledged_sessions"]
        assert 2 == result.stats["final_live"]
        assert 2 == result.stats["count_checks"]
        assert 2 == result.stats["rotation_tokens"]

    def test_a_history_without_final_read_fails(self) -> None:
        """Nothing can be verified without the final read: that is a violation, not a pass."""
        run = clean()
        run.ops = [o for o in run.ops if o.worker != "final"]
        assert "final_read" in kinds(run)

    def test_a_failed_final_read_fails(self) -> None:
        """A final list of unknown outcome leaves the live set unknown."""
        run = clean()
        run.op(
            "list", 21.0, 21.1, {"user": "alice"}, outcome=UNKNOWN, error="UnavailableError", worker="final"
        )
        assert "final_read" in kinds(run)


class TestResharding:
    def test_a_moved_or_frozen_answer_reaching_the_caller_is_a_violation(self) -> None:
        """The service retries moved/frozen partitions itself: a caller seeing one is a violation."""
        for error in ("PartitionMovedError", "PartitionFrozenError"):
            run = clean()
            run.op("count", 6.0, 6.1, {"client": ""}, outcome=FAIL, error=error)
            assert {"reshard_visible"} == kinds(run)


class TestLost:
    def test_an_acknowledged_session_not_found_later_is_lost(self) -> None:
        """A get NOT_FOUND with no logout, revoke, eviction or expiry possible is a lost session."""
        run = clean()
        run.create("S4", "alice", 7.0)
        run.get("S4", 8.0, found=False)
        assert {"lost"} <= kinds(run)

    def test_a_session_missing_from_the_final_read_is_lost(self) -> None:
        """Absent from its user's final list with nothing to explain it: lost (and counted as such)."""
        run = clean()
        run.create("S4", "bob", 7.0)
        run.event("created", "S4", "bob")
        assert "lost" in kinds(run)

    def test_a_logout_of_unknown_outcome_explains_the_absence(self) -> None:
        """A logout that may have run is enough: nothing is flagged as lost."""
        run = clean()
        run.create("S4", "bob", 7.0)
        run.event("created", "S4", "bob")
        run.logout("S4", 8.0, outcome=UNKNOWN)
        run.event("logged_out", "S4", "bob")
        assert "lost" not in kinds(run)

    def test_a_revoke_all_of_the_user_explains_the_absence(self) -> None:
        """RemoveUserSessions of the user, invoked before the observation, may have removed it."""
        run = clean()
        run.create("S4", "bob", 7.0)
        run.event("created", "S4", "bob")
        run.op("revoke_all", 8.0, 8.1, {"user": "bob"}, result={"removed": 1})
        run.event("revoked", "S4", "bob", reason="user")
        assert [] == check(run.history()).violations

    def test_an_observation_overlapping_the_create_proves_nothing(self) -> None:
        """A get that may have run before the create is not a loss."""
        run = clean()
        run.create("S4", "alice", 7.0)
        run.get("S4", 7.05, found=False)
        run.get("S4", 7.5)
        run.event("created", "S4", "alice")
        run.ops = [o for o in run.ops if not (o.worker == "final" and o.args.get("user") == "alice")]
        run.listed("alice", ["S1", "S4"], 20.0, worker="final")
        run.ops = [o for o in run.ops if o.op != "count"]
        for client in ("", "app"):
            run.op("count", 22.0, 22.1, {"client": client}, result={"count": 3}, worker="final")
        assert [] == check(run.history()).violations

    def test_a_possible_expiry_explains_the_absence(self) -> None:
        """Once a clock jump reached the deadline the store reported for it, its absence is its expiry."""
        run = clean()
        run.create("S4", "bob", 7.0, expires_at_ms=C0 + 60_000)
        run.event("created", "S4", "bob")
        run.clocks.append(ClockChange(t0=9.0, t1=9.1, from_ms=C0, to_ms=C0 + 100_000, low_ms=C0))
        run.get("S4", 11.0, found=False)
        run.event("expired", "S4", "bob", at_ms=C0 + 100_000)
        assert [] == check(run.history()).violations

    def test_before_the_clock_reaches_the_deadline_the_absence_is_a_loss(self) -> None:
        """The same absence with the clock short of the reported deadline is a lost session."""
        run = clean()
        run.create("S4", "bob", 7.0, expires_at_ms=C0 + 60_000)
        run.event("created", "S4", "bob")
        run.clocks.append(ClockChange(t0=9.0, t1=9.1, from_ms=C0, to_ms=C0 + 50_000, low_ms=C0))
        run.get("S4", 11.0, found=False)
        run.event("expired", "S4", "bob", at_ms=C0 + 50_000)
        assert {"lost", "event_unexplained"} == kinds(run)


class TestReadAfterEnd:
    def test_readable_after_an_acknowledged_logout(self) -> None:
        """A get invoked after the logout was acknowledged must not find the session."""
        run = clean()
        run.get("S2", 5.5)
        assert "read_after_end" in kinds(run)

    def test_a_read_racing_the_logout_is_allowed(self) -> None:
        """A get invoked before the logout's acknowledgement may precede it."""
        run = clean()
        run.get("S2", 5.05)
        assert "read_after_end" not in kinds(run)

    def test_readable_after_an_acknowledged_revoke_all(self) -> None:
        """RemoveUserSessions ends every session whose create was acknowledged before it was invoked."""
        run = clean()
        run.op("revoke_all", 7.0, 7.1, {"user": "alice"}, result={"removed": 1})
        run.get("S1", 8.0)
        assert "read_after_end" in kinds(run)

    def test_readable_after_its_eviction(self) -> None:
        """A session a limited login named as evicted is gone."""
        run = clean()
        run.create("S5", "lim", 7.0, limit=2, evicted=["S3"])
        run.get("S3", 8.0)
        assert "read_after_end" in kinds(run)

    def test_readable_after_it_must_have_expired(self) -> None:
        """Found alive when every node's clock is past its latest possible deadline: a resurrection."""
        run = clean()
        run.clocks.append(ClockChange(t0=9.0, t1=9.1, from_ms=C0, to_ms=C0 + 4_000_000, low_ms=C0))
        run.get("S1", 10.0)
        assert "read_after_end" in kinds(run)

    def test_a_restarted_node_may_use_a_lower_clock_inside_the_window(self) -> None:
        """Inside a clock change whose window allows a low clock, alive is not a violation."""
        run = clean()
        run.clocks.append(ClockChange(t0=9.0, t1=11.0, from_ms=C0, to_ms=C0 + 4_000_000, low_ms=C0))
        inside = run.get("S1", 10.0)
        after = run.get("S1", 12.0)
        flagged = {s for v in check(run.history()).violations if v.kind == "read_after_end" for s in v.seqs}
        assert inside.seq not in flagged
        assert after.seq in flagged


class TestLimits:
    def test_a_list_over_the_limit_is_flagged(self) -> None:
        """Three live sessions of a user limited to two."""
        run = clean()
        run.listed("lim", ["S3", "X", "Y"], 7.0)
        assert "limit_exceeded" in kinds(run)

    def test_a_denied_login_is_not_a_violation(self) -> None:
        """A limit denial is the limiter working."""
        run = clean()
        run.create("S6", "lim", 7.0, limit=2, outcome=FAIL)
        run.listed("lim", ["S3"], 8.0)
        assert [] == check(run.history()).violations


class TestRotation:
    def test_a_token_accepted_too_often(self) -> None:
        """max_reuse 1: a token may be accepted twice, not three times."""
        run = clean()
        for t in (6.0, 6.2, 6.4):
            run.refresh("S1", "T3", t, iat=2)
        assert "reuse_exceeded" in kinds(run)

    def test_a_reuse_rejection_before_the_allowed_uses(self) -> None:
        """Rejected as over-used after one acceptance, with max_reuse 1: not exact."""
        run = clean()
        run.refresh("S1", "T3", 6.0, iat=2)
        run.refresh("S1", "T3", 6.2, iat=2, outcome=FAIL, error="RefreshTokenReuseError")
        assert "reuse_inexact" in kinds(run)

    def test_an_unknown_use_may_be_the_missing_acceptance(self) -> None:
        """One acceptance plus one use of unknown outcome can make the two allowed: no violation."""
        run = clean()
        run.refresh("S1", "T3", 6.0, iat=2)
        run.refresh("S1", "T3", 6.2, iat=2, outcome=UNKNOWN, error="UnavailableError")
        run.refresh("S1", "T3", 6.4, iat=2, outcome=FAIL, error="RefreshTokenReuseError")
        assert [] == check(run.history()).violations

    def test_an_exact_reuse_rejection_passes(self) -> None:
        """Two acceptances, then the rejection: exactly as Keycloak allows."""
        run = clean()
        run.refresh("S1", "T3", 6.0, iat=2)
        run.refresh("S1", "T3", 6.2, iat=2)
        run.refresh("S1", "T3", 6.4, iat=2, outcome=FAIL, error="RefreshTokenReuseError")
        assert [] == check(run.history()).violations

    def test_a_refresh_accepted_after_rotation_detached_the_client(self) -> None:
        """A rejection detaches the client session: a later refresh of it cannot succeed."""
        run = clean()
        run.refresh("S1", "T1", 6.0, outcome=FAIL, error="StaleRefreshTokenError")
        run.refresh("S1", "T9", 7.0, iat=3)
        assert "refresh_after_rejection" in kinds(run)

    def test_a_retried_attach_makes_the_pair_unverifiable(self) -> None:
        """An attach with several attempts may run again late and reset the chain: not judged."""
        run = clean()
        run.attach("S1", 1.25, attempts=2)
        for t in (6.0, 6.2, 6.4):
            run.refresh("S1", "T3", t, iat=2)
        result = check(run.history())
        assert "reuse_exceeded" not in {v.kind for v in result.violations}
        assert result.stats["rotation_unverifiable_tokens"] > 0


class TestFinalState:
    def test_count_differs_from_the_live_set(self) -> None:
        """CountSessions must equal the live set of the final lists."""
        run = clean()
        run.op("count", 23.0, 23.1, {"client": ""}, result={"count": 3}, worker="final")
        assert "count_mismatch" in kinds(run)

    def test_a_live_session_nobody_created(self) -> None:
        """A session in the final lists without a create that may have run."""
        run = clean()
        run.listed("bob", ["GHOST"], 21.0, worker="final")
        assert "phantom_session" in kinds(run)

    def test_a_session_whose_create_was_denied_is_a_phantom(self) -> None:
        """A create that definitely failed made nothing."""
        run = clean()
        run.create("S6", "bob", 7.0, outcome=FAIL)
        run.listed("bob", ["S6"], 21.0, worker="final")
        assert "phantom_session" in kinds(run)

    def test_a_get_finds_what_no_list_showed(self) -> None:
        """The final get of a session absent from every final list must not find it."""
        run = clean()
        run.get("S2", 22.0, worker="final")
        assert "list_get_mismatch" in kinds(run)


class TestEvents:
    def test_an_event_delivered_twice(self) -> None:
        """The same event id twice is a duplicate delivery."""
        run = clean()
        run.events.append(run.events[0])
        assert "event_duplicate" in kinds(run)

    def test_an_acknowledged_create_without_created_event(self) -> None:
        """Every acknowledged create appends exactly one created event."""
        run = clean()
        run.events = [e for e in run.events if not (e.session == "S3" and e.kind == "created")]
        assert "event_created" in kinds(run) or "event_order" in kinds(run)

    def test_two_ending_events(self) -> None:
        """A session ends once."""
        run = clean()
        run.event("expired", "S2", "bob")
        assert "event_ending" in kinds(run)

    def test_a_dead_session_without_ending_event(self) -> None:
        """A session dead at the end must have its ending event."""
        run = clean()
        run.events = [e for e in run.events if e.kind != "logged_out"]
        assert "event_ending" in kinds(run)

    def test_a_live_session_with_an_ending_event(self) -> None:
        """A session live at the end has not ended."""
        run = clean()
        run.op(
            "logout", 9.0, 9.1, {"session": "S1", "admin": False}, outcome=UNKNOWN, error="UnavailableError"
        )
        run.event("logged_out", "S1", "alice")
        assert "event_ending" in kinds(run)

    def test_an_event_after_the_ending_one(self) -> None:
        """Nothing happens to a session after it ended."""
        run = clean()
        run.event("client_attached", "S2", "bob")
        assert "event_order" in kinds(run)

    def test_events_of_a_moved_session_may_interleave_across_shards(self) -> None:
        """A session moved by resharding has events in two streams: their merge order is free."""
        run = clean()
        run.events = [e for e in run.events if e.session != "S2"]
        run.event("logged_out", "S2", "bob", eid="new-shard/5-0")
        run.event("created", "S2", "bob", eid="old-shard/1-0")
        run.event("client_attached", "S2", "bob", eid="old-shard/2-0")
        assert [] == check(run.history()).violations

    def test_a_logout_event_without_a_logout(self) -> None:
        """logged_out needs a logout call of that session."""
        run = clean()
        run.ops = [o for o in run.ops if o.op != "logout"]
        run.create("S7", "bob", 7.0)
        run.event("created", "S7", "bob")
        run.event("logged_out", "S7", "bob")
        run.get("S7", 9.0, found=False)
        assert "event_unexplained" in kinds(run)

    def test_an_expiry_before_the_reported_deadline(self) -> None:
        """An expired event decided before the deadline the store reported is premature."""
        run = clean()
        run.event("expired", "S1", "alice", at_ms=C0 + 1000)
        assert "event_unexplained" in kinds(run)

    def test_an_event_of_a_session_nobody_created(self) -> None:
        """Events of a session with no create in the history."""
        run = clean()
        run.event("created", "GHOST", "bob")
        assert "event_phantom" in kinds(run)

    def test_a_watcher_that_did_not_drain(self) -> None:
        """Without the marker events nothing about events can be concluded: a violation."""
        run = clean()
        run.notes["watch_drained"] = False
        assert "watch" in kinds(run)


class TestClockModel:
    def test_high_and_low_follow_the_windows(self) -> None:
        """Before a change the old value; inside its window anything from low to the new value."""
        model = ClockModel(100, [ClockChange(t0=10, t1=12, from_ms=100, to_ms=500, low_ms=50)])
        assert (100, 100) == (model.high(5), model.low(4, 5))
        assert (500, 50) == (model.high(11), model.low(11, 11))
        assert (500, 500) == (model.high(13), model.low(13, 14))
        assert 50 == model.low(9, 13)


class TestClassify:
    @pytest.mark.parametrize(
        ("exc", "outcome"),
        [
            (SessionNotFoundError("x"), FAIL),
            (SessionLimitExceededError("x"), FAIL),
            (StaleRefreshTokenError("x"), FAIL),
            (PartitionMovedError("x"), FAIL),
            (UnavailableError("x"), UNKNOWN),
            (ShardUnavailableError("x"), UNKNOWN),
            (SessionStoreError("internal"), UNKNOWN),
            (RuntimeError("x"), UNKNOWN),
        ],
    )
    def test_only_errors_that_prove_the_outcome_are_failures(self, exc: BaseException, outcome: str) -> None:
        """UNAVAILABLE and INTERNAL leave the outcome open; business errors and not-executed proofs do not."""
        assert outcome == classify(exc)
