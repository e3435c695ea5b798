"""Event stream values: stream ids, entry decoding, filters and the opaque cursor."""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_store.errors import InvalidArgumentError
from session_store.events.stream import (
    MAX_CURSOR_SHARDS,
    EventFilter,
    EventType,
    Position,
    SessionEvent,
    StreamId,
    decode_cursor,
    decode_entry,
    encode_cursor,
    new_shard_identity,
    validate_shard_identity,
)
from session_store.v1 import events_pb2

MAX_PART = 2**64 - 1
identities = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=64)
stream_ids = st.builds(StreamId, st.integers(0, MAX_PART), st.integers(0, MAX_PART))
positions = st.dictionaries(
    identities, st.builds(Position, stream_ids, st.integers(0, MAX_PART)), max_size=32
)


def _raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


class TestCursorRoundTrip:
    """A cursor decodes to exactly the position it was encoded from."""

    @given(positions)
    def test_decode_inverts_encode(self, position: dict[str, Position]) -> None:
        """decode_cursor(encode_cursor(p)) == p for any position."""
        assert position == decode_cursor(encode_cursor(position))

    @given(positions)
    def test_cursor_is_url_safe(self, position: dict[str, Position]) -> None:
        """A cursor uses only unreserved URL characters (no padding, no '+' or '/')."""
        allowed = set(string.ascii_letters + string.digits + "_-")

        assert set() == set(encode_cursor(position)) - allowed

    @given(positions)
    def test_encoding_does_not_depend_on_insertion_order(self, position: dict[str, Position]) -> None:
        """The same position always gives the same cursor."""
        reversed_position = dict(reversed(list(position.items())))

        assert encode_cursor(position) == encode_cursor(reversed_position)

    def test_empty_position_round_trips(self) -> None:
        """A position that names no shard (all from the oldest) is a cursor too."""
        assert {} == decode_cursor(encode_cursor({}))


class TestMalformedCursor:
    """Anything that is not a cursor this service wrote is INVALID_ARGUMENT."""

    @pytest.mark.parametrize(
        "cursor",
        [
            "",
            "not a cursor",
            "a+b/c==",
            "A",
            "x" * 20_000,
            _raw("2;abc=1-0:1"),
            _raw("1;abc"),
            _raw("1;abc=1"),
            _raw("1;abc=1-0"),
            _raw("1;abc=1-0:"),
            _raw("1;abc=1-0:1;abc=2-0:2"),
            _raw("1;a b=1-0:1"),
            _raw(f"1;abc={MAX_PART + 1}-0:1"),
            _raw(f"1;abc=1-0:{MAX_PART + 1}"),
            _raw("1;abc=1-0:1;"),
            _raw(";".join(["1", *(f"s{i}=1-0:1" for i in range(MAX_CURSOR_SHARDS + 1))])),
            base64.urlsafe_b64encode(b"1;\xff=1-0:1").rstrip(b"=").decode(),
        ],
    )
    def test_rejected(self, cursor: str) -> None:
        """The cursor is refused with InvalidArgumentError."""
        with pytest.raises(InvalidArgumentError):
            decode_cursor(cursor)

    @given(st.text(max_size=100))
    def test_arbitrary_text_is_a_cursor_or_invalid_argument(self, text: str) -> None:
        """Decoding arbitrary text never fails with anything but InvalidArgumentError."""
        try:
            decoded = decode_cursor(text)
        except InvalidArgumentError:
            return
        assert decoded == decode_cursor(encode_cursor(decoded))


class TestStreamId:
    """Stream ids parse from Redis text and order as Redis orders them."""

    @given(stream_ids)
    def test_text_round_trip(self, sid: StreamId) -> None:
        """StreamId.parse(str(sid)) == sid."""
        assert sid == StreamId.parse(str(sid))

    @given(stream_ids, stream_ids)
    def test_order_is_ms_then_sequence(self, a: StreamId, b: StreamId) -> None:
        """Ids compare by milliseconds, then by sequence number."""
        assert (a < b) == ((a.ms, a.seq) < (b.ms, b.seq))

    @given(stream_ids)
    def test_previous_is_the_greatest_smaller_id(self, sid: StreamId) -> None:
        """previous() is below the id with nothing in between (ZERO_ID stays put)."""
        before = sid.previous()

        if sid == StreamId(0, 0):
            assert sid == before
        else:
            assert before < sid
            assert (before.seq + 1, before.ms) == (sid.seq, sid.ms) or (before.seq, sid.seq) == (MAX_PART, 0)

    @pytest.mark.parametrize("text", ["", "1", "1-", "-1", "1-2-3", "a-1", f"{MAX_PART + 1}-0", "1-0 "])
    def test_not_an_id(self, text: str) -> None:
        """Text that is not a complete id is a ValueError."""
        with pytest.raises(ValueError, match="stream id"):
            StreamId.parse(text)


