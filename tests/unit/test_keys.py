"""The key layout (storage.keys): one Redis Cluster slot per partition, for every key and script call.

The last class drives the real ``SessionRepository`` with its one I/O method, ``_call``, replaced
by a recorder, so the key lists checked are the ones the repository builds, not copies of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from session_store.errors import InvalidArgumentError
from session_store.model.clock import TestClock
from session_store.model.ids import (
    PARTITION_COUNT,
    home_partition,
    mint_session_id,
    user_partition,
    validate_id,
)
from session_store.model.policy import RealmPolicy, effective_policy
from session_store.model.session import NewClientSession, NewUserSession
from session_store.storage import keys
from session_store.storage._errors import RedirectError
from session_store.storage.policies import CachedPolicy, PolicyStore, policy_args
from session_store.storage.router import Router
from session_store.storage.sessions import SessionRepository

partitions = st.integers(0, PARTITION_COUNT - 1)


def _is_valid_id(value: str) -> bool:
    try:
        validate_id(value, "id")
    except InvalidArgumentError:
        return False
    return True


# Ids valid per model.ids.validate_id (braces included: they must not disturb the hash tag).
valid_ids = st.one_of(
    st.text(min_size=1, max_size=40),
    st.text(st.sampled_from("{}:.-_ab"), min_size=1, max_size=12),
).filter(_is_valid_id)
broker_ids = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60)


def slot(key: str) -> int:
    """The Redis Cluster hash slot of a key."""
    return key_slot(key.encode())


@dataclass(frozen=True)
class Ids:
    """The ids that go into the keys of one partition."""

    realm: str
    user_id: str
    session_id: str
    broker_session: str
    broker_user: str


any_ids = st.builds(
    Ids,
    realm=valid_ids,
    user_id=valid_ids,
    session_id=valid_ids,
    broker_session=broker_ids,
    broker_user=broker_ids,
)


def all_partition_keys(partition: int, ids: Ids) -> list[str]:
    """Every kind of key one partition holds, online and offline."""
    result = [
        keys.pointer(partition, ids.session_id),
        keys.broker_session_hints(partition, ids.realm, ids.broker_session),
        keys.expiry_index(partition),
        keys.expiry_meta(partition),
    ]
    for offline in (False, True):
        result += [
            keys.session(partition, ids.session_id, offline=offline),
            keys.user_index(partition, ids.realm, ids.user_id, offline=offline),
            keys.realm_index(partition, ids.realm, offline=offline),
            keys.client_index(partition, ids.realm, offline=offline),
            keys.broker_user_hints(partition, ids.realm, ids.broker_user, offline=offline),
        ]
    return result


class TestPartitionKeys:
    @given(partition=partitions, ids=any_ids)
    def test_every_key_of_a_partition_is_in_the_partitions_slot(self, partition: int, ids: Ids) -> None:
        """Whatever the ids hold, every key of one partition hashes to the slot of that partition's tag."""
        built = all_partition_keys(partition, ids)

        assert {slot(keys.tag(partition))} == {slot(k) for k in built}

    @given(partition=partitions, ids=any_ids)
    def test_partition_of_inverts_the_tag(self, partition: int, ids: Ids) -> None:
        """Every partitioned key names its partition back."""
        built = all_partition_keys(partition, ids)

        assert [partition] * len(built) == [keys.partition_of(k) for k in built]

    @given(partition=partitions, ids=any_ids)
    def test_kinds_of_key_never_collide(self, partition: int, ids: Ids) -> None:
        """The kinds of key of one partition are all distinct from each other."""
        built = all_partition_keys(partition, ids)

        assert len(built) == len(set(built))

    @given(
        partition=partitions,
        first=st.tuples(valid_ids, valid_ids),
        second=st.tuples(valid_ids, valid_ids),
    )
    def test_user_index_keys_of_different_users_differ(
        self, partition: int, first: tuple[str, str], second: tuple[str, str]
    ) -> None:
        """Two different (realm, user) pairs never share a user index key."""
        key_a = keys.user_index(partition, *first, offline=False)
        key_b = keys.user_index(partition, *second, offline=False)

        assert (first == second) == (key_a == key_b)

    @pytest.mark.parametrize("partition", [-1, PARTITION_COUNT])
    def test_tag_of_partition_out_of_range_is_rejected(self, partition: int) -> None:
        """A key for a partition outside 0..4095 cannot be built."""
        with pytest.raises(ValueError, match="out of range"):
            keys.tag(partition)

    def test_tag_format(self) -> None:
        """A partition's tag is its number in three lowercase hex digits between braces."""
        assert ["ss:{000}:", "ss:{0ab}:", "ss:{fff}:"] == [keys.tag(p) for p in (0, 0xAB, 0xFFF)]


