"""Session ids (model.ids): minting, home partitions, route stripping and id validation."""

from __future__ import annotations

import base64
import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_store.errors import InvalidArgumentError
from session_store.model.ids import (
    MINTED_ID_BYTES,
    MINTED_ID_LENGTH,
    PARTITION_COUNT,
    home_partition,
    lookup_partition,
    mint_session_id,
    normalize_session_id,
    strip_route,
    user_partition,
    validate_id,
)
from session_store.model.limits import MAX_ID_LENGTH

BASE64URL_ID = re.compile(r"[A-Za-z0-9_-]{24}")
partitions = st.integers(0, PARTITION_COUNT - 1)
# Ids as Keycloak may send them: no whitespace, no control characters, no route dot.
id_chars = st.characters(exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), exclude_characters=".")
valid_ids = st.text(id_chars, min_size=1, max_size=MAX_ID_LENGTH)
# Whitespace and control characters, ASCII and Unicode alike.
bad_chars = st.one_of(
    st.sampled_from(" \t\n\r\v\f\x00\x1b\x7f\x85\xa0\u2028\u3000"),
    st.characters(categories=("Cc", "Zs", "Zl", "Zp")),
)


def payload_bits(session_id: str) -> int:
    """The 132 bits of a minted id after its 12 partition bits."""
    raw = base64.urlsafe_b64decode(session_id)
    return int.from_bytes(raw, "big") & ((1 << (8 * MINTED_ID_BYTES - 12)) - 1)


class TestMintSessionId:
    @given(partition=partitions)
    def test_minted_id_is_24_base64url_characters(self, partition: int) -> None:
        """A minted id is 24 characters of unpadded base64url: no '.', no whitespace, no padding."""
        session_id = mint_session_id(partition)

        assert MINTED_ID_LENGTH == len(session_id) == 24
        assert BASE64URL_ID.fullmatch(session_id) is not None

    @given(partition=partitions)
    def test_minted_id_is_a_valid_session_id(self, partition: int) -> None:
        """A minted id passes session-id normalization unchanged."""
        session_id = mint_session_id(partition)

        assert session_id == normalize_session_id(session_id)

    @given(partition=partitions)
    def test_home_partition_of_minted_id_is_its_partition(self, partition: int) -> None:
        """A minted id names the partition it was minted for."""
        assert partition == home_partition(mint_session_id(partition))

    @given(partition=partitions, random=st.binary(min_size=18, max_size=18))
    def test_every_bit_but_the_partition_comes_from_the_random_source(
        self, partition: int, random: bytes
    ) -> None:
        """The 132 bits after the partition are exactly the random source's bits."""
        session_id = mint_session_id(partition, randbytes=lambda n: random[:n])

        expected = int.from_bytes(random, "big") & ((1 << 132) - 1)
        assert expected == payload_bits(session_id)

    def test_random_source_is_asked_for_18_bytes(self) -> None:
        """Minting draws 18 random bytes (144 bits, 132 of them kept)."""
        asked: list[int] = []

        def randbytes(n: int) -> bytes:
            asked.append(n)
            return bytes(n)

        mint_session_id(0, randbytes=randbytes)

        assert [18] == asked

    def test_mints_differ(self) -> None:
        """Two thousand ids minted for one partition are all different."""
        ids = {mint_session_id(7) for _ in range(2000)}

        assert 2000 == len(ids)

    def test_every_random_bit_varies(self) -> None:
        """Each of the 132 non-partition bits is 0 in some minted id and 1 in another."""
        ids = [mint_session_id(4095) for _ in range(300)]
        ones = 0
        zeros = 0
        for session_id in ids:
            bits = payload_bits(session_id)
            ones |= bits
            zeros |= ~bits & ((1 << 132) - 1)

        assert ((1 << 132) - 1, (1 << 132) - 1) == (ones, zeros)

    @pytest.mark.parametrize("partition", [-1, PARTITION_COUNT, 10**6])
    def test_partition_out_of_range_is_rejected(self, partition: int) -> None:
        """Minting for a partition outside 0..4095 raises ValueError."""
        with pytest.raises(ValueError, match="out of range"):
            mint_session_id(partition)


class TestHomePartition:
    @given(session_id=st.text())
    def test_home_partition_is_in_range_and_deterministic(self, session_id: str) -> None:
        """Any text has one home partition in 0..4095, the same on every call."""
        first = home_partition(session_id)

        assert 0 <= first < PARTITION_COUNT
        assert first == home_partition(session_id)

    @given(raw=st.binary(min_size=18, max_size=18))
    def test_home_partition_of_base64url_id_is_its_first_12_bits(self, raw: bytes) -> None:
        """Any 24-character base64url id lives where its first 12 bits say, minted here or not."""
        session_id = base64.urlsafe_b64encode(raw).decode()

        assert (raw[0] << 4 | raw[1] >> 4) == home_partition(session_id)

    def test_home_partition_of_other_ids_is_stable_across_runs(self) -> None:
        """A UUID's home partition is a fixed hash, so every node and every release agrees on it."""
        assert 3077 == home_partition("f3c1e0d2-9a7b-4c1e-8f00-123456789abc")

    def test_home_partitions_of_uuids_spread(self) -> None:
        """Caller-brought UUIDs spread over the partitions instead of piling onto a few."""
        homes = {home_partition(str(uuid.UUID(int=i * 7919 + 1, version=4))) for i in range(2000)}

        assert len(homes) > 1450