class TestDecodeEntry:
    """A stream entry becomes a SessionEvent; absent fields are empty."""

    def test_full_entry(self) -> None:
        """Every field of an expired event is decoded."""
        fields = {
            "t": "expired",
            "r": "realm-a",
            "u": "user-1",
            "s": "sid-1",
            "o": "1",
            "c": '["app","console"]',
            "why": "idle",
            "at": "1700000000123",
            "dl": "1700000000000",
        }
        expected = SessionEvent(
            id="abcd/1700000000123-4",
            type=EventType.EXPIRED,
            realm="realm-a",
            user_id="user-1",
            session_id="sid-1",
            offline=True,
            client_ids=("app", "console"),
            reason="idle",
            at_ms=1700000000123,
            deadline_ms=1700000000000,
        )

        assert expected == decode_entry("abcd", "1700000000123-4", fields)

    def test_minimal_entry(self) -> None:
        """An entry with only a type decodes with empty values."""
        expected = SessionEvent(id="abcd/1-0", type=EventType.CREATED, realm="", user_id="", session_id="")

        assert expected == decode_entry("abcd", "1-0", {"t": "created"})

    def test_lua_empty_table_is_no_clients(self) -> None:
        """cjson's {} for an empty client list means no clients."""
        assert () == decode_entry("abcd", "1-0", {"t": "created", "c": "{}"}).client_ids

    @pytest.mark.parametrize(
        "fields",
        [
            {},
            {"t": "nope"},
            {"t": "created", "at": "soon"},
            {"t": "created", "c": "[1]"},
            {"t": "created", "c": "["},
        ],
    )
    def test_not_an_event(self, fields: dict[str, str]) -> None:
        """An unknown type, a bad number or a bad client list is a ValueError."""
        with pytest.raises(ValueError, match="entry 1-0"):
            decode_entry("abcd", "1-0", fields)

    def test_types_match_the_proto(self) -> None:
        """Each EventType has the number and name of the proto's EVENT_TYPE_ value."""
        expected = {name: number for name, number in events_pb2.EventType.items() if number}

        assert expected == {f"EVENT_TYPE_{t.name}": int(t) for t in EventType}


class TestEventFilter:
    """A filter keeps the events whose realm, type and user it names."""

    EVENT = SessionEvent(id="a/1-0", type=EventType.CREATED, realm="r1", user_id="u1", session_id="s")

    @pytest.mark.parametrize(
        ("event_filter", "expected"),
        [
            (EventFilter(), True),
            (EventFilter(realms=frozenset({"r1", "r2"})), True),
            (EventFilter(realms=frozenset({"r2"})), False),
            (EventFilter(types=frozenset({EventType.CREATED})), True),
            (EventFilter(types=frozenset({EventType.EXPIRED})), False),
            (EventFilter(realms=frozenset({"r1"}), user_id="u1"), True),
            (EventFilter(realms=frozenset({"r1"}), user_id="u2"), False),
        ],
    )
    def test_matches(self, event_filter: EventFilter, expected: bool) -> None:
        """Each field restricts independently; empty means any."""
        assert expected == event_filter.matches(self.EVENT)

    def test_user_needs_a_realm(self) -> None:
        """A user id alone is refused: it is unique only within a realm."""
        with pytest.raises(InvalidArgumentError, match="realm"):
            EventFilter(user_id="u1")


class TestShardIdentity:
    """New shard identities are valid and distinct."""

    def test_new_identity_is_valid(self) -> None:
        """A fresh identity is 16 hex digits and passes validation."""
        identity = new_shard_identity()

        assert (16, identity) == (len(identity), validate_shard_identity(identity))

    def test_identities_differ(self) -> None:
        """Two fresh identities differ."""
        assert new_shard_identity() != new_shard_identity()

    @pytest.mark.parametrize("value", ["", "a=b", "a;b", "x" * 65, "é"])
    def test_invalid_identity(self, value: str) -> None:
        """Values that could not sit in a cursor are refused."""
        with pytest.raises(ValueError, match="identity"):
            validate_shard_identity(value)