class TestPartitionOf:
    @pytest.mark.parametrize(
        "key",
        [
            "ss:policy:master",
            "",
            "ss:",
            "ss:{",
            "ss:{1",
            "ss:{12",
            "ss:{123",
            "ss:{1234}:s:x",
            "ss:{xyz}:s:x",
            "ss:{-01}:s:x",
            "ss:{ 1f}:s:x",
            "ss:{0_1}:s:x",
            "ss:{ABC}:s:x",
            "other:{123}:s:x",
        ],
    )
    def test_key_without_a_partition_tag_is_rejected(self, key: str) -> None:
        """A key that does not start with a canonical partition tag raises ValueError."""
        with pytest.raises(ValueError, match="not a partitioned key"):
            keys.partition_of(key)

    @given(key=st.text(max_size=20))
    def test_any_text_is_a_partitioned_key_or_rejected(self, key: str) -> None:
        """For any text, partition_of answers a partition whose tag (in one of the layouts) starts the
        key, or raises ValueError."""
        try:
            partition = keys.partition_of(key)
        except ValueError:
            return
        tags = {keys.tag(partition)} | {
            keys.in_group(keys.tag(partition), keys.group_of(partition, g), g) for g in keys.GROUP_COUNTS
        }
        assert any(key.startswith(t) for t in tags)

    def test_policy_key_is_not_partitioned(self) -> None:
        """The realm policy key lives on every shard and carries no partition tag."""
        assert "ss:policy:master" == keys.realm_policy("master")


# --- the key lists of SessionRepository's script calls ----------------------------------------


@dataclass(frozen=True)
class Call:
    """One script call: the partition whose shard runs it, the script, its KEYS."""

    partition: int
    script: str
    keys: tuple[str, ...]


class CallRecordedError(Exception):
    """Raised by the recorder to end an operation once its script call is recorded."""


class DefaultPolicies(PolicyStore):
    """Keycloak's default policy (remember-me allowed) for every realm, without a shard."""

    async def get(self, realm: str) -> CachedPolicy:
        """The default policy of `realm`."""
        policy = RealmPolicy(realm=realm, remember_me=True)
        effective = effective_policy(policy)
        return CachedPolicy(policy, effective, policy_args(effective), 0)


class RecordingRepository(SessionRepository):
    """The real repository with `_call` recording each script call instead of running it."""

    def __init__(self, *, redirect_to: int | None = None, stale_ids: Sequence[str] = ()) -> None:
        """Record calls; optionally redirect the first by-id call, or report a stale user index once."""
        # `_call` is the repository's only path to a shard for the operations recorded here.
        no_router = cast("Router", None)
        super().__init__(no_router, DefaultPolicies(no_router), TestClock(start_ms=1_700_000_000_000))
        self.calls: list[Call] = []
        self._redirect_to = redirect_to
        self._stale_ids = list(stale_ids)
        self.online_user = ("realm", "user", "")

    async def _call(self, partition: int, script: str, keys_: Sequence[str], args: Sequence[str]) -> Any:
        self.calls.append(Call(partition, script, tuple(keys_)))
        if script in ("claim_session_id", "add_lookup_hint"):
            return 1
        if self._redirect_to is not None:
            target, self._redirect_to = self._redirect_to, None
            raise RedirectError(target)
        if self._stale_ids:
            ids, self._stale_ids = self._stale_ids, []
            return ["stale", *ids]
        if script == "get_user_session":
            realm, user, broker_user = self.online_user
            fields = ["realm", realm, "user", user, "st", "1", "lr", "1", "bu", broker_user]
            return [keys_[0].split(":", 3)[3], "0", fields, []]
        raise CallRecordedError(script)