class TestUserPartition:
    @given(realm=valid_ids, user_id=valid_ids)
    def test_user_partition_is_in_range_and_deterministic(self, realm: str, user_id: str) -> None:
        """A user's partition is in 0..4095 and the same on every call."""
        first = user_partition(realm, user_id)

        assert 0 <= first < PARTITION_COUNT
        assert first == user_partition(realm, user_id)

    def test_user_partition_is_stable_across_runs(self) -> None:
        """A user's partition is a fixed hash (placement of stored data depends on it)."""
        assert (2040, 1756) == (user_partition("master", "alice"), user_partition("master", "bob"))

    def test_same_user_id_in_two_realms_may_differ(self) -> None:
        """The realm is part of the hash: one user id in many realms spreads over partitions."""
        homes = {user_partition(f"realm-{i}", "alice") for i in range(200)}

        assert len(homes) > 150

    @given(realm=valid_ids, kind=st.sampled_from(["bs", "bu"]), value=st.text())
    def test_lookup_partition_is_in_range_and_deterministic(self, realm: str, kind: str, value: str) -> None:
        """A lookup key's partition is in 0..4095 and the same on every call."""
        first = lookup_partition(realm, kind, value)

        assert 0 <= first < PARTITION_COUNT
        assert first == lookup_partition(realm, kind, value)


class TestStripRoute:
    @given(session_id=valid_ids, route=st.text())
    def test_route_suffix_is_stripped(self, session_id: str, route: str) -> None:
        """Everything from the first '.' goes, whatever the route holds."""
        assert session_id == strip_route(f"{session_id}.{route}")

    @given(session_id=valid_ids)
    def test_id_without_route_is_unchanged(self, session_id: str) -> None:
        """An id without a '.' is returned as is."""
        assert session_id == strip_route(session_id)

    def test_only_the_first_dot_counts(self) -> None:
        """An id with several dots keeps only what precedes the first one."""
        assert "abc" == strip_route("abc.node1.lb2")


class TestValidateId:
    @given(value=valid_ids)
    def test_valid_id_is_returned_unchanged(self, value: str) -> None:
        """An id of 1..255 characters without whitespace or control characters is accepted as is."""
        assert value == validate_id(value, "user_id")

    def test_uuid_and_255_characters_are_accepted(self) -> None:
        """Older UUID ids and ids of exactly MAX_ID_LENGTH characters are accepted."""
        values = ["f3c1e0d2-9a7b-4c1e-8f00-123456789abc", "a" * MAX_ID_LENGTH]

        assert values == [validate_id(v, "session_id") for v in values]

    def test_empty_id_is_rejected(self) -> None:
        """An empty id is an invalid argument naming the field."""
        with pytest.raises(InvalidArgumentError, match="user_id must not be empty"):
            validate_id("", "user_id")

    @given(length=st.integers(MAX_ID_LENGTH + 1, 4 * MAX_ID_LENGTH))
    def test_long_id_is_rejected(self, length: int) -> None:
        """An id longer than 255 characters is an invalid argument."""
        with pytest.raises(InvalidArgumentError, match="longer than 255"):
            validate_id("x" * length, "realm")

    @given(prefix=st.text(id_chars, max_size=20), bad=bad_chars, suffix=st.text(id_chars, max_size=20))
    def test_whitespace_or_control_character_is_rejected(self, prefix: str, bad: str, suffix: str) -> None:
        """An id containing whitespace or a control character anywhere is an invalid argument."""
        with pytest.raises(InvalidArgumentError, match="whitespace or control"):
            validate_id(prefix + bad + suffix, "client_id")


class TestNormalizeSessionId:
    @given(session_id=valid_ids, route=st.text(max_size=40))
    def test_route_is_stripped_and_the_rest_validated(self, session_id: str, route: str) -> None:
        """A valid id with a '.route' suffix normalizes to the bare id."""
        assert session_id == normalize_session_id(f"{session_id}.{route}")

    @pytest.mark.parametrize("value", ["", ".node1", ".", "..x"])
    def test_empty_or_only_a_route_is_rejected(self, value: str) -> None:
        """An id that is empty once its route is stripped is an invalid argument."""
        with pytest.raises(InvalidArgumentError, match="must not be empty"):
            normalize_session_id(value)

    @pytest.mark.parametrize("value", ["a b", " abc", "abc\t.node1", "ab\x00c", "a\u2028b.r"])
    def test_whitespace_or_control_character_is_rejected(self, value: str) -> None:
        """A session id holding whitespace or a control character before its route is rejected."""
        with pytest.raises(InvalidArgumentError, match="whitespace or control"):
            normalize_session_id(value)

    def test_long_id_is_rejected_even_with_a_route(self) -> None:
        """A session id longer than 255 characters before its route is rejected."""
        with pytest.raises(InvalidArgumentError, match="longer than 255"):
            normalize_session_id("a" * 256 + ".node1")

    def test_long_route_does_not_count(self) -> None:
        """Only the id before the route is held to the length limit."""
        assert "a" * 255 == normalize_session_id("a" * 255 + "." + "r" * 100)
