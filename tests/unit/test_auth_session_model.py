"""Authentication sessions without I/O: the root key, tab ids, root ids and update validation."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from session_store.errors import InvalidArgumentError
from session_store.model.auth_session import (
    AuthenticationSessionUpdate,
    ExecutionStatus,
    mint_tab_id,
    validate_root_id,
)
from session_store.model.ids import PARTITION_COUNT, validate_id
from session_store.model.limits import MAX_AUTH_NOTES, MAX_CLIENT_SCOPES, MAX_EXECUTION_STATUSES
from session_store.storage import keys
from session_store.storage.auth_sessions import _change_json


def _is_valid_id(value: str) -> bool:
    try:
        validate_id(value, "id")
    except InvalidArgumentError:
        return False
    return True


valid_ids = st.one_of(
    st.text(min_size=1, max_size=40),
    st.text(st.sampled_from("{}:. -_ab"), min_size=1, max_size=12),
).filter(_is_valid_id)
names = st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=20)


class TestRootKey:
    @given(partition=st.integers(0, PARTITION_COUNT - 1), realm=valid_ids, root_id=valid_ids)
    def test_root_key_is_in_its_partitions_slot(self, partition: int, realm: str, root_id: str) -> None:
        """Whatever the ids hold, a root's key names its partition and hashes to that partition's slot."""
        key = keys.root_auth_session(partition, realm, root_id)

        assert partition == keys.partition_of(key)
        assert key_slot(keys.tag(partition).encode()) == key_slot(key.encode())

    @given(first=st.tuples(valid_ids, valid_ids), second=st.tuples(valid_ids, valid_ids))
    def test_roots_of_different_realms_or_ids_never_share_a_key(
        self, first: tuple[str, str], second: tuple[str, str]
    ) -> None:
        """(realm, root id) pairs map to keys one to one: realms cannot hold whitespace."""
        assert (first == second) == (keys.root_auth_session(0, *first) == keys.root_auth_session(0, *second))

    @given(partition=st.integers(0, PARTITION_COUNT - 1), realm=valid_ids, root_id=valid_ids)
    def test_root_key_is_no_other_kind_of_key(self, partition: int, realm: str, root_id: str) -> None:
        """A root's key never equals a session, pointer or index key of the same partition."""
        others = {
            keys.session(partition, root_id, offline=False),
            keys.session(partition, root_id, offline=True),
            keys.pointer(partition, root_id),
            keys.realm_index(partition, realm, offline=False),
            keys.user_index(partition, realm, root_id, offline=False),
        }
        assert keys.root_auth_session(partition, realm, root_id) not in others


class TestIds:
    def test_tab_id_is_base64url_of_8_bytes(self) -> None:
        """A tab id is 11 unpadded base64url characters that decode to the 8 random bytes."""
        tab_id = mint_tab_id(lambda n: bytes(range(250, 250 - n, -1)))

        assert 11 == len(tab_id)
        assert bytes(range(250, 242, -1)) == base64.urlsafe_b64decode(tab_id + "=")

    def test_tab_ids_are_random(self) -> None:
        """Minted tab ids differ."""
        assert 100 == len({mint_tab_id() for _ in range(100)})

    @pytest.mark.parametrize(("value", "expected"), [("abc", "abc"), ("abc.node-1", "abc"), ("a.b.c", "a")])
    def test_root_id_route_is_stripped(self, value: str, expected: str) -> None:
        """A root id loses everything from its first dot, as a session id does."""
        assert expected == validate_root_id(value)

    @pytest.mark.parametrize("value", ["", ".route", "a b", "x" * 256])
    def test_bad_root_id_is_rejected(self, value: str) -> None:
        """Empty (also once the route is gone), whitespace or oversized root ids are invalid."""
        with pytest.raises(InvalidArgumentError):
            validate_root_id(value)


class TestUpdateValidation:
    def test_names_are_deduplicated_in_order(self) -> None:
        """Repeated names collapse to their first occurrence."""
        update = AuthenticationSessionUpdate(add_required_actions=("B", "A", "B"), client_scopes=("s", "s"))

        assert ("B", "A") == update.add_required_actions
        assert ("s",) == update.client_scopes

    @pytest.mark.parametrize(
        "change",
        [
            {"set_execution_status": {"x": ExecutionStatus.UNSPECIFIED}},
            {"set_execution_status": {"x": 9}},
            {
                "set_execution_status": {
                    f"a{i}": ExecutionStatus.SUCCESS for i in range(MAX_EXECUTION_STATUSES + 1)
                }
            },
            {"client_scopes": tuple(f"s{i}" for i in range(MAX_CLIENT_SCOPES + 1))},
            {"remove_auth_notes": tuple(f"n{i}" for i in range(MAX_AUTH_NOTES + 1))},
            {"set_user_session_notes": {"": "v"}},
            {"authenticated_user_id": "has space"},
        ],
        ids=lambda change: next(iter(change)),
    )
    def test_bad_parts_are_rejected(self, change: dict[str, Any]) -> None:
        """Each malformed or oversized part makes the whole update invalid."""
        with pytest.raises(InvalidArgumentError):
            AuthenticationSessionUpdate(**change)

    @given(
        notes=st.dictionaries(names, st.text(max_size=30).filter(lambda v: "\x00" not in v), max_size=5),
        removed=st.lists(names, max_size=5),
        scopes=st.none() | st.lists(names, max_size=5),
        clear=st.booleans(),
        user=st.none() | st.just("") | valid_ids,
    )
    def test_change_json_carries_exactly_the_change(
        self,
        notes: dict[str, str],
        removed: list[str],
        scopes: list[str] | None,
        clear: bool,
        user: str | None,
    ) -> None:
        """The script's change JSON holds every non-empty part, keeps "" and [] where they mean "clear"."""
        update = AuthenticationSessionUpdate(
            set_auth_notes=notes,
            remove_auth_notes=tuple(removed),
            client_scopes=None if scopes is None else tuple(scopes),
            clear_auth_notes=clear,
            authenticated_user_id=user,
        )

        change = json.loads(_change_json(update, lambda _kind, values: dict(values)))

        expected: dict[str, Any] = {}
        if user is not None:
            expected["u"] = user
        if notes:
            expected["ans"] = notes
        if removed:
            expected["anr"] = list(dict.fromkeys(removed))
        if scopes is not None:
            expected["s"] = list(dict.fromkeys(scopes))
        if clear:
            expected["anc"] = True
        assert expected == change