def assert_one_slot_per_call(calls: Sequence[Call]) -> None:
    """Every call's partition keys are in the partition of the shard it is sent to, so in one slot;
    besides them a call may only take the shard's own event keys (keys.SHARD_KEYS)."""
    assert calls
    for call in calls:
        partitioned = [k for k in call.keys if k not in keys.SHARD_KEYS]
        assert partitioned, call
        assert [call.partition] * len(partitioned) == [keys.partition_of(k) for k in partitioned], call
        assert {slot(keys.tag(call.partition))} == {slot(k) for k in partitioned}, call
        # The Redis Cluster backend: every key of the call, the guard's and the shard's included, in
        # the grouped layout of the call's group shares that group's one slot.
        for groups in keys.GROUP_COUNTS:
            group = keys.group_of(call.partition, groups)
            grouped = [keys.in_group(k, group, groups) for k in (*call.keys, *keys.GUARD_KEYS)]
            assert {slot(keys.group_tag(group, groups))} == {slot(k) for k in grouped}, call


def redirect_target(session_id: str) -> int:
    """Some partition other than the id's home partition."""
    return (home_partition(session_id) + 1) % PARTITION_COUNT


ids_and_realms = {"realm": valid_ids, "session_id": valid_ids}
SCRIPT_CALLS = settings(max_examples=25)


