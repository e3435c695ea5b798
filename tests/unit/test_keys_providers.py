"""Keys of single-use objects and login failures: one slot per partition and per script call.

The repositories run with their one I/O method, ``_call``, replaced by a recorder (as in
test_keys.py), so the key lists checked are the ones the repositories build.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from session_store.errors import InvalidArgumentError
from session_store.model.clock import TestClock
from session_store.model.ids import lookup_partition, user_partition
from session_store.model.single_use import validate_single_use_key
from session_store.storage import keys
from session_store.storage.login_failures import LoginFailureRepository
from session_store.storage.router import Router
from session_store.storage.single_use import SingleUseObjectRepository
from tests.unit.test_keys import (
    Call,
    CallRecordedError,
    DefaultPolicies,
    Ids,
    all_partition_keys,
    any_ids,
    assert_one_slot_per_call,
    partitions,
    slot,
    valid_ids,
)


def _is_valid_key(value: str) -> bool:
    try:
        validate_single_use_key(value)
    except InvalidArgumentError:
        return False
    return True


object_keys = st.one_of(
    st.text(min_size=1, max_size=60),
    st.text(st.sampled_from("{} :.-_ab"), min_size=1, max_size=12),
).filter(_is_valid_key)


def provider_keys(partition: int, realm: str, user_id: str, key: str) -> list[str]:
    """Every kind of key this work adds to a partition."""
    return [
        keys.single_use_object(partition, realm, key),
        keys.login_failure(partition, realm, user_id),
        keys.login_failure_index(partition, realm),
    ]


class TestProviderKeys:
    @given(partition=partitions, ids=any_ids, key=object_keys)
    def test_in_the_partitions_slot(self, partition: int, ids: Ids, key: str) -> None:
        """Whatever the ids and the object key hold, every key hashes to the partition's slot."""
        built = provider_keys(partition, ids.realm, ids.user_id, key)

        assert {slot(keys.tag(partition))} == {slot(k) for k in built}
        assert [partition] * len(built) == [keys.partition_of(k) for k in built]

    @given(partition=partitions, ids=any_ids, key=object_keys)
    def test_never_collide_with_session_keys(self, partition: int, ids: Ids, key: str) -> None:
        """The new kinds of key differ from each other and from every session key of the partition."""
        built = provider_keys(partition, ids.realm, ids.user_id, key) + all_partition_keys(partition, ids)

        assert len(built) == len(set(built))

    @given(realm_a=valid_ids, realm_b=valid_ids, key_a=object_keys, key_b=object_keys)
    def test_object_keys_of_different_realm_key_pairs_differ(
        self, realm_a: str, realm_b: str, key_a: str, key_b: str
    ) -> None:
        """Two (realm, key) pairs share a Redis key only when they are the same pair."""
        same = keys.single_use_object(0, realm_a, key_a) == keys.single_use_object(0, realm_b, key_b)

        assert ((realm_a, key_a) == (realm_b, key_b)) == same


class Recorder:
    """The `_call` of a repository, recording each script call and answering like its script."""

    def __init__(self) -> None:
        """Nothing recorded yet."""
        self.calls: list[Call] = []

    async def __call__(self, partition: int, script: str, keys_: Sequence[str], args: Sequence[str]) -> Any:
        """Record the call; answer what the script would for an empty shard."""
        self.calls.append(Call(partition, script, tuple(keys_)))
        if script == "record_login_failure":
            return [1, 0, 1, "", 0, 1]
        if script == "put_single_use_object":
            return 1
        if script in ("get_single_use_object", "take_single_use_object", "get_login_failure"):
            raise CallRecordedError(script)
        return 0


SCRIPT_CALLS = settings(max_examples=25)
_NO_ROUTER = cast("Router", None)


class TestScriptCallKeys:
    @SCRIPT_CALLS
    @given(realm=valid_ids, key=object_keys)
    async def test_single_use_operations(self, realm: str, key: str) -> None:
        """Every single-use operation sends the object's one key to the object's partition."""
        repo = SingleUseObjectRepository(_NO_ROUTER, TestClock(start_ms=1_700_000_000_000))
        recorder = Recorder()
        repo._call = recorder  # type: ignore[method-assign]  # the one I/O method, recorded
        operations: list[Callable[[], Awaitable[object]]] = [
            lambda: repo.put_single_use_object(realm, key, {"a": "1"}, lifespan_seconds=1),
            lambda: repo.put_single_use_object_if_absent(realm, key, lifespan_seconds=1),
            lambda: repo.get_single_use_object(realm, key),
            lambda: repo.take_single_use_object(realm, key),
            lambda: repo.replace_single_use_object(realm, key, {}),
            lambda: repo.contains_single_use_object(realm, key),
        ]
        for operation in operations:
            with contextlib.suppress(CallRecordedError):
                await operation()

        partition = lookup_partition(realm, "su", key)
        assert [(keys.single_use_object(partition, realm, key),)] * 6 == [c.keys for c in recorder.calls]
        assert_one_slot_per_call(recorder.calls)

    @SCRIPT_CALLS
    @given(realm=valid_ids, user_id=valid_ids)
    async def test_login_failure_operations(self, realm: str, user_id: str) -> None:
        """Record, get and remove send the user's record (and the realm index) of the user's partition."""
        clock = TestClock(start_ms=1_700_000_000_000)
        repo = LoginFailureRepository(_NO_ROUTER, DefaultPolicies(_NO_ROUTER), clock)
        recorder = Recorder()
        repo._call = recorder  # type: ignore[method-assign]  # the one I/O method, recorded
        await repo.record_login_failure(realm, user_id, "")
        with pytest.raises(CallRecordedError):
            await repo.get_login_failure(realm, user_id)
        await repo.remove_login_failure(realm, user_id)

        partition = user_partition(realm, user_id)
        record = keys.login_failure(partition, realm, user_id)
        index = keys.login_failure_index(partition, realm)
        assert [
            Call(partition, "record_login_failure", (record, index)),
            Call(partition, "get_login_failure", (record,)),
            Call(partition, "remove_login_failure", (record, index)),
        ] == recorder.calls
        assert_one_slot_per_call(recorder.calls)