class TestScriptCallKeys:
    @SCRIPT_CALLS
    @given(**ids_and_realms, offline=st.booleans(), redirected=st.booleans())
    async def test_touch_user_session(
        self, realm: str, session_id: str, offline: bool, redirected: bool
    ) -> None:
        """touch_user_session sends session, pointer, realm and client index keys of one slot."""
        repo = RecordingRepository(redirect_to=redirect_target(session_id) if redirected else None)

        with pytest.raises(CallRecordedError):
            await repo.touch_user_session(realm, session_id, offline=offline, client_ids=["app"])

        partition = redirect_target(session_id) if redirected else home_partition(session_id)
        expected = Call(
            partition,
            "touch_user_session",
            (
                keys.session(partition, session_id, offline=offline),
                keys.pointer(partition, session_id),
                keys.realm_index(partition, realm, offline=offline),
                keys.client_index(partition, realm, offline=offline),
                *keys.event_keys(partition),
            ),
        )
        assert expected == repo.calls[-1]
        assert (2 if redirected else 1) == len(repo.calls)
        assert_one_slot_per_call(repo.calls)

    @SCRIPT_CALLS
    @given(**ids_and_realms, offline=st.booleans(), redirected=st.booleans())
    async def test_by_id_operations(
        self, realm: str, session_id: str, offline: bool, redirected: bool
    ) -> None:
        """Every operation on one session by id sends keys of a single slot to that slot's partition."""
        operations: list[Callable[[RecordingRepository], Awaitable[object]]] = [
            lambda r: r.get_user_session(realm, session_id, offline=offline),
            lambda r: r.update_user_session(
                realm, session_id, offline=offline, set_notes={"a": "1"}, remove_notes=["b"], state=None
            ),
            lambda r: r.remove_user_session(realm, session_id, offline=offline),
            lambda r: r.attach_client_session(
                realm, session_id, NewClientSession(client_id="app"), offline=offline
            ),
            lambda r: r.update_client_session(
                realm,
                session_id,
                "app",
                offline=offline,
                redirect_uri=None,
                action="AUTHENTICATE",
                protocol=None,
                set_notes={},
                remove_notes=[],
                timestamp=0,
            ),
            lambda r: r.detach_client_session(realm, session_id, "app", offline=offline),
        ]
        for operation in operations:
            repo = RecordingRepository(redirect_to=redirect_target(session_id) if redirected else None)

            with contextlib.suppress(CallRecordedError):
                await operation(repo)

            assert (2 if redirected else 1) == len(repo.calls)
            assert_one_slot_per_call(repo.calls)

    @SCRIPT_CALLS
    @given(realm=valid_ids, user_id=valid_ids, brought_id=st.one_of(st.none(), valid_ids), broker=broker_ids)
    async def test_create_user_session(
        self, realm: str, user_id: str, brought_id: str | None, broker: str
    ) -> None:
        """Creating a session (id claim, broker hints, the create itself) keeps each call in one slot."""
        repo = RecordingRepository()
        new = NewUserSession(realm=realm, user_id=user_id, broker_session_id=broker, broker_user_id=broker)

        with pytest.raises(CallRecordedError):
            await repo.create_user_session(new, brought_id)

        create = repo.calls[-1]
        assert ("create_user_session", user_partition(realm, user_id)) == (create.script, create.partition)
        assert_one_slot_per_call(repo.calls)

    async def test_minted_id_needs_no_claim(self) -> None:
        """A session with a minted id lives in its id's home partition: one script call, no pointer."""
        repo = RecordingRepository()

        with pytest.raises(CallRecordedError):
            await repo.create_user_session(NewUserSession(realm="master", user_id="alice"))

        assert ["create_user_session"] == [c.script for c in repo.calls]

    async def test_brought_id_elsewhere_is_claimed_in_its_home_partition(self) -> None:
        """A caller-brought id outside the user's partition is claimed by a pointer in its home partition."""
        partition = user_partition("master", "alice")
        brought = mint_session_id((partition + 7) % PARTITION_COUNT)
        repo = RecordingRepository()

        with pytest.raises(CallRecordedError):
            await repo.create_user_session(NewUserSession(realm="master", user_id="alice"), brought)

        expected = [
            Call(
                home_partition(brought),
                "claim_session_id",
                (
                    keys.pointer(home_partition(brought), brought),
                    keys.session(home_partition(brought), brought, offline=False),
                ),
            ),
            Call(
                partition,
                "create_user_session",
                (
                    keys.session(partition, brought, offline=False),
                    keys.user_index(partition, "master", "alice", offline=False),
                    keys.realm_index(partition, "master", offline=False),
                    keys.client_index(partition, "master", offline=False),
                    *keys.event_keys(partition),
                ),
            ),
        ]
        assert expected == repo.calls

    @SCRIPT_CALLS
    @given(realm=valid_ids, user_id=valid_ids, stale=st.lists(valid_ids, max_size=5), offline=st.booleans())
    async def test_per_user_operations(
        self, realm: str, user_id: str, stale: list[str], offline: bool
    ) -> None:
        """Listing or removing a user's sessions, retried with the sessions' keys, stays in one slot."""
        for operation in ("list", "remove"):
            repo = RecordingRepository(stale_ids=stale)

            call = repo.list_user_sessions if operation == "list" else repo.remove_user_sessions

            with pytest.raises(CallRecordedError):
                await call(realm, user_id, offline=offline)

            assert_one_slot_per_call(repo.calls)
            partition = user_partition(realm, user_id)
            session_keys = [keys.session(partition, sid, offline=offline) for sid in stale]
            assert session_keys == list(repo.calls[-1].keys[len(repo.calls[-1].keys) - len(stale) :])

    @SCRIPT_CALLS
    @given(realm=valid_ids, user_id=valid_ids, session_id=valid_ids, broker_user=broker_ids)
    async def test_create_offline_session(
        self, realm: str, user_id: str, session_id: str, broker_user: str
    ) -> None:
        """Copying a session offline (read, claim, hint, copy) keeps each call in one slot."""
        repo = RecordingRepository()
        repo.online_user = (realm, user_id, broker_user)

        with pytest.raises(CallRecordedError):
            await repo.create_offline_session(realm, session_id, ["app"])

        copy = repo.calls[-1]
        assert ("create_offline_session", user_partition(realm, user_id)) == (copy.script, copy.partition)
        assert 6 + len(keys.event_keys(0)) == len(copy.keys)
        assert_one_slot_per_call(repo.calls)
